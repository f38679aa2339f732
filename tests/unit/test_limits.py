"""The budgeting of rate limits: a gateway's share of a shared window (what it claimed, when that
must be spent, when the window is known to be full) and the windows kept in one process."""

from __future__ import annotations

import math

from infra.rate_limits import Claim
from services.api.limits import WINDOW_SECONDS, LocalLimits, RollingWindow, Verdict
from services.api.rate_budgets import (
    HOLD_SECONDS,
    MAX_SLICE,
    RATE_SPAN,
    ROOM_AHEAD,
    RUSH_CALLS,
    SLICE_SECONDS,
    Budget,
)


def test_a_slice_is_spent_from_memory_until_it_must_be_dropped() -> None:
    budget = Budget(limit=100)
    assert budget.spend(10.0) is None  # nothing claimed yet: ask the shared window
    first = budget.claimed(Claim(granted=4, remaining=60, wait=0.0), sent=10.0, now=10.01)
    # The room the window had left, plus the three calls this gateway still holds.
    assert first == Verdict(True, 100, 63, 0)
    assert budget.spend(10.2) == Verdict(True, 100, 62, 0)
    assert budget.spend(10.2 + HOLD_SECONDS) is None  # the rest was not spent in time
    assert budget.tokens == 0


def test_a_slice_of_one_is_spent_at_once_and_nothing_is_kept() -> None:
    budget = Budget(limit=5)
    assert budget.claimed(Claim(1, 4, 0.0), sent=1.0, now=1.001) == Verdict(True, 5, 4, 0)
    budget.give_back()  # another window refused the call: its claim has ended all the same
    assert budget.spend(1.002) is None


def test_a_call_given_back_is_spent_again_while_its_slice_lasts() -> None:
    budget = Budget(limit=100)
    budget.claimed(Claim(3, 50, 0.0), sent=0.0, now=0.01)
    assert budget.spend(0.1) is not None
    budget.give_back()
    assert budget.tokens == 2
    assert budget.spend(0.2) == Verdict(True, 100, 51, 0)


def test_a_full_window_is_refused_here_until_room_can_appear() -> None:
    budget = Budget(limit=3)
    refused = budget.claimed(Claim(granted=0, remaining=0, wait=41.2), sent=100.0, now=100.0)
    assert refused == Verdict(False, 3, 0, 42)
    assert budget.refusal(130.0) == 12
    assert budget.spend(130.0) == Verdict(False, 3, 0, 12)
    assert budget.refusal(141.3) == 0
    assert budget.spend(141.3) is None  # room again: claim


def test_the_call_that_fills_the_window_leaves_the_next_ones_refused_without_asking() -> None:
    budget = Budget(limit=3)
    last = budget.claimed(Claim(granted=1, remaining=0, wait=59.5), sent=5.0, now=5.0)
    assert last == Verdict(True, 3, 0, 0)
    assert budget.spend(6.0) == Verdict(False, 3, 0, 59)


def test_calls_still_held_are_spent_before_a_full_window_refuses() -> None:
    budget = Budget(limit=40)
    budget.claimed(Claim(granted=2, remaining=0, wait=60.0), sent=0.0, now=0.0)
    assert budget.refusal(0.5) == 0
    assert budget.spend(0.5) == Verdict(True, 40, 0, 0)
    assert budget.refusal(0.6) == 60


def test_a_claim_asks_for_the_recent_demand_capped() -> None:
    budget = Budget(limit=1_000_000)
    budget.note_call(0.0)
    assert budget.ask() == 1
    assert budget.ask(waiting=7) == 7  # at least the calls waiting for it
    for i in range(1, RUSH_CALLS - 1):
        budget.note_call(i / 100)
    quiet = math.ceil((RUSH_CALLS - 1) * SLICE_SECONDS / HOLD_SECONDS)
    assert budget.ask() == quiet  # the period's calls
    for i in range(RUSH_CALLS - 1, 40):
        budget.note_call(i / 100)
    # Busy: at the rate of its calls so far, 40 in 0.39 s.
    assert budget.ask() == math.ceil(40 / 0.39 * SLICE_SECONDS)
    budget.note_call(HOLD_SECONDS + 0.1)  # a new period remembers the last one
    assert budget.ask() == math.ceil(40 * SLICE_SECONDS / HOLD_SECONDS)
    for _ in range(3 * MAX_SLICE):
        budget.note_call(HOLD_SECONDS + 0.2)
    assert budget.ask() == MAX_SLICE
    budget.note_call(10 * HOLD_SECONDS)  # idle since: one at a time again
    assert budget.ask() == 1


