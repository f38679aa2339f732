"""The mail outbox against a real SMTP server (aiosmtpd on a free port) and the real database:
each queued message is delivered once, duplicates fold, outages are retried without loss, two
mailers never share a row, and no credential reaches a log line or the table."""

from __future__ import annotations

import asyncio
import contextlib
import email
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from aiosmtpd.smtp import AuthResult, LoginPassword

from infra.embedded import free_port
from infra.mail import EmlDirectory, MailTransport, SmtpSettings, SmtpTransport, build_confirmation
from infra.mail_outbox import enqueue, enqueue_confirmations
from infra.supervise import stop_tasks
from services.workers.mailer import Mailer
from tests.smtp_inbox import Inbox, smtp_server

SENDER = "Linjerum <tickets@linjerum.test>"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"
USERNAME = "smtp-user-7f3a"
PASSWORD = "hunter2-very-secret"
TINY_BACKOFF = (0.05,)


def _settings(port: int, **overrides: Any) -> SmtpSettings:
    options: dict[str, Any] = {"starttls": False, "timeout": 5.0} | overrides
    return SmtpSettings(host="127.0.0.1", port=port, sender=SENDER, **options)


async def compose(purchase_token: str, kind: str) -> EmailMessage:
    return build_confirmation(
        to="buyer@example.com",
        sender=SENDER,
        subject=f"{kind} {purchase_token}",
        text=f"Your access code for {purchase_token}.",
        html=f"<p>Your access code for {purchase_token}.</p>",
        attachments=[("tickets.pdf", PDF, "application/pdf")],
    )


def _mailer(pool: asyncpg.Pool, transport: MailTransport, **options: Any) -> Mailer:
    return Mailer(pool, transport, compose, **({"backoff": TINY_BACKOFF} | options))


def _token() -> str:
    return f"pt_{uuid.uuid4().hex}"


def _pdf_of(message: EmailMessage) -> bytes:
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "tickets.pdf"
    assert attachment.get_content_type() == "application/pdf"
    return attachment.get_content()


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def _retry_until(mailer: Mailer, condition: Callable[[], bool]) -> None:
    """Run passes, letting each tiny backoff run out, until the condition holds."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(TINY_BACKOFF[0] * 2)
            await mailer.work_due()


@contextlib.asynccontextmanager
async def running(*mailers: Mailer):
    tasks = [asyncio.create_task(mailer.run()) for mailer in mailers]
    try:
        yield
    finally:
        await stop_tasks(tasks)


@pytest.fixture(autouse=True)
async def empty_outbox(pool: asyncpg.Pool) -> None:
    """Each test sees only its own rows (the database is shared by the whole run)."""
    await pool.execute("DELETE FROM mail_outbox")


async def test_a_queued_confirmation_is_delivered_once_with_its_pdf(pool: asyncpg.Pool) -> None:
    inbox, port, token = Inbox(), free_port(), _token()
    with smtp_server(inbox, port):
        mailer = _mailer(pool, SmtpTransport(_settings(port)))
        assert await enqueue(pool, token, "confirmation")
        assert await mailer.work_due() == 1
        assert await mailer.work_due() == 0

    (message,) = inbox.messages
    assert message["Subject"] == f"confirmation {token}"
    assert message["To"] == "buyer@example.com"
    assert message["Message-ID"] and message["Date"]
    assert message.get_body(("html",)) is not None
    assert _pdf_of(message) == PDF
    sent = await pool.fetchval("SELECT sent_at FROM mail_outbox WHERE purchase_token = $1", token)
    assert sent is not None


class _Blip:
    """The pool as a mailer sees it through a PostgreSQL restart just after it sent a message:
    the first `fails` statements that record a row's outcome find the server gone."""

    def __init__(self, pool: asyncpg.Pool, fails: int) -> None:
        self._pool, self.fails = pool, fails

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    async def execute(self, query: str, *args: Any) -> str:
        if "sent_at = now()" in query and self.fails:
            self.fails -= 1
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in mid-operation")
        return await self._pool.execute(query, *args)


