"""A gateway's share of one rate-limit window held with the other gateways: the slices it
claims, sized to the key's demand, spent from memory until they must be dropped, the next one
claimed ahead for a busy key, and what is given back. Arithmetic on the clock it is handed,
without IO, so every rule can be checked alone; services/api/shared_limits.py does the
claiming."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from infra.rate_limits import Claim, Unspent
from services.api.limits import Verdict, retry_seconds

# A slice of several calls is spent within this long of its claim, or dropped; the shared window
# counts such a slice this much longer, so the calls never add up past the limit.
HOLD_SECONDS = 1.0
# A claim asks for the calls expected in this long (at the demand of the last HOLD_SECONDS),
# so a slice is spent well before it must be dropped, and for no more than MAX_SLICE.
SLICE_SECONDS = 0.5
MAX_SLICE = 1000
# A key with this many calls in the current period is asked for at their rate (counted over at
# least RATE_SPAN): at the start of a rush, the calls of a whole period are far behind it.
RUSH_CALLS = 16
RATE_SPAN = 0.05
# The window's least room for a claim ahead: the database grants a sixteenth of the room left,
# and a slice of one is spent at once, so a claim ahead is only made while it gets two or more.
ROOM_AHEAD = 32


@dataclass(slots=True)
class Budget:
    """This gateway's share of one shared window: calls claimed and not yet spent (usable until
    `spend_by`), the next slice when it was claimed ahead (`ahead_tokens`, usable until
    `ahead_by`), the window's room as of the last claim, and, once it is full, when it has room
    again: no claim can succeed before then (a window's count only falls as its oldest claims
    end), so until then calls are refused here without asking. A slice's calls left unspent
    when its hold ends are given back with the next claim (`unspent`), each slice by when the
    window counts it until (`counted_until`, `ahead_counted_until`)."""

    limit: int
    tokens: int = 0
    spend_by: float = 0.0
    counted_until: datetime | None = None
    ahead_tokens: int = 0
    ahead_by: float = 0.0
    ahead_counted_until: datetime | None = None
    unspent: list[Unspent] = field(default_factory=list)
    room: int = 0
    full_until: float = 0.0
    calls: int = 0
    calls_before: int = 0
    period_start: float = 0.0
    last_call: float = 0.0

    def note_call(self, now: float) -> None:
        """Demand: the calls of the current HOLD_SECONDS period and of the one before."""
        if now - self.period_start >= HOLD_SECONDS:
            recent = now - self.period_start < 2 * HOLD_SECONDS
            self.calls_before = self.calls if recent else 0
            self.calls = 0
            self.period_start = now
        self.calls += 1
        self.last_call = now

    def ask(self, waiting: int = 0) -> int:
        """What to claim: the calls expected in the next SLICE_SECONDS, and at least the calls
        `waiting` for this claim. A quiet key is asked for exactly; a rushed one at the rate of
        its calls so far (a slice not spent in time only counts against the key's own limit)."""
        per_second = max(self.calls, self.calls_before) / HOLD_SECONDS
        if self.calls >= RUSH_CALLS:
            span = max(self.last_call - self.period_start, RATE_SPAN)
            per_second = max(per_second, self.calls / span)
        expected = math.ceil(per_second * SLICE_SECONDS)
        return min(max(expected, waiting, 1), MAX_SLICE)

    def at_hand(self, now: float) -> bool:
        """Whether a claimed call can be spent: from the current slice, or from the one claimed
        ahead, which then becomes the current one. A slice whose hold has ended is put aside
        to be given back."""
        if self.tokens > 0 and now <= self.spend_by:
            return True
        self._set_aside(self.tokens, self.counted_until)
        self.tokens = 0
        if self.ahead_tokens > 0 and now > self.ahead_by:
            self._set_aside(self.ahead_tokens, self.ahead_counted_until)
            self.ahead_tokens = 0
        if self.ahead_tokens > 0:
            self.tokens, self.spend_by = self.ahead_tokens, self.ahead_by
            self.counted_until = self.ahead_counted_until
            self.ahead_tokens = 0
            return True
        return False

    def _set_aside(self, calls: int, counted_until: datetime | None) -> None:
        if calls > 0 and counted_until is not None:
            self.unspent.append(Unspent(counted_until, calls))

    def given_back(self) -> list[Unspent]:
        """The calls put aside, for the claim about to be made (which takes them off)."""
        unspent, self.unspent = self.unspent, []
        return unspent

    def refusal(self, now: float) -> int:
        """Retry-After while the window is known to be full and nothing claimed is left."""
        if self.at_hand(now):
            return 0
        return retry_seconds(self.full_until - now) if self.full_until > now else 0

    def spend(self, now: float) -> Verdict | None:
        """A call from what was claimed, a refusal while the window is full, or None: claim."""
        if self.at_hand(now):
            self.tokens -= 1
            return Verdict(True, self.limit, self.room + self.tokens + self.ahead_tokens, 0)
        if self.full_until > now:
            return Verdict(False, self.limit, 0, retry_seconds(self.full_until - now))
        return None

    def due_ahead(self, now: float) -> bool:
        """Whether to claim the next slice now: a busy key (slices of several calls) has half
        a slice or less left, nothing claimed ahead yet, and the window room for two calls."""
        asked = self.ask()
        return (
            asked > 1
            and self.ahead_tokens == 0
            and self.tokens * 2 <= asked
            and self.room >= ROOM_AHEAD
            and self.full_until <= now
        )

    def claimed(self, claim: Claim, sent: float, now: float) -> Verdict:
        """The verdict of the call that made the claim (sent at `sent`, answered at `now`); the
        rest of the slice is kept for the next calls. A slice of one is spent at once."""
        self._heard(claim, now)
        if claim.granted == 0:
            self.tokens = 0
            return Verdict(False, self.limit, 0, retry_seconds(claim.wait))
        self.tokens = claim.granted - 1
        self.spend_by = sent + HOLD_SECONDS if claim.granted > 1 else sent
        self.counted_until = claim.counted_until
        return Verdict(True, self.limit, self.room + self.tokens, 0)

    def claimed_ahead(self, claim: Claim, sent: float, now: float) -> None:
        """Keeps a slice claimed ahead for when the current one is spent. A slice of one, which
        only another gateway's claims in between leave, cannot be kept (the window counts it
        without a hold): it is given back."""
        self._heard(claim, now)
        self._set_aside(self.ahead_tokens, self.ahead_counted_until)
        self.ahead_tokens = 0
        if claim.granted > 1:
            self.ahead_tokens, self.ahead_by = claim.granted, sent + HOLD_SECONDS
            self.ahead_counted_until = claim.counted_until
        else:
            self._set_aside(claim.granted, claim.counted_until)

    def _heard(self, claim: Claim, now: float) -> None:
        """The window's room as of this claim, and when it has room again if it is full."""
        self.full_until = now + claim.wait if claim.remaining == 0 else 0.0
        self.room = claim.remaining

    def give_back(self) -> None:
        """A call spent here but refused by another window; dropped if its slice has ended."""
        self.tokens += 1

    def idle(self, now: float) -> bool:
        return now > max(self.spend_by, self.ahead_by) and now >= self.full_until
