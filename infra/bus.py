"""NATS JetStream: the connection and the one stream that carries every committed event."""

from __future__ import annotations

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from domain.events import stream_category
from infra.settings import Settings

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW_SECONDS = 300.0


async def connect(settings: Settings, name: str, *, echo: bool = True) -> Client:
    """A client that keeps reconnecting forever: a NATS outage delays events, never drops them.
    Without `echo`, its subscriptions do not receive what it publishes itself."""

    async def on_disconnect() -> None:
        log.warning("nats_disconnected", client=name)

    async def on_reconnect() -> None:
        log.info("nats_reconnected", client=name)

    return await nats.connect(
        settings.nats_url,
        name=f"linjerum-{name}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        no_echo=not echo,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Create the event stream if missing: file storage, nothing ever discarded, and a
    duplicate window that absorbs the relay's re-publishes after a crash."""
    config = StreamConfig(
        name=settings.nats_stream,
        subjects=[f"{settings.subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    try:
        await js.stream_info(settings.nats_stream)
    except NotFoundError:
        await js.add_stream(config)
        log.info("nats_stream_created", stream=settings.nats_stream)


def subject_for(settings: Settings, stream_id: str) -> str:
    return f"{settings.subject_prefix}.{stream_category(stream_id)}"
