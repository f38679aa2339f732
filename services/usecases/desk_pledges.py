"""A desk's pledges: a purchase forecast to go through creates its PaymentIntent before the desk
decides it (services/usecases/purchases.py, paying first), and meanwhile what it must have (the
seats its buyer chose, `Kind.claims`) is pledged to it, so that no other buyer at this desk
pays Stripe for those seats, or takes them, before that purchase is decided."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any


class Pledges:
    def __init__(self, claims: Callable[[Any], frozenset[Hashable]] | None) -> None:
        self._claims_of = claims
        # What forecast purchases that are creating their PaymentIntents claim: each claim's
        # pledge is done once that purchase is decided (stored or refused) or has given up.
        self._pledged: dict[Hashable, asyncio.Future[None]] = {}

    async def wait_for(self, command: Any) -> None:
        """Until no purchase paying first here claims what `command` claims: a buyer whose
        chosen seats another's pledge claims learns after that one is decided whether they
        are still free, instead of paying Stripe for an intent the desk would then refuse (or
        taking them from under a purchase already paying). Commands that claim nothing (seats
        the desk chooses) never wait."""
        claims = self._claims(command)
        while pledges := {self._pledged[c] for c in claims if c in self._pledged}:
            await asyncio.wait(pledges)

    @contextlib.contextmanager
    def pledge(self, command: Any) -> Iterator[None]:
        """Claims what `command` claims until the block ends: while a forecast purchase creates
        its PaymentIntent and is decided."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        claims = self._claims(command)
        self._pledged.update(dict.fromkeys(claims, done))
        try:
            yield
        finally:
            for claim in claims:
                if self._pledged.get(claim) is done:
                    del self._pledged[claim]
            done.set_result(None)

    def _claims(self, command: Any) -> frozenset[Hashable]:
        return frozenset() if self._claims_of is None else self._claims_of(command)
