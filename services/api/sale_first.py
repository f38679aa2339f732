"""Selling before browsing. A gateway answers every request on one event loop, and in an on-sale
thousands of buyers ask for seat suggestions and availability while others buy: a purchase
takes several steps (the desk's batch, the PaymentIntent, the append), and at each it waits
behind every request that came in meanwhile. So while a purchase or a payment confirmation is
under way, at most `BROWSING_WHILE_SELLING` browsing requests run at once; the others wait
their turn, in order of arrival. With nothing being sold, browsing runs freely. None of it is
refused: browsing gets the loop whenever selling waits for the database or Stripe.

Four at once: with two, fewer offered seats were refused at purchase, but buyers waited longer
for suggestions than the purchases gained; with eight the refusals came back."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

# Selling: a purchase or a payment confirmation. Browsing: what buyers ask many times while
# they choose (seat suggestions and checks, availability). Free: everything else, neither
# waiting nor making anything wait.
Lane = Literal["selling", "browsing", "free"]
BROWSING_WHILE_SELLING = 4


class SaleFirst:
    def __init__(self, browsing_while_selling: int = BROWSING_WHILE_SELLING) -> None:
        self._room = browsing_while_selling
        self._selling = 0
        self._browsing = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def lane(self, lane: Lane) -> AsyncIterator[None]:
        if lane == "selling":
            self._selling += 1
        elif lane == "browsing":
            await self._turn()
        try:
            yield
        finally:
            if lane == "selling":
                self._selling -= 1
            elif lane == "browsing":
                self._browsing -= 1
            self._admit()

    def _has_room(self) -> bool:
        return not self._selling or self._browsing < self._room

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
