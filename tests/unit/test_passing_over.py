"""Seat suggestions near a buyer's seats that pass over seats offered to other buyers must do as
well as the best free ones: as many, in the same rows, side by side where the best are."""

from __future__ import annotations

from domain.inventory.events import SeatRef
from domain.passing_over import as_good, together


def _seats(*places: tuple[str, int]) -> list[SeatRef]:
    return [SeatRef(section_id=1, row=row, seat_number=number) for row, number in places]


def test_side_by_side_is_one_row_without_gaps() -> None:
    assert together(_seats(("A", 3), ("A", 1), ("A", 2)))
    assert not together(_seats(("A", 1), ("A", 3)))
    assert not together(_seats(("A", 1), ("B", 2)))
    assert together(_seats(("A", 7))) and together([])


def test_near_seats_keep_the_rows_of_the_best() -> None:
    best = _seats(("A", 3))
    assert as_good(_seats(("A", 5)), best)
    assert not as_good(_seats(("B", 5)), best)
    assert not as_good([], best)


def test_near_seats_keep_a_party_side_by_side_where_the_best_are() -> None:
    party = _seats(("H", 2), ("H", 3), ("H", 4))
    assert not as_good(_seats(("H", 3), ("H", 7), ("H", 8)), party)
    assert as_good(_seats(("H", 5), ("H", 6), ("H", 7)), party)
    split = _seats(("H", 2), ("H", 4))
    assert as_good(_seats(("H", 6), ("H", 8)), split)
