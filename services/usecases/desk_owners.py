"""Which gateway process owns an event's sales desk. With several gateways on one NATS, each
would otherwise have a desk of its own appending to the same inventory stream, and every
append of one would cost the other a conflict and a second decision. Each inventory stream has
one owner at a time: a lease in a JetStream key-value bucket (created if absent, renewed with a
revision-checked update every few seconds, gone `LEASE_SECONDS` after its last renewal). A
gateway that does not own the stream sends the command to the owner (NATS request-reply, on a
subject per owner) and returns its answer.

Nothing here is needed for correctness: two desks that both believe they own a stream (a lease
that lapsed while its owner was stalled) are kept apart by the event store's expected versions,
as every process's desks were before. So handover is simple: a gateway that closes gives its
leases up; the lease of one that died expires, or is taken over at once by the first gateway
whose request NATS finds nobody to answer."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from infra.bus import jetstream, lease_bucket
from infra.settings import Settings
from infra.supervise import stop_task

log = structlog.get_logger(__name__)

LEASE_SECONDS = 6.0
RENEW_SECONDS = 2.0
# A lease whose stream took no command for this long is given up (an event whose sale is over).
IDLE_SECONDS = 120.0
# How long a gateway waits for the owner's decision (a Stripe call and an append on a busy
# machine) before it decides itself.
ASK_SECONDS = 5.0

Answer = Callable[[bytes], Awaitable[bytes]]


class OwnerGone(Exception):
    """NATS found nobody listening on the owner's subject: its process is gone."""


class OwnerSilent(Exception):
    """No answer came back from the owner; it may still decide the command."""


@dataclass
class _Known:
    """Another gateway's lease as last read, trusted until `until`."""

    owner: str
    until: float