async def test_a_short_outage_after_sending_is_waited_out_not_sent_twice(
    pool: asyncpg.Pool,
) -> None:
    """Recording that a message went out meets a database restarting: the record is tried
    again moments later, instead of leaving the row to its lease and mailing it once more."""
    inbox, port, token = Inbox(), free_port(), _token()
    blip = _Blip(pool, fails=2)
    with smtp_server(inbox, port):
        mailer = Mailer(blip, SmtpTransport(_settings(port)), compose, lease=0.2)
        assert await enqueue(pool, token, "confirmation")
        assert await mailer.work_due() == 1
        await asyncio.sleep(0.3)  # past the lease: a row left unrecorded would be due again
        assert await mailer.work_due() == 0
    assert blip.fails == 0 and len(inbox.messages) == 1
    sent = await pool.fetchval("SELECT sent_at FROM mail_outbox WHERE purchase_token = $1", token)
    assert sent is not None


async def test_the_confirmation_is_queued_once_ever(pool: asyncpg.Pool) -> None:
    inbox, port, token = Inbox(), free_port(), _token()
    with smtp_server(inbox, port):
        mailer = _mailer(pool, SmtpTransport(_settings(port)))
        assert await enqueue(pool, token, "confirmation")
        assert not await enqueue(pool, token, "confirmation")
        await mailer.work_due()
        assert not await enqueue(pool, token, "confirmation")
        assert await mailer.work_due() == 0
    assert inbox.subjects() == [f"confirmation {token}"]


async def test_resends_within_one_minute_fold_into_one(pool: asyncpg.Pool) -> None:
    inbox, port, token = Inbox(), free_port(), _token()
    at = datetime(2030, 5, 1, 12, 0, 5, tzinfo=UTC)
    with smtp_server(inbox, port):
        mailer = _mailer(pool, SmtpTransport(_settings(port)))
        await enqueue(pool, token, "confirmation")
        await mailer.work_due()
        assert await enqueue(pool, token, "resend", now=at)
        assert not await enqueue(pool, token, "resend", now=at + timedelta(seconds=40))
        await mailer.work_due()
        assert inbox.subjects() == [f"confirmation {token}", f"resend {token}"]

        assert await enqueue(pool, token, "resend", now=at + timedelta(seconds=60))
        await mailer.work_due()
    assert inbox.subjects().count(f"resend {token}") == 2


async def test_a_refusing_server_is_retried_without_loss(pool: asyncpg.Pool) -> None:
    inbox, port, token = Inbox(refuse_first=2), free_port(), _token()
    with smtp_server(inbox, port):
        mailer = _mailer(pool, SmtpTransport(_settings(port)))
        await enqueue(pool, token, "confirmation")
        await mailer.work_due()
        row = await pool.fetchrow("SELECT * FROM mail_outbox WHERE purchase_token = $1", token)
        assert row["sent_at"] is None and row["attempts"] == 1
        assert "451" in row["last_error"]

        await _retry_until(mailer, lambda: bool(inbox.messages))
        await asyncio.sleep(TINY_BACKOFF[0] * 2)
        assert await mailer.work_due() == 0
    assert inbox.refused == 2
    assert inbox.subjects() == [f"confirmation {token}"]
    assert _pdf_of(inbox.messages[0]) == PDF


async def test_mail_queued_while_the_server_is_down_goes_out_when_it_returns(
    pool: asyncpg.Pool,
) -> None:
    inbox, port, token = Inbox(), free_port(), _token()
    mailer = _mailer(pool, SmtpTransport(_settings(port)))
    await enqueue(pool, token, "confirmation")
    await mailer.work_due()
    error = await pool.fetchval(
        "SELECT last_error FROM mail_outbox WHERE purchase_token = $1", token
    )
    assert "MailDeliveryError" in error

    with smtp_server(inbox, port):
        await _retry_until(mailer, lambda: bool(inbox.messages))
    assert inbox.subjects() == [f"confirmation {token}"]


async def test_a_message_is_given_up_after_max_attempts(pool: asyncpg.Pool) -> None:
    inbox, port, token = Inbox(refuse_first=100), free_port(), _token()
    with smtp_server(inbox, port):
        mailer = _mailer(pool, SmtpTransport(_settings(port)), max_attempts=2)
        await enqueue(pool, token, "confirmation")
        await _retry_until(mailer, lambda: inbox.refused == 2)
        await asyncio.sleep(TINY_BACKOFF[0] * 2)
        assert await mailer.work_due() == 0
    row = await pool.fetchrow("SELECT * FROM mail_outbox WHERE purchase_token = $1", token)
    assert row["attempts"] == 2 and row["sent_at"] is None and row["next_attempt_at"] is None


