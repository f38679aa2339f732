"""Partner API keys as audit events: who was given access to which organization, and when it
was taken away. The raw token never appears in an event, only in the creator's terminal."""

from __future__ import annotations

from domain import streams
from domain.events import Event


class ApiKeyCreated(Event, frozen=True):
    key_id: int
    organization_id: int
    name: str
    allowed_origins: list[str]
    rate_limit_per_minute: int


class ApiKeyRevoked(Event, frozen=True):
    key_id: int


def api_key_stream(key_id: int) -> str:
    return f"{streams.API_KEY}-{key_id}"
