"""The taken seats, grouped by row, that every seat choice and seat check reads: a set of seat keys
whose snapshot stays as it was when a buyer's own seats are added for one request."""

from __future__ import annotations

from domain.seating import TakenSeats, by_row
from tests.unit.builders import FLOOR, HALL


def test_taken_seats_answer_as_a_set_of_seat_keys() -> None:
    keys = {(HALL, "A", 1), (HALL, "A", 3), (HALL, "B", 2)}
    taken = TakenSeats.of(keys)
    assert (len(taken), set(taken)) == (3, keys)
    assert (HALL, "A", 3) in taken
    assert (HALL, "A", 2) not in taken
    assert (FLOOR, "A", 1) not in taken
    assert ("not", "a key") not in taken
    assert taken.in_row(HALL, "A") == {1, 3}
    assert taken.in_row(HALL, "C") == set()
    assert TakenSeats.of(taken) is taken


def test_adding_a_buyers_seats_leaves_the_shared_snapshot_as_it_was() -> None:
    snapshot = TakenSeats.of({(HALL, "A", 1)})
    mine = snapshot.plus(by_row([(HALL, "A", 2), (HALL, "B", 5)]))
    assert set(mine) == {(HALL, "A", 1), (HALL, "A", 2), (HALL, "B", 5)}
    assert len(mine) == 3
    assert set(snapshot) == {(HALL, "A", 1)} and len(snapshot) == 1
    assert snapshot.in_row(HALL, "A") == {1}