async def test_a_message_compose_declines_is_dropped(pool: asyncpg.Pool, tmp_path: Path) -> None:
    async def nothing(purchase_token: str, kind: str) -> None:
        return None

    token = _token()
    mailer = Mailer(pool, EmlDirectory(tmp_path), nothing, backoff=TINY_BACKOFF)
    await enqueue(pool, token, "confirmation")
    assert await mailer.work_due() == 1
    await asyncio.sleep(TINY_BACKOFF[0] * 2)
    assert await mailer.work_due() == 0
    assert not list(tmp_path.iterdir())


async def test_two_mailers_never_send_the_same_row(pool: asyncpg.Pool) -> None:
    inbox, port = Inbox(delay=0.01), free_port()
    tokens = [_token() for _ in range(40)]
    with smtp_server(inbox, port):
        transport = SmtpTransport(_settings(port))
        mailers = [_mailer(pool, transport, poll_interval=0.05, batch_size=4) for _ in range(2)]
        async with running(*mailers):
            for token in tokens:
                await enqueue(pool, token, "confirmation")
            await _until(lambda: len(inbox.messages) >= len(tokens), timeout=30)
            await asyncio.sleep(0.3)
    counts = Counter(inbox.subjects())
    assert counts == Counter(f"confirmation {token}" for token in tokens)


async def test_a_batch_of_paid_purchases_queues_each_confirmation_once_and_wakes_the_mailer(
    pool: asyncpg.Pool,
) -> None:
    """The confirmations read model queues a batch's e-mails in one statement: each purchase's
    once (one queued already is folded), and a running mailer wakes at the commit."""
    inbox, port = Inbox(), free_port()
    tokens = [_token() for _ in range(3)]
    with smtp_server(inbox, port):
        mailer = _mailer(pool, SmtpTransport(_settings(port)), poll_interval=60)
        assert await enqueue(pool, tokens[0], "confirmation")
        async with running(mailer):
            await _until(lambda: bool(inbox.messages), timeout=5)
            async with pool.acquire() as conn, conn.transaction():
                assert await enqueue_confirmations(conn, tokens) == 2
            await _until(lambda: len(inbox.messages) == 3, timeout=5)
            async with pool.acquire() as conn, conn.transaction():
                assert await enqueue_confirmations(conn, tokens) == 0
    assert sorted(inbox.subjects()) == sorted(f"confirmation {t}" for t in tokens)


async def test_a_running_mailer_wakes_on_enqueue(pool: asyncpg.Pool) -> None:
    """With a 60 s poll, only the LISTEN/NOTIFY wake-up can deliver within the test's wait."""
    inbox, port, token = Inbox(), free_port(), _token()
    with smtp_server(inbox, port):
        mailer = _mailer(pool, SmtpTransport(_settings(port)), poll_interval=60)
        async with running(mailer):
            await asyncio.sleep(0.5)
            async with pool.acquire() as conn, conn.transaction():
                await enqueue(conn, token, "confirmation")
            await _until(lambda: bool(inbox.messages), timeout=5)
    assert inbox.subjects() == [f"confirmation {token}"]


async def test_eml_directory_writes_a_parseable_message(pool: asyncpg.Pool, tmp_path: Path) -> None:
    folder, token = tmp_path / "mail", _token()
    mailer = _mailer(pool, EmlDirectory(folder))
    await enqueue(pool, token, "confirmation")
    await mailer.work_due()

    (written,) = folder.iterdir()
    assert written.suffix == ".eml"
    message = email.message_from_bytes(written.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == f"confirmation {token}"
    assert _pdf_of(message) == PDF


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    valid = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=valid, handled=False)


async def test_credentials_never_reach_logs_or_the_table(pool: asyncpg.Pool) -> None:
    inbox, port, refused, accepted = Inbox(), free_port(), _token(), _token()
    auth = {"authenticator": _authenticate, "auth_require_tls": False}
    wrong = _settings(port, username=USERNAME, password=f"{PASSWORD}-wrong")
    assert wrong.password and wrong.password not in repr(wrong)
    with smtp_server(inbox, port, **auth), structlog.testing.capture_logs() as logs:
        await enqueue(pool, refused, "confirmation")
        await _mailer(pool, SmtpTransport(wrong), backoff=(60,)).work_due()
        right = _settings(port, username=USERNAME, password=PASSWORD)
        await enqueue(pool, accepted, "confirmation")
        await _mailer(pool, SmtpTransport(right)).work_due()

    assert inbox.subjects() == [f"confirmation {accepted}"]
    assert [entry["event"] for entry in logs] == ["mail_failed", "mail_sent"]
    errors = await pool.fetch("SELECT last_error FROM mail_outbox WHERE last_error IS NOT NULL")
    assert [row["last_error"] for row in errors] and "535" in errors[0]["last_error"]
    for text in [repr(logs), *(row["last_error"] for row in errors)]:
        assert PASSWORD not in text and USERNAME not in text


