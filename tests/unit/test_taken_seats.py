"""The taken seats, grouped by row, that every seat choice and seat check reads: a set of seat keys
whose snapshot stays as it was when a buyer's own seats are added for one request."""

from __future__ import annotations

from domain.seating import TakenSeats, best_available, by_row, outside_lane
from domain.venues import Row, Section
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


HALL_SECTION = Section(id=HALL, name="Sal", rows=[Row(identifier=r, start=1, end=4) for r in "ABC"])


def _rows(taken: TakenSeats, count: int) -> list[str]:
    return [s.row for s in best_available([HALL_SECTION], [HALL], taken, count)]


def _full(row: str) -> set[tuple[int, str, int]]:
    hall_row = next(r for r in HALL_SECTION.rows if r.identifier == row)
    return {(HALL, row, n) for n in range(hall_row.start, hall_row.end + 1)}


def test_a_snapshot_that_grows_seats_the_next_buyers_after_the_rows_it_filled() -> None:
    snapshot = TakenSeats.of(_full("A"))
    assert _rows(snapshot, 2) == ["B", "B"]
    grown = snapshot.plus(by_row(_full("B")))
    assert _rows(grown, 2) == ["C", "C"]
    assert _rows(snapshot, 2) == ["B", "B"], "the snapshot it grew from is as it was"
    assert _rows(grown.plus({}), 2) == ["C", "C"]


def test_a_new_snapshot_offers_a_seat_freed_in_a_row_an_earlier_one_had_full() -> None:
    before = TakenSeats.of(_full("A") | _full("B"))
    assert _rows(before, 1) == ["C"]
    freed = TakenSeats.of((_full("A") - {(HALL, "A", 1)}) | _full("B"))
    assert [(s.row, s.seat_number) for s in best_available([HALL_SECTION], [HALL], freed, 1)] == [
        ("A", 1)
    ]


def test_every_seat_taken_offers_none() -> None:
    every = set().union(*(_full(r.identifier) for r in HALL_SECTION.rows))
    assert _rows(TakenSeats.of(every), 1) == []
    assert _rows(TakenSeats.of(set()).plus(by_row(every)), 4) == []


def test_gateways_in_lanes_suggest_from_rows_of_their_own() -> None:
    """Three rows in two lanes: lane 0 has A and C, lane 1 has B; each lane fills front first."""
    nothing = TakenSeats.of(set())
    first = nothing.plus(outside_lane([HALL_SECTION], 2, 0))
    second = nothing.plus(outside_lane([HALL_SECTION], 2, 1))
    assert _rows(first, 4) == ["A"] * 4
    assert _rows(second, 4) == ["B"] * 4
    assert _rows(first.plus(by_row(_full("A"))), 4) == ["C"] * 4
    assert _rows(second.plus(by_row(_full("B"))), 4) == []
    assert outside_lane([HALL_SECTION], 1, 0) == {}


def test_the_same_offered_rows_merge_into_the_very_same_rows() -> None:
    """Every auto-select adds the seats offered moments ago to the taken seats: an unchanged pair
    of rows must give the same merged row, which the full-row cache knows by identity."""
    taken = TakenSeats.of({(HALL, "A", 1), (HALL, "B", 1)})
    offered = {(HALL, "A"): frozenset({2, 3}), (HALL, "B"): frozenset({2})}
    first, second = taken.plus(offered), taken.plus(dict(offered))
    assert first.in_row(HALL, "A") == {1, 2, 3}
    assert first.in_row(HALL, "A") is second.in_row(HALL, "A")
    assert first.in_row(HALL, "B") is second.in_row(HALL, "B")
    changed = taken.plus({**offered, (HALL, "B"): frozenset({2, 4})})
    assert changed.in_row(HALL, "A") is first.in_row(HALL, "A")
    assert changed.in_row(HALL, "B") == {1, 2, 4}
