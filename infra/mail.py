"""Outgoing e-mail: composing the purchase confirmation and handing messages to a transport,
either a real SMTP server or, for a developer without one, a folder of `.eml` files."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
import re
import smtplib
import ssl
import tempfile
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import msgspec

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


class SmtpSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to submit mail. `ssl` is implicit TLS (usually port 465); `starttls`
    upgrades a plain connection (usually port 587); at most one of them can be set."""

    host: str
    sender: str
    port: int = 587
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.ssl and self.starttls:
            raise ValueError("SMTP: choose implicit TLS (ssl) or STARTTLS, not both")

    def __repr__(self) -> str:
        """Leaves the password out, so printing or logging the settings cannot leak it."""
        return (
            f"SmtpSettings(host={self.host!r}, port={self.port}, starttls={self.starttls},"
            f" ssl={self.ssl}, username={self.username!r}, sender={self.sender!r})"
        )


class MailTransport(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Deliver the message or raise; returning means the receiver accepted it."""
        ...


class MailDeliveryError(Exception):
    """A message was not accepted; the text is safe to log and store (no credentials)."""


class SmtpTransport:
    """Submits each message over its own SMTP connection, in a worker thread so the blocking
    stdlib client never stalls the event loop."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._send_blocking, message)

    def _send_blocking(self, message: EmailMessage) -> None:
        settings = self._settings
        try:
            with self._connect() as smtp:
                if settings.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if settings.username:
                    smtp.login(settings.username, settings.password or "")
                smtp.send_message(message, from_addr=_address_of(settings.sender))
        except (smtplib.SMTPException, OSError) as exc:
            # `from None`: the chained original could be rendered unscrubbed by a log call.
            raise MailDeliveryError(self._describe(exc)) from None

    def _connect(self) -> smtplib.SMTP:
        settings = self._settings
        if settings.ssl:
            return smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout,
                context=ssl.create_default_context(),
            )
        return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)

    def _describe(self, exc: Exception) -> str:
        """The error's type and text with the password and username struck out, whatever the
        server chose to echo back."""
        text = f"{type(exc).__name__}: {exc}"
        for secret in (self._settings.password, self._settings.username):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


class EmlDirectory:
    """Writes each message to `<timestamp>-<message id>.eml` in a folder, for development: any
    mail client opens them. Written to a temporary name and renamed, so a reader never sees a
    half-written file. A message sent again under its Message-ID (a mailer killed between the
    sending and the recording of it) replaces its file instead of making a second one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The files written before, by Message-ID: listed once, at start, then kept here.
        self._files: dict[str, Path] = {}
        for written in sorted(path.glob("*.eml")):
            self._files.setdefault(written.stem.partition("-")[2], written)

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._write, message)

    def _file_of(self, message: EmailMessage) -> Path:
        """The message's file: the one written for its Message-ID before, or a new one."""
        safe = _safe_id(message)
        return self._files.setdefault(safe, self.path / f"{_timestamp()}-{safe}.eml")

    def _write(self, message: EmailMessage) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self._file_of(message)
        fd, temporary = tempfile.mkstemp(dir=self.path, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(_as_sent(message))
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def build_confirmation(
    *,
    to: str,
    sender: str,
    subject: str,
    text: str,
    html: str | None,
    attachments: Sequence[tuple[str, bytes, str]],
) -> EmailMessage:
    """A message with a plain-text body (and an HTML alternative when given) plus attachments
    as (filename, bytes, mime type). Header values with line breaks are refused by the email
    policy, so no caller-supplied text can inject headers."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = _ascii_domain(to)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=_domain_of(sender))
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, data, mime_type in attachments:
        maintype, _, subtype = mime_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


def identify_as_sent_for(message: EmailMessage, row_id: int, purchase_token: str) -> None:
    """Gives the message a Message-ID of its outbox row: should it be sent again (the mailer
    was killed before it recorded the sending), mail clients and the `.eml` folder see the same
    message twice, not two messages. The token is hashed in, so ids of two databases differ
    without the token being shown."""
    _, _, domain = str(message["Message-ID"]).strip("<>").rpartition("@")
    digest = hashlib.sha256(f"{row_id}:{purchase_token}".encode()).hexdigest()[:20]
    message.replace_header("Message-ID", f"<linjerum.{row_id}.{digest}@{domain or 'localhost'}>")


def _ascii_domain(address: str) -> str:
    """`address` with its domain in the ASCII form DNS and every mail server take (IDNA,
    `blåbær.dk` -> `xn--blbr-roa8a.dk`): spelled in UTF-8, it could be sent only to a server
    that speaks SMTPUTF8, and in a file it was encoded into the header as no reader takes it."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address


def _as_sent(message: EmailMessage) -> bytes:
    """The message's bytes as a server gets them: a mailbox whose own name is not ASCII only
    as SMTPUTF8 sends it (encoded words are not allowed in an address)."""
    if str(message.get("To", "")).isascii():
        return message.as_bytes()
    return message.as_bytes(policy=message.policy.clone(utf8=True))


def _address_of(mailbox: str) -> str:
    """'Linjerum <tickets@example.com>' -> 'tickets@example.com' (the SMTP envelope wants the
    bare address)."""
    return email.utils.parseaddr(mailbox)[1] or mailbox


def _domain_of(mailbox: str) -> str:
    """The sender's domain for Message-IDs; avoids make_msgid's slow FQDN lookup."""
    _, _, domain = _address_of(mailbox).rpartition("@")
    return domain or "localhost"


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _safe_id(message: EmailMessage) -> str:
    raw = str(message.get("Message-ID") or uuid.uuid4().hex).strip("<>")
    return _UNSAFE_FILENAME.sub("_", raw)[:100]
