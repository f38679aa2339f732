"""structlog set-up: one JSON object per line, with the request id bound through contextvars,
and secrets scrubbed before anything is written."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import msgspec
import structlog

_SECRET = re.compile(r"(tk_live_|sk_live_|sk_test_|whsec_)[A-Za-z0-9_\-]+")
_SECRET_KEYS = {"token", "api_key", "authorization", "secret", "password", "card"}


def _scrub(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Never let a raw API key, Stripe secret or card detail reach a log line."""
    for key, value in list(event_dict.items()):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(value, str):
            event_dict[key] = _SECRET.sub(r"\1[redacted]", value)
    return event_dict


_encoder = msgspec.json.Encoder(enc_hook=str)


def _json(event_dict: dict[str, Any], **_: Any) -> bytes:
    """msgspec rather than the standard library: one log line per request is on the hot path."""
    return _encoder.encode(event_dict)


def configure_logging(level: str = "info") -> None:
    log_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=log_level, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(log_level),
        logger_factory=structlog.BytesLoggerFactory(file=sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
