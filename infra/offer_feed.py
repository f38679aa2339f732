"""Seat offers passed between gateway processes over core NATS. Best-available is the same
function in every gateway, so buyers asking different gateways at the same moment would all be
offered the same seats; each gateway tells the others what it offered (and took back) so that
they pass over those seats too. Nothing is stored: an offer lost on the way costs at most a
seat conflict at POST /purchases, which the event's stream settles anyway."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from domain.seating import SeatKey

log = structlog.get_logger(__name__)


class OfferNote(msgspec.Struct, frozen=True, array_like=True):
    """One gateway's news about an event's seats: offered, or taken back."""

    sender: str
    event_id: int
    seats: list[SeatKey]
    withdrawn: bool = False


Heard = Callable[[OfferNote], None]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(OfferNote)


class OfferFeed:
    def __init__(self, nc: Client, subject: str) -> None:
        self._nc = nc
        self._subject = subject
        self.me = secrets.token_hex(8)  # this gateway's name in its notes
        self._subscription: Subscription | None = None

    async def start(self, heard: Heard) -> None:
        """Calls `heard` with every other gateway's note, until `stop`."""

        async def receive(msg: Msg) -> None:
            try:
                note = _decoder.decode(msg.data)
            except msgspec.DecodeError:
                log.warning("offer_note_unreadable", subject=msg.subject)
                return
            if note.sender != self.me:  # its own note, on a connection that echoes
                heard(note)

        self._subscription = await self._nc.subscribe(f"{self._subject}.*", cb=receive)
        await self._nc.flush()  # the server knows of the subscription before the first offer

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def tell(
        self, event_id: int, seats: Iterable[SeatKey], *, withdrawn: bool = False
    ) -> None:
        """Publishes without waiting for anyone (core NATS buffers and flushes it)."""
        note = OfferNote(self.me, event_id, list(seats), withdrawn)
        await self._nc.publish(f"{self._subject}.{event_id}", _encoder.encode(note))