class DeskOwners:
    def __init__(self, nc: Client, leases: KeyValue, subject: str, bucket: str) -> None:
        self._nc = nc
        self._leases = leases
        self._subject = subject
        self._bucket = bucket
        self.me = secrets.token_hex(8)
        # The streams this process owns: the revision of its lease and when it was last used.
        self._owned: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._known: dict[str, _Known] = {}
        self._looking: dict[str, asyncio.Task[str]] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None
        self._renewing: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, nc: Client, settings: Settings) -> DeskOwners:
        bucket = settings.desk_owners_bucket
        leases = await lease_bucket(jetstream(nc), bucket, LEASE_SECONDS)
        return cls(nc, leases, settings.desks_subject, bucket)

    async def serve(self, answer: Answer) -> None:
        """Answers the commands other gateways send this one with `answer`, each in a task of
        its own, so that the desk batches them as it batches its own gateway's."""

        async def receive(msg: Msg) -> None:
            task = asyncio.create_task(self._answer(msg, answer))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

        self._subscription = await self._nc.subscribe(f"{self._subject}.{self.me}", cb=receive)
        await self._nc.flush()
        self._renewing = asyncio.create_task(self._renew())

    async def _answer(self, msg: Msg, answer: Answer) -> None:
        try:
            await msg.respond(await answer(msg.data))
        except Exception as exc:
            log.warning("desk_command_unanswered", error=repr(exc))

    async def close(self) -> None:
        """Stops taking commands, answers those it took, and gives every lease up, so another
        gateway owns the streams at once rather than after the leases expire. Whatever NATS
        refuses (a connection already closed) leaves the leases to expire."""
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        await stop_task(self._renewing)
        for task in list(self._looking.values()):
            await stop_task(task)
        await asyncio.gather(*self._answering, return_exceptions=True)
        for stream, revision in list(self._owned.items()):
            with contextlib.suppress(Exception):
                await self._leases.delete(stream, last=revision)
        self._owned.clear()

    def touch(self, stream: str) -> None:
        """A command for `stream` reached this process's desk: its lease is still in use."""
        if stream in self._owned:
            self._used[stream] = time.monotonic()

    async def owner_of(self, stream: str) -> str:
        """The id of the gateway that owns `stream` (this one's `me` included), claiming it
        when nobody does; `me` when NATS cannot be asked (the desk here decides)."""
        if stream in self._owned:
            self.touch(stream)
            return self.me
        known = self._known.get(stream)
        if known is not None and known.until > time.monotonic():
            return known.owner
        if not self._nc.is_connected:
            return self.me
        looking = self._looking.get(stream)
        if looking is None:
            looking = self._looking[stream] = asyncio.create_task(self._look(stream))
            looking.add_done_callback(lambda _: self._looking.pop(stream, None))
        try:
            return await asyncio.shield(looking)
        except Exception as exc:
            log.warning("desk_owner_unknown", stream=stream, error=repr(exc))
            return self.me

    async def _look(self, stream: str, gone: str | None = None) -> str:
        """The owner the lease names; the stream is claimed when there is no lease, or when it
        names this process or the gateway known to be `gone`. A bucket NATS lost (restarted:
        leases are kept in memory) is made again first."""
        try:
            entry = await self._lease(stream)
        except (KeyNotFoundError, KeyDeletedError):
            return await self._claim(stream, None)
        owner = (entry.value or b"").decode()
        if owner == self.me and stream in self._owned:
            return owner
        if owner in (self.me, gone, ""):
            return await self._claim(stream, entry.revision)
        self._known[stream] = _Known(owner, time.monotonic() + RENEW_SECONDS)
        return owner

    async def _claim(self, stream: str, revision: int | None) -> str:
        """Takes the lease if it is still as last seen (absent: `revision` None); if another
        gateway was quicker, that one is the owner."""
        try:
            if revision is None:
                taken = await self._leases.create(stream, self.me.encode())
            else:
                taken = await self._leases.update(stream, self.me.encode(), last=revision)
        except KeyWrongLastSequenceError:
            entry = await self._leases.get(stream)
            owner = (entry.value or b"").decode()
            self._known[stream] = _Known(owner, time.monotonic() + RENEW_SECONDS)
            return owner
        self._owned[stream] = taken
        self._used[stream] = time.monotonic()
        self._known.pop(stream, None)
        log.info("desk_owned", stream=stream, owner=self.me)
        return self.me

    async def ask(self, owner: str, command: bytes) -> bytes:
        """The owner's answer to `command`; OwnerGone or OwnerSilent when there is none (no
        answer in time, or NATS lost on the way)."""
        try:
            reply = await self._nc.request(f"{self._subject}.{owner}", command, ASK_SECONDS)
        except NoRespondersError:
            raise OwnerGone(owner) from None
        except NatsError:
            raise OwnerSilent(owner) from None
        return reply.data

    def silent(self, stream: str, owner: str) -> None:
        """`owner` let a command for `stream` go unanswered (stalled, say): until its lease
        would lapse, the desk here decides the stream's commands (two desks are kept apart by
        the event store's versions) instead of every buyer waiting ASK_SECONDS for it."""
        known = self._known.get(stream)
        if known is None or known.owner == owner:
            log.warning("desk_owner_silent", stream=stream, owner=owner)
            self._known[stream] = _Known(self.me, time.monotonic() + LEASE_SECONDS)

    async def take_over(self, stream: str, owner: str) -> None:
        """`owner` is gone: its lease (or none, if it gave it up) is taken now rather than
        after it expires; if another gateway was quicker, that one owns the stream."""
        self._known.pop(stream, None)
        try:
            await self._look(stream, gone=owner)
        except Exception as exc:
            log.warning("desk_takeover_failed", stream=stream, error=repr(exc))

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            if not await self._renew_all():
                await self._lease_again()

    async def _lease(self, stream: str) -> KeyValue.Entry:
        try:
            return await self._leases.get(stream)
        except (KeyNotFoundError, KeyDeletedError):
            raise
        except Exception:
            await self._reopen()
            return await self._leases.get(stream)

    async def _reopen(self) -> None:
        self._leases = await lease_bucket(jetstream(self._nc), self._bucket, LEASE_SECONDS)

    async def _lease_again(self) -> None:
        """Some lease could not be renewed: if NATS lost the bucket (a restart), it is made
        again with this process's leases in it, so the other gateways go on routing to it; a
        lease another gateway took meanwhile is theirs. Tried again at the next renewal while
        NATS cannot be reached."""
        try:
            await self._reopen()
            for stream in list(self._owned):
                try:
                    self._owned[stream] = await self._leases.create(stream, self.me.encode())
                    log.info("desk_lease_restored", stream=stream, owner=self.me)
                except KeyWrongLastSequenceError:
                    entry = await self._leases.get(stream)
                    if (entry.value or b"").decode() != self.me:
                        self._owned.pop(stream, None)
                        log.warning("desk_lease_lost", stream=stream, owner=self.me)
                    elif entry.revision is not None:
                        self._owned[stream] = entry.revision
        except Exception as exc:
            log.info("desk_leases_not_restored", error=repr(exc))

    async def _renew_all(self) -> bool:
        """Renews every lease in use and gives up the idle ones; False when some lease could
        not be written (NATS away, or the bucket lost)."""
        renewed = True
        now = time.monotonic()
        for stream, revision in list(self._owned.items()):
            try:
                if now - self._used.get(stream, now) > IDLE_SECONDS:
                    del self._owned[stream]
                    self._used.pop(stream, None)
                    await self._leases.delete(stream, last=revision)
                else:
                    self._owned[stream] = await self._leases.update(
                        stream, self.me.encode(), last=revision
                    )
            except KeyWrongLastSequenceError:
                # Lapsed (another gateway may own the stream now), or made anew after NATS
                # lost the bucket: `_lease_again` tells which.
                renewed = False
            except Exception as exc:
                renewed = False
                log.warning("desk_lease_not_renewed", stream=stream, error=repr(exc))
        return renewed