async def test_a_failure_whose_text_cannot_be_stored_is_still_rescheduled(
    pool: asyncpg.Pool,
) -> None:
    async def failing(purchase_token: str, kind: str) -> EmailMessage:
        raise ValueError("no address for buyer 'Ann\x00e'")

    token = _token()
    mailer = Mailer(pool, EmlDirectory(Path("/nonexistent")), failing, backoff=(60,))
    await enqueue(pool, token, "confirmation")
    assert await mailer.work_due() == 1
    row = await pool.fetchrow("SELECT * FROM mail_outbox WHERE purchase_token = $1", token)
    assert row["last_error"] == "ValueError: no address for buyer 'Ann\ufffde'"
    assert row["next_attempt_at"] > datetime.now(UTC) + timedelta(seconds=30)


async def _queue_steadily(pool: asyncpg.Pool, count: int, interval: float) -> list[str]:
    """`count` confirmations, one every `interval` seconds: a sale's paid purchases."""
    tokens = []
    for _ in range(count):
        tokens.append(_token())
        assert await enqueue(pool, tokens[-1], "confirmation")
        await asyncio.sleep(interval)
    return tokens


async def _through_a_rush(
    pool: asyncpg.Pool, count: int, longest_deferral: float
) -> tuple[list[str], int, Inbox]:
    """`count` e-mails queued at 50 a second to a running mailer for which 5 a second make a
    rush (it looks every 50 ms): the tokens, how many were sent while they were being queued,
    and the inbox once every one has arrived."""
    inbox, port = Inbox(), free_port()
    mailer = _mailer(
        pool,
        SmtpTransport(_settings(port)),
        poll_interval=0.05,
        rush_per_second=5,
        longest_deferral=longest_deferral,
        rush_look=0.05,
    )
    with smtp_server(inbox, port):
        async with running(mailer):
            tokens = await _queue_steadily(pool, count, 0.02)
            sent_in_rush = len(inbox.messages)
            await _until(lambda: len(inbox.messages) >= len(tokens))
    return tokens, sent_in_rush, inbox


async def test_mail_waits_while_a_rush_lasts_and_all_of_it_goes_out_after(
    pool: asyncpg.Pool,
) -> None:
    """Once the mailer has seen the rush (a look or two) it sends nothing until the rush is
    over, then every e-mail, once."""
    tokens, sent_in_rush, inbox = await _through_a_rush(pool, 40, 30.0)

    assert sent_in_rush <= 20, sent_in_rush
    assert Counter(s.removeprefix("confirmation ") for s in inbox.subjects()) == Counter(tokens)


async def test_a_rush_holds_an_e_mail_back_no_longer_than_the_longest_deferral(
    pool: asyncpg.Pool,
) -> None:
    """A rush that outlasts the longest deferral (0.4 s): e-mails go out while it lasts, none
    of them kept much longer than that."""
    tokens, sent_in_rush, inbox = await _through_a_rush(pool, 75, 0.4)

    assert sent_in_rush >= 25, sent_in_rush
    waited = await pool.fetchval(
        "SELECT max(extract(epoch FROM sent_at - created_at)) FROM mail_outbox"
        " WHERE purchase_token = ANY($1)",  # this test's: the one before held its own for long
        tokens,
    )
    assert waited < 1.5, waited
    assert sorted(s.removeprefix("confirmation ") for s in inbox.subjects()) == sorted(tokens)


async def test_a_longest_deferral_of_zero_sends_through_a_rush(pool: asyncpg.Pool) -> None:
    tokens, sent_in_rush, _ = await _through_a_rush(pool, 40, 0.0)

    assert sent_in_rush >= 30, (sent_in_rush, len(tokens))