def test_a_rush_is_asked_for_at_its_rate_from_its_first_calls() -> None:
    budget = Budget(limit=1_000_000)
    for i in range(RUSH_CALLS):
        budget.note_call(5.0 + i / 10_000)  # in 1.5 ms: counted over RATE_SPAN
    assert budget.ask() == math.ceil(RUSH_CALLS / RATE_SPAN * SLICE_SECONDS)


def _busy(calls: int) -> Budget:
    """A budget whose key made `calls` calls in the last period, and one now."""
    budget = Budget(limit=100_000)
    for i in range(calls):
        budget.note_call(i * HOLD_SECONDS / calls)
    budget.note_call(HOLD_SECONDS)
    return budget


def test_a_busy_keys_next_slice_is_claimed_when_half_of_this_one_is_left() -> None:
    budget = _busy(40)
    assert budget.ask() == 20
    budget.claimed(Claim(granted=20, remaining=5_000, wait=0.0), sent=0.0, now=0.01)
    assert not budget.due_ahead(0.02)  # 19 left
    for _ in range(9):
        budget.spend(0.1)
    assert budget.tokens == 10
    assert budget.due_ahead(0.1)
    budget.claimed_ahead(Claim(granted=20, remaining=4_980, wait=0.0), sent=0.2, now=0.21)
    assert not budget.due_ahead(0.3)  # one ahead at a time
    # Both slices count in what the key has left.
    assert budget.spend(0.3) == Verdict(True, 100_000, 4_980 + 9 + 20, 0)
    for _ in range(9):
        budget.spend(0.4)
    # The current slice is spent: the next call takes the one claimed ahead, without asking.
    assert budget.spend(0.5) == Verdict(True, 100_000, 4_980 + 19, 0)
    assert (budget.tokens, budget.ahead_tokens) == (19, 0)
    assert budget.spend(0.2 + HOLD_SECONDS + 0.01) is None  # its own deadline holds


def test_nothing_is_claimed_ahead_for_a_quiet_key_a_full_window_or_one_nearly_full() -> None:
    quiet = _busy(2)
    quiet.claimed(Claim(granted=1, remaining=90, wait=0.0), sent=0.0, now=0.0)
    assert not quiet.due_ahead(0.1)
    nearly_full = _busy(40)
    nearly_full.claimed(Claim(20, ROOM_AHEAD - 1, 0.0), sent=0.0, now=0.0)
    nearly_full.tokens = 0
    assert not nearly_full.due_ahead(0.1)
    full = _busy(40)
    full.claimed(Claim(20, 0, 59.0), sent=0.0, now=0.0)
    full.tokens = 0
    assert not full.due_ahead(0.1)


def test_a_slice_of_one_claimed_ahead_is_not_kept_and_a_full_window_is_known() -> None:
    budget = _busy(40)
    budget.claimed(Claim(20, 1_000, 0.0), sent=0.0, now=0.0)
    budget.tokens = 2
    budget.claimed_ahead(Claim(granted=1, remaining=0, wait=58.0), sent=0.1, now=0.1)
    assert budget.ahead_tokens == 0
    assert budget.spend(0.2) == Verdict(True, 100_000, 1, 0)
    budget.spend(0.2)
    assert budget.spend(0.3) == Verdict(False, 100_000, 0, 58)


def test_a_rolling_window_does_not_count_refused_calls() -> None:
    window = RollingWindow()
    for i in range(3):
        assert window.take("k", 3, float(i)).allowed
    refused = window.take("k", 3, 10.0)
    assert refused == Verdict(False, 3, 0, 50)
    assert window.count("k", 10.0) == 3
    assert window.wait("k", 3, WINDOW_SECONDS + 0.5) == 0
    assert window.take("k", 3, WINDOW_SECONDS + 0.5).allowed


async def test_a_call_counts_in_both_windows_or_in_neither() -> None:
    limits = LocalLimits()
    windows = [("key:1", 100), ("key:1:ticket_pdf", 2)]
    assert (await limits.take(windows)) == Verdict(True, 100, 99, 0)  # the key's own limit
    assert (await limits.take(windows)).allowed
    refused = await limits.take(windows)
    assert not refused.allowed and refused.limit == 2
    # The refused call was not counted in the key's general window.
    assert await limits.take([("key:1", 100)]) == Verdict(True, 100, 97, 0)


async def test_the_tenth_failure_is_the_last_one_counted() -> None:
    limits = LocalLimits()
    for _ in range(10):
        assert await limits.auth_refusal("192.0.2.7") == 0
        assert await limits.auth_failed("192.0.2.7") == 0
    assert 0 < await limits.auth_refusal("192.0.2.7") <= 60
    assert 0 < await limits.auth_failed("192.0.2.7") <= 60
    assert await limits.auth_refusal("192.0.2.8") == 0
