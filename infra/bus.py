"""NATS JetStream: the connection and the one stream that carries every committed event."""

from __future__ import annotations

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from domain import streams
from infra.settings import Settings
from infra.supervise import OUTAGES

log = structlog.get_logger(__name__)

DUPLICATE_WINDOW_SECONDS = 300.0
# An impatient client's tries, half a second apart (a connection that never answers costs the
# client's connect timeout, 2 s, each): about 10 s at the most.
IMPATIENT_ATTEMPTS = 4


async def connect(
    settings: Settings, name: str, *, echo: bool = True, patient: bool = True
) -> Client:
    """A client that keeps reconnecting forever: a NATS outage delays events, never drops them.
    Without `echo`, its subscriptions do not receive what it publishes itself. An operator's
    command is not `patient`: a NATS out of reach fails it within seconds, as a PostgreSQL
    out of reach does, rather than leaving it waiting without a word."""

    client: Client | None = None

    async def on_disconnect() -> None:
        if client is not None and not (client.is_closed or client.is_draining):
            OUTAGES.down("nats", "disconnected", client=name)

    async def on_reconnect() -> None:
        OUTAGES.up("nats")

    async def on_error(exc: Exception) -> None:
        # Each failed reconnection attempt lands here, every half second of an outage: the
        # outage itself is told once (on_disconnect, on_reconnect).
        log.debug("nats_error", client=name, error=repr(exc))

    client = await nats.connect(
        settings.nats_url,
        name=f"linjerum-{name}",
        max_reconnect_attempts=-1 if patient else IMPATIENT_ATTEMPTS,
        reconnect_time_wait=0.5,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        no_echo=not echo,
    )
    return client


class _RefusalsAnswered(JetStreamContext):
    """nats-py 2.16's `publish_async` never fails the future of a refused publish: its reply
    handler builds the refusal with `APIError.from_error`, which raises instead of returning,
    so the refusal escaped into the subscription and the publisher saw only its own timeout
    (the relay stalled 10 s on each refusal; `replay --publish` reported a timeout). The
    refusal is handed to the publish's future here."""

    async def _handle_async_reply(self, msg: Msg) -> None:
        try:
            await super()._handle_async_reply(msg)
        except APIError as refusal:
            token = msg.subject[len(self._nc._inbox_prefix) + 22 + 2 :]  # as the base reads it
            future = self._publish_async_futures.get(token)
            if future is not None and not future.done():
                future.set_exception(refusal)


def jetstream(nc: Client) -> JetStreamContext:
    """The JetStream context every component publishes and reads through."""
    return _RefusalsAnswered(nc)


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


async def lease_bucket(js: JetStreamContext, name: str, ttl: float) -> KeyValue:
    """A key-value bucket of leases: one value per key, each gone `ttl` seconds after it was
    last written, so a lease its holder stops renewing expires by itself."""
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        config = KeyValueConfig(bucket=name, history=1, ttl=ttl, storage=StorageType.MEMORY)
        return await js.create_key_value(config)


def subject_for(settings: Settings, stream_id: str) -> str:
    return f"{settings.subject_prefix}.{streams.category(stream_id)}"