class _Stalled:
    """An SMTP server that takes the message and never answers (or a worker frozen mid-send)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def send(self, message: EmailMessage) -> None:
        self.started.set()
        await asyncio.Event().wait()


async def test_a_row_is_kept_while_its_send_lasts_and_freed_when_its_worker_dies(
    pool: asyncpg.Pool,
) -> None:
    """The lease is renewed while the e-mail is being sent, however long: no second mailer
    sends it meanwhile. Once the first mailer is gone (killed mid-send), the row is another's
    within a lease, not after the five minutes a claim used to hold it."""
    inbox, port, token = Inbox(), free_port(), _token()
    stalled = _Stalled()
    first = _mailer(pool, stalled, lease=0.6)
    assert await enqueue(pool, token, "confirmation")
    sending = asyncio.create_task(first.work_due())
    await asyncio.wait_for(stalled.started.wait(), 5)
    with smtp_server(inbox, port):
        second = _mailer(pool, SmtpTransport(_settings(port)), lease=0.6)
        for _ in range(4):  # two leases and more: renewed all along
            await asyncio.sleep(0.4)
            assert await second.work_due() == 0
        await stop_tasks([sending])  # the first mailer dies mid-send
        await asyncio.sleep(0.8)
        assert await second.work_due() == 1
    assert inbox.subjects() == [f"confirmation {token}"]


async def test_a_buyer_at_an_international_domain_is_mailed_by_its_ascii_name(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """`kunde@blåbær.dk` went out only to a server that speaks SMTPUTF8 (others refused every
    try, and the confirmation was lost), and into a file as an encoded word inside the
    address; its domain is sent as DNS names it (IDNA). A mailbox whose own name is not ASCII
    is written as SMTPUTF8 sends it."""

    def to(address: str) -> Callable[[str, str], Any]:
        async def compose_to(purchase_token: str, kind: str) -> EmailMessage:
            return build_confirmation(
                to=address, sender=SENDER, subject=kind, text="-", html=None, attachments=[]
            )

        return compose_to

    inbox, port, token = Inbox(), free_port(), _token()
    with smtp_server(inbox, port):  # aiosmtpd offers no SMTPUTF8
        mailer = Mailer(
            pool, SmtpTransport(_settings(port)), to("kunde@blåbær.dk"), backoff=TINY_BACKOFF
        )
        assert await enqueue(pool, token, "confirmation")
        assert await mailer.work_due() == 1
    (message,) = inbox.messages
    assert message["To"] == "kunde@xn--blbr-roah.dk"

    folder, other = tmp_path / "mail", _token()
    writer = Mailer(pool, EmlDirectory(folder), to("blåbær@example.dk"), backoff=TINY_BACKOFF)
    assert await enqueue(pool, other, "confirmation")
    await writer.work_due()
    (written,) = folder.iterdir()
    assert b"To: bl\xc3\xa5b\xc3\xa6r@example.dk" in written.read_bytes()


async def test_a_mailer_stopped_mid_send_records_what_it_sent(pool: asyncpg.Pool) -> None:
    """Stopped while the server took the message, the mailer left it unrecorded (the send went
    on in its thread), and the next mailer sent it again once the lease ran out."""
    inbox, port, token = Inbox(delay=0.5), free_port(), _token()
    with smtp_server(inbox, port):
        mailer = _mailer(pool, SmtpTransport(_settings(port)))
        assert await enqueue(pool, token, "confirmation")
        sending = asyncio.create_task(mailer.work_due())
        await asyncio.sleep(0.2)  # the message is with the server
        await stop_tasks([sending])
    sent = await pool.fetchval("SELECT sent_at FROM mail_outbox WHERE purchase_token = $1", token)
    assert sent is not None and len(inbox.messages) == 1


class _KilledAfterSending(EmlDirectory):
    """A mailer process killed (kill -9) once the message is written, before it records it."""

    async def send(self, message: EmailMessage) -> None:
        await super().send(message)
        raise asyncio.CancelledError


async def test_a_message_sent_again_after_a_kill_is_the_same_message(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Killed between writing a message and recording it, the mailer left the row due again
    and the next process sent it under a new Message-ID: two e-mails for the buyer, two files
    in the folder. Now the row's Message-ID is the same every time, and its file is replaced."""
    folder, token = tmp_path / "mail", _token()
    assert await enqueue(pool, token, "confirmation")
    killed = _mailer(pool, _KilledAfterSending(folder), lease=0.3)
    with pytest.raises(asyncio.CancelledError):
        await killed.work_due()
    (first,) = folder.iterdir()
    sent_first = email.message_from_bytes(first.read_bytes(), policy=policy.default)
    await asyncio.sleep(0.4)  # the dead mailer's lease runs out
    restarted = _mailer(pool, EmlDirectory(folder), lease=0.3)
    assert await restarted.work_due() == 1
    (again,) = folder.iterdir()
    sent_again = email.message_from_bytes(again.read_bytes(), policy=policy.default)
    assert sent_again["Message-ID"] == sent_first["Message-ID"]
    assert sent_again["Subject"] == f"confirmation {token}"
