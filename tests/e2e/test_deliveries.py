"""What a paid purchase delivers, over HTTP: PDFs whose text and QR a machine can read, the
10-per-minute PDF bucket, and the confirmation e-mail (sent once, sent again on request)
through a real SMTP server."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from pypdf import PdfReader

from infra.embedded import free_port
from infra.mail import SmtpSettings, SmtpTransport
from services.api.context import DOCUMENTS
from services.workers.mailer import Mailer
from tests.e2e.conftest import (
    BUYER,
    bearer,
    order,
    post,
    rebuild_read_models,
    small_attraction,
    small_event,
)
from tests.smtp_inbox import Inbox, smtp_server


async def _paid(api, pool: asyncpg.Pool, seats: int = 2) -> tuple[str, dict]:
    token, _, type_id = await small_event(pool, seats + 1, price=0, stripe_account=None)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id, seats), 201)
    return token, created["purchase"]


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _decoded_qr(pdf: bytes, tmp_path: Path) -> str:
    source = tmp_path / "ticket.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "150", "-png", "-f", "1", "-l", "1", str(source), str(tmp_path / "p")],
        check=True,
    )
    image = next(tmp_path.glob("p*.png"))
    found = subprocess.run(
        ["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


needs_tools = pytest.mark.skipif(
    not (shutil.which("zbarimg") and shutil.which("pdftoppm")),
    reason="zbar-tools and poppler-utils are not installed (CI installs them)",
)


@needs_tools
async def test_event_ticket_pdf_reads_back(api, pool: asyncpg.Pool, tmp_path: Path) -> None:
    token, purchase = await _paid(api, pool)
    response = await api.get(
        f"/api/v1/purchases/{purchase['token']}/tickets/pdf", headers=bearer(token)
    )
    assert response.status == 200 and response.content_type == "application/pdf"
    pdf = await response.read()
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 2
    text = _text(pdf)
    for ticket in purchase["tickets"]:
        assert ticket["ticket_code"] in text
    assert ("Show" in text and "Række A" in text) or "A" in text
    single = await api.get(
        f"/api/v1/purchases/{purchase['token']}/tickets/{purchase['tickets'][1]['id']}/pdf",
        headers=bearer(token),
    )
    one = await single.read()
    assert len(PdfReader(io.BytesIO(one)).pages) == 1
    assert purchase["tickets"][1]["ticket_code"] in _text(one)
    assert _decoded_qr(one, tmp_path) == purchase["tickets"][1]["ticket_code"]


@needs_tools
async def test_attraction_ticket_pdf_reads_back(api, pool: asyncpg.Pool, tmp_path: Path) -> None:
    token, type_id = await small_attraction(
        pool, price=0, daily_max=20, name="Forårsudstilling", stripe_account=None
    )
    day = (datetime.now(UTC) + timedelta(days=1)).date()
    body = {
        "attraction_slug": "museum",
        "quantities": {str(type_id): 1},
        "buyer": BUYER,
        "visit_date": day.isoformat(),
    }
    _, created = await post(api, token, "/api/v1/purchases", body, 201)
    purchase = created["purchase"]
    response = await api.get(
        f"/api/v1/purchases/{purchase['token']}/tickets/pdf", headers=bearer(token)
    )
    pdf = await response.read()
    text = _text(pdf)
    assert "Forårsudstilling" in text and purchase["tickets"][0]["ticket_code"] in text
    assert "General admission" in text
    assert _decoded_qr(pdf, tmp_path) == purchase["tickets"][0]["ticket_code"]


async def test_pdf_rules(serve, pool: asyncpg.Pool) -> None:
    gateway = await serve()
    token, _, type_id = await small_event(pool, 3)
    _, unpaid = await post(gateway, token, "/api/v1/purchases", order(type_id), 201)
    response = await gateway.get(
        f"/api/v1/purchases/{unpaid['purchase']['token']}/tickets/pdf", headers=bearer(token)
    )
    assert response.status == 409 and (await response.json())["error"] == "not_yet_paid"
    paid_token, purchase = await _paid(gateway, pool, seats=1)
    missing = await gateway.get(
        f"/api/v1/purchases/{purchase['token']}/tickets/1/pdf", headers=bearer(paid_token)
    )
    assert missing.status == 404
    statuses = []
    for _ in range(10):
        r = await gateway.get(
            f"/api/v1/purchases/{purchase['token']}/tickets/pdf", headers=bearer(paid_token)
        )
        statuses.append(r.status)
    assert statuses[-1] == 429 and statuses.count(429) == 1, statuses  # the 404 counted too
    assert 0 < int(r.headers["Retry-After"]) <= 60
    other = await gateway.get(f"/api/v1/purchases/{purchase['token']}", headers=bearer(paid_token))
    assert other.status == 200


async def test_confirmation_is_sent_once_and_resent_on_request(api, pool: asyncpg.Pool) -> None:
    token, purchase = await _paid(api, pool)
    inbox = Inbox()
    port = free_port()
    transport = SmtpTransport(
        SmtpSettings(
            host="127.0.0.1", port=port, sender="tickets@example.com", starttls=False, timeout=5.0
        )
    )
    mailer = Mailer(pool, transport, api.app[DOCUMENTS].confirmation, backoff=(0.05,))
    with smtp_server(inbox, port):
        await rebuild_read_models(pool)
        await rebuild_read_models(pool)
        while await mailer.work_due():
            pass
        mine = [
            m
            for m in inbox.messages
            if purchase["access_code"] in m.get_body(("plain",)).get_content()
        ]
        assert len(mine) == 1
        message = mine[0]
        assert message["To"] == BUYER["email"]
        text = message.get_body(("plain",)).get_content()
        assert text.count("https://shop.example.com/attendee/tok_") == 2
        (attachment,) = list(message.iter_attachments())
        pdf = attachment.get_content()
        assert attachment.get_content_type() == "application/pdf"
        assert purchase["tickets"][0]["ticket_code"] in _text(pdf)

        for _ in range(3):
            _, receipt = await post(
                api, token, f"/api/v1/purchases/{purchase['token']}/resend-email", {}, 202
            )
            assert receipt == {"enqueued": True, "token": purchase["token"]}
        while await mailer.work_due():
            pass
        mine = [
            m
            for m in inbox.messages
            if purchase["access_code"] in m.get_body(("plain",)).get_content()
        ]
        assert len(mine) == 2


async def test_resend_before_payment_is_409(api, pool: asyncpg.Pool) -> None:
    token, _, type_id = await small_event(pool, 2)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    _, body = await post(
        api, token, f"/api/v1/purchases/{created['purchase']['token']}/resend-email", {}, 409
    )
    assert body["error"] == "not_yet_paid"
