"""The Stripe simulator's webhooks (services/dev/stripe_sim.py): each event POSTed to the webhook
URL with a `Stripe-Signature` header that `stripe.Webhook.construct_event` verifies, the events
of one PaymentIntent in the order they happened, a delivery answered with a non-2xx status or a
connection error tried again after each of `retry_delays`, then every `retry_every` seconds for
`retry_for` seconds (a served simulator: as long as Stripe keeps retrying), then marked failed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

log = structlog.get_logger(__name__)

Json = dict[str, Any]

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30)
# After those, as Stripe does, a delivery is tried again for three days (every 5 s here), so a
# payment made while the service is down for longer is reported soon after it is back.
STRIPE_RETRY_EVERY = 5.0
STRIPE_RETRY_FOR = 3 * 24 * 3600.0
DELIVERY_TIMEOUT = aiohttp.ClientTimeout(total=10)


def unix_now() -> int:
    return int(time.time())


def signature_header(payload: str, secret: str, timestamp: int) -> str:
    """Stripe's webhook signature scheme: HMAC-SHA256 of `<timestamp>.<payload>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass
class Delivery:
    """One event and how its webhook delivery is going."""

    event: Json
    intent_id: str
    status: str = "pending"
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None

    def as_json(self) -> Json:
        state = {
            "status": self.status,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
        }
        return {**self.event, "delivery": state}


class Webhooks:
    """Signed delivery in the background: one chain of tasks per PaymentIntent keeps its events
    in order, while events of other intents go out independently."""

    def __init__(
        self,
        url: str | None,
        secret: str,
        retry_delays: tuple[float, ...],
        retry_every: float = STRIPE_RETRY_EVERY,
        retry_for: float = 0.0,
    ) -> None:
        """After `retry_delays`, a delivery is tried every `retry_every` seconds until
        `retry_for` seconds have passed since it was first tried, then marked failed."""
        self.url = url
        self._secret = secret
        self._retry_delays = retry_delays
        self._retry_every = retry_every
        self._retry_for = retry_for
        self.deliveries: list[Delivery] = []
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        # Told when a delivery is over, delivered or failed (the journal writes it down).
        self.on_settled: Callable[[Delivery], None] = lambda _: None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=DELIVERY_TIMEOUT)

    async def close(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def emit(self, ordering_key: str, event: Json) -> None:
        delivery = Delivery(event, ordering_key)
        self.deliveries.append(delivery)
        if self.url is None:
            delivery.status = "not_configured"
            return
        self._schedule(delivery)

    def resume(self) -> None:
        """Deliveries still pending when the simulator last stopped (from its journal)."""
        for delivery in self.deliveries:
            if delivery.status == "pending" and self.url is not None:
                self._schedule(delivery)

    def _schedule(self, delivery: Delivery) -> None:
        key = delivery.intent_id
        task = asyncio.create_task(self._deliver_after(self._tails.get(key), delivery))
        self._tails[key] = task
        self._running.add(task)
        task.add_done_callback(lambda done: self._forget(key, done))

    def _forget(self, ordering_key: str, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._tails.get(ordering_key) is task:
            del self._tails[ordering_key]

    async def _deliver_after(self, previous: asyncio.Task[None] | None, delivery: Delivery) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        until = time.monotonic() + self._retry_for
        for delay in self._delays(until):
            await asyncio.sleep(delay)
            if await self._attempt(delivery):
                delivery.status = "delivered"
                self.on_settled(delivery)
                return
        delivery.status = "failed"
        self.on_settled(delivery)
        log.warning("stripe_sim_webhook_failed", event_id=delivery.event["id"])

    def _delays(self, until: float) -> Iterator[float]:
        yield from (0, *self._retry_delays)
        while time.monotonic() + self._retry_every <= until:
            yield self._retry_every

    async def _attempt(self, delivery: Delivery) -> bool:
        """One POST, signed afresh (the timestamp is part of the signature, as with Stripe)."""
        assert self._session is not None and self.url is not None
        payload = json.dumps(delivery.event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature_header(payload, self._secret, unix_now()),
        }
        delivery.attempts += 1
        try:
            async with self._session.post(self.url, data=payload, headers=headers) as response:
                delivery.last_status, delivery.last_error = response.status, None
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.last_status, delivery.last_error = None, f"{type(exc).__name__}: {exc}"
            return False
