"""structlog set-up: one JSON object per line, with the request id bound through contextvars,
and secrets masked before anything is written."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from typing import Any

import msgspec
import structlog

_SECRET = re.compile(rb"(tk_live_|sk_live_|sk_test_|whsec_)[A-Za-z0-9_\-]+")
_SECRET_KEYS = {"token", "api_key", "authorization", "secret", "password", "card"}
_encoder = msgspec.json.Encoder(enc_hook=str)


def _redact_keys(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Fields whose name says they hold a secret are dropped whatever their value."""
    for key in event_dict.keys() & _SECRET_KEYS:
        event_dict[key] = "[redacted]"
    return event_dict


def _json(event_dict: dict[str, Any], **_: Any) -> bytes:
    """The line as JSON, with anything shaped like an API key or Stripe secret masked wherever it
    appears (a URL, an error message). One pass over the finished line: one log line per request
    is on the hot path. The secrets' characters need no JSON escaping, so none is missed."""
    return _SECRET.sub(rb"\1[redacted]", _encoder.encode(event_dict))


def _json_text(_: Any, __: str, event_dict: dict[str, Any]) -> str:
    return _json(event_dict).decode()


class _Sink:
    """stderr for log lines. A line that cannot be written (the run that read this process's
    stderr was killed: a broken pipe) is dropped: raised, it failed what it was telling of (a
    mailer, after recording an e-mail as sent, stopped on its own `mail_sent` line)."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._file.write(data)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._file.flush()


# Libraries whose info lines repeat, per request, what the service logs itself (the Stripe SDK
# logs every API call twice): they speak from warning up.
_CHATTY = ("stripe",)


def configure_logging(level: str = "info") -> None:
    """structlog for the service's own lines; the standard library's (asyncpg, aiohttp, the
    Stripe SDK) are rendered the same way, as JSON with the request id and masked secrets."""
    log_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_keys,
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _json_text,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(log_level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(log_level, logging.WARNING))
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(log_level),
        logger_factory=structlog.BytesLoggerFactory(file=_Sink(sys.stderr.buffer)),
        cache_logger_on_first_use=True,
    )
