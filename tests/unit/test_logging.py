"""Log lines are JSON and never carry a raw API key, Stripe secret or password, wherever in the
line it turns up: a field of its own, a URL, an error message, a traceback."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from infra.logging import configure_logging

API_KEY = "tk_live_" + "Ab3_-x" * 7
STRIPE_SECRET = "sk_test_51Hk" + "z" * 20


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    before = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    written = io.BytesIO()
    # Kept referenced: a collected wrapper would close the buffer under the logger.
    stderr = io.TextIOWrapper(written, write_through=True)
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("info")
    yield written
    structlog.configure(**before)
    root.handlers, root.level = handlers, level
    stderr.detach()


def test_secrets_are_masked_wherever_they_appear(lines: io.BytesIO) -> None:
    log = structlog.get_logger("test")
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        log.info("request", path=f"/x?key={API_KEY}", password="hunter2", token=API_KEY)
        log.warning("stripe_failed", error=f"Invalid API Key provided: {STRIPE_SECRET}")
        log.info("nested", headers={"Authorization": f"Bearer {API_KEY}"})
        try:
            raise ValueError(f"bad key {API_KEY}")
        except ValueError:
            log.exception("failed")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    raw = lines.getvalue()
    assert API_KEY.encode() not in raw and STRIPE_SECRET.encode() not in raw
    assert b"hunter2" not in raw
    records = [json.loads(line) for line in raw.splitlines()]
    assert len(records) == 4 and all(r["request_id"] == "req-1" for r in records)
    assert records[0]["path"] == "/x?key=tk_live_[redacted]"
    assert records[0]["password"] == records[0]["token"] == "[redacted]"
    assert records[1]["error"].endswith("sk_test_[redacted]")
    assert "tk_live_[redacted]" in records[3]["exception"]


def test_library_lines_are_json_too(lines: io.BytesIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-2")
    try:
        logging.getLogger("asyncpg").warning("connection lost: %s", f"key {API_KEY}")
        logging.getLogger("stripe").info("Request to Stripe api")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert records == [
        {
            "event": "connection lost: key tk_live_[redacted]",
            "request_id": "req-2",
            "level": "warning",
            "timestamp": records[0]["timestamp"],
            "logger": "asyncpg",
        }
    ]


class _Gone(io.RawIOBase):
    """A stderr whose reader is gone, as a child's pipe to a killed run."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_line_nobody_can_read_is_dropped_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker orphaned by a killed run stopped on its own log line after recording an e-mail
    as sent: the line raised a broken pipe into the mailer."""
    before = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stderr = io.TextIOWrapper(io.BufferedWriter(_Gone()), write_through=True)
    monkeypatch.setattr(sys, "stderr", stderr)
    try:
        configure_logging("info")
        structlog.get_logger("t").info("mail_sent", outbox_id=1)
    finally:
        structlog.configure(**before)
        root.handlers, root.level = handlers, level
