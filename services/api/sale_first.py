"""Selling before browsing. A gateway answers every request on one event loop, and in an on-sale
thousands of buyers ask for seat suggestions and availability while others buy: a purchase
takes several steps (the desk's batch, the PaymentIntent, the append), and at each it waits
behind every request that came in meanwhile. So while a purchase is under way and the loop is
saturated, at most `BROWSING_WHILE_SELLING` browsing requests run at once; the others wait
their turn, in order of arrival. With nothing being sold, or a loop that keeps up (a purchase
waiting for a slow Stripe, say), browsing runs freely. None of it is refused: browsing gets the
loop whenever selling waits for the database or Stripe. Reads answered from memory
(availability, the seat plan: services/api/http.py's `memoized`) are in no lane: each answer is
built once per change whoever asks, and a poll served from memory has cost its parsing, key
check and log row by the time it would wait, so waiting saved the sale nothing and only made
the answer older (a page polling availability learned of the sell-out 300 ms late, queued
behind the buyers' seat suggestions).

Four at once: with two, fewer offered seats were refused at purchase, but buyers waited longer
for suggestions than the purchases gained; with eight the refusals came back. Stripe's webhooks
do not count as selling: when they did, the purchases' tail was the same and the buyers' whole
journey slower."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

from infra.supervise import stop_task

# Selling: a purchase. Browsing: what buyers ask many times while
# they choose (seat suggestions and checks, availability). Free: everything else, neither
# waiting nor making anything wait.
Lane = Literal["selling", "browsing", "free"]
BROWSING_WHILE_SELLING = 4
# The loop is saturated while a timer it was given fires this much late or more: at 5 ms it
# seldom was during an on-sale's burst (its purchases' tail doubled), idle it is under 0.5 ms.
SATURATED_LAG = 0.001
LAG_LOOK = 0.01  # seconds between the timers


class LoopLag:
    """Whether the event loop is saturated, from how late a timer fires every LAG_LOOK
    seconds while it is watched (an idle gateway sets no timers); `on_change` is called when
    that flips."""

    def __init__(self) -> None:
        self.saturated = False
        self.on_change: Callable[[], None] = lambda: None
        self._task: asyncio.Task[None] | None = None
        self._watched = asyncio.Event()

    def watch(self) -> None:
        self._watched.set()

    def rest(self) -> None:
        """Unwatched, the loop counts as keeping up."""
        self._watched.clear()
        self.saturated = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="loop-lag")

    async def stop(self) -> None:
        await stop_task(self._task)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._watched.wait()
            asked = loop.time()
            await asyncio.sleep(LAG_LOOK)
            saturated = loop.time() - asked - LAG_LOOK >= SATURATED_LAG
            if self._watched.is_set() and saturated != self.saturated:
                self.saturated = saturated
                self.on_change()


class SaleFirst:
    def __init__(
        self, browsing_while_selling: int = BROWSING_WHILE_SELLING, lag: LoopLag | None = None
    ) -> None:
        self._room = browsing_while_selling
        self._selling = 0
        self._browsing = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._lag = lag or LoopLag()
        self._lag.on_change = self._admit

    def start(self) -> None:
        self._lag.start()

    async def stop(self) -> None:
        await self._lag.stop()

    @asynccontextmanager
    async def lane(self, lane: Lane) -> AsyncIterator[None]:
        if lane == "selling":
            self._selling += 1
            self._lag.watch()
        elif lane == "browsing":
            await self._turn()
        try:
            yield
        finally:
            if lane == "selling":
                self._selling -= 1
                if not self._selling:
                    self._lag.rest()
            elif lane == "browsing":
                self._browsing -= 1
            self._admit()

    def _has_room(self) -> bool:
        return not self._selling or self._browsing < self._room or not self._lag.saturated

    async def _turn(self) -> None:
        """Returns once this browsing request may run (counted among those running)."""
        if not self._waiting and self._has_room():
            self._browsing += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.cancelled():
                self._waiting.remove(turn)
            else:
                # Given its turn just as it was cancelled: the turn goes to the next.
                self._browsing -= 1
                self._admit()
            raise

    def _admit(self) -> None:
        while self._waiting and self._has_room():
            self._browsing += 1
            self._waiting.popleft().set_result(None)
