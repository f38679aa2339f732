"""The seats best-available offered moments ago, which the next suggestions pass over: kept per
row, frozen, so that each auto-select merges unchanged rows by identity."""

from __future__ import annotations

from unittest.mock import patch

from services.api.offers import SeatOffers
from tests.unit.builders import HALL

EVENT = 7


async def test_offers_are_frozen_per_row_and_made_again_only_where_they_change() -> None:
    offers = SeatOffers(seconds=20.0)
    await offers.offer(EVENT, [(HALL, "A", 1), (HALL, "A", 2), (HALL, "B", 5)])
    row_a = offers.recent(EVENT)[(HALL, "A")]
    assert row_a == {1, 2} and isinstance(row_a, frozenset)
    await offers.offer(EVENT, [(HALL, "B", 6)])
    assert offers.recent(EVENT)[(HALL, "A")] is row_a
    assert offers.recent(EVENT)[(HALL, "B")] == {5, 6}
    await offers.withdraw(EVENT, [(HALL, "A", 1), (HALL, "A", 2)])
    assert dict(offers.recent(EVENT)) == {(HALL, "B"): {5, 6}}
    await offers.withdraw(EVENT, [(HALL, "B", 5), (HALL, "B", 6), (HALL, "C", 1)])
    assert dict(offers.recent(EVENT)) == {}


async def test_offers_expire_row_by_row_and_a_seat_offered_again_lives_on() -> None:
    offers = SeatOffers(seconds=20.0)
    with patch("services.api.offers.time.monotonic", return_value=100.0):
        await offers.offer(EVENT, [(HALL, "A", 1), (HALL, "B", 1)])
    with patch("services.api.offers.time.monotonic", return_value=110.0):
        await offers.offer(EVENT, [(HALL, "A", 1), (HALL, "A", 2)])
    with patch("services.api.offers.time.monotonic", return_value=121.0):
        assert dict(offers.recent(EVENT)) == {(HALL, "A"): {1, 2}}
    with patch("services.api.offers.time.monotonic", return_value=131.0):
        assert dict(offers.recent(EVENT)) == {}
        await offers.offer(EVENT, [(HALL, "C", 3)])
        assert dict(offers.recent(EVENT)) == {(HALL, "C"): {3}}
