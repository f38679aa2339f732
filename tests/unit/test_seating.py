"""Seat choice and selection checks: parties sit together, centred, in the frontmost row with
room; near a selection they stay in its row, then its section; taken seats, other sections and
standing areas are never offered; a bad selection is refused naming the field."""

from __future__ import annotations

import random

import pytest

from domain.catalog import TicketType
from domain.errors import InvalidCommand
from domain.inventory.events import SeatRef
from domain.seat_selection import check_seat, check_selection, conflicts, seated_sections
from domain.seating import SeatKey, best_available, seats_of
from domain.venues import Row, Section

PARTERRE, LOGE, BALKON, GULV = 10, 5, 20, 30


def _section(sid: int, order: int, rows: str, seats: int) -> Section:
    return Section(
        id=sid,
        name=f"Sektion {sid}",
        display_order=order,
        width=100.0,
        height=50.0,
        rows=[Row(identifier=r, start=1, end=seats) for r in rows],
    )


SECTIONS = [
    _section(BALKON, 1, "AB", 6),
    _section(PARTERRE, 0, "ABC", 10),
    _section(LOGE, 1, "A", 4),
    Section(
        id=GULV,
        name="Gulv",
        seating_mode="standing",
        width=10.0,
        height=10.0,
        standing_capacity=100,
    ),
]
VOKSEN = TicketType(id=1, name="Voksen", price_cents=30000, section_ids=[PARTERRE, BALKON])
LOGE_TYPE = TicketType(id=2, name="Loge", price_cents=50000, section_ids=[LOGE])
STAAENDE = TicketType(id=3, name="Ståplads", price_cents=20000, section_ids=[GULV])
TYPES = {t.id: t for t in (VOKSEN, LOGE_TYPE, STAAENDE)}


def seat(section: int, row: str, number: int) -> SeatRef:
    return SeatRef(section_id=section, row=row, seat_number=number)


def keys(seats: list[SeatRef]) -> list[SeatKey]:
    return [(s.section_id, s.row, s.seat_number) for s in seats]


def row_taken(section: int, row: str, numbers: range | list[int]) -> set[SeatKey]:
    return {(section, row, n) for n in numbers}


def pick(
    count: int,
    taken: set[SeatKey] | None = None,
    near: list[SeatRef] | None = None,
    allowed: list[int] | None = None,
) -> list[SeatKey]:
    allowed = [PARTERRE, BALKON] if allowed is None else allowed
    return keys(best_available(SECTIONS, allowed, taken or set(), count, near or []))


# ---- the seat map -------------------------------------------------------------------------------


def test_seats_of_lists_a_section_in_row_order_and_standing_areas_have_none() -> None:
    loge = next(s for s in SECTIONS if s.id == LOGE)
    assert keys(seats_of(loge)) == [(LOGE, "A", n) for n in range(1, 5)]
    assert seats_of(next(s for s in SECTIONS if s.id == GULV)) == []


def test_seated_sections_of_a_type_leave_out_standing_areas() -> None:
    assert [s.id for s in seated_sections(SECTIONS, VOKSEN)] == [BALKON, PARTERRE]
    assert seated_sections(SECTIONS, STAAENDE) == []


# ---- without near -----------------------------------------------------------------------------


def test_a_party_sits_together_in_the_front_row_at_its_centre() -> None:
    assert pick(2) == [(PARTERRE, "A", 5), (PARTERRE, "A", 6)]
    # Seats 4-6 and 5-7 are equally far off the centre (5.5): the lower numbers win.
    assert pick(3) == [(PARTERRE, "A", n) for n in (4, 5, 6)]


def test_a_row_further_back_with_room_beats_a_broken_front_row() -> None:
    taken = row_taken(PARTERRE, "A", [2, 4, 6, 8, 10])
    assert pick(2, taken) == [(PARTERRE, "B", 5), (PARTERRE, "B", 6)]


def test_taken_seats_are_skipped_and_the_run_nearest_the_centre_is_chosen() -> None:
    taken = row_taken(PARTERRE, "A", [4])
    assert pick(3, taken) == [(PARTERRE, "A", n) for n in (5, 6, 7)]
    assert not set(pick(30, taken)) & taken


def test_sections_come_by_display_order_then_id() -> None:
    both = [BALKON, LOGE]  # both display_order 1: the Loge has the lower id
    assert pick(2, allowed=both) == [(LOGE, "A", 2), (LOGE, "A", 3)]
    full_loge = row_taken(LOGE, "A", range(1, 5))
    assert pick(2, full_loge, allowed=both) == [(BALKON, "A", 3), (BALKON, "A", 4)]


def test_only_seated_sections_the_type_may_use_are_offered() -> None:
    assert {k[0] for k in pick(40)} == {PARTERRE, BALKON}
    assert pick(2, allowed=[GULV]) == []
    assert pick(2, allowed=[]) == []


def test_without_room_for_the_party_the_largest_blocks_and_fewest_rows_are_used() -> None:
    # Row A has 3+3 free around a taken 4 and 7..10 taken; row B has only single seats free.
    taken = row_taken(PARTERRE, "A", [4, 8, 9, 10])
    taken |= row_taken(PARTERRE, "B", [2, 4, 6, 8, 10]) | row_taken(PARTERRE, "C", range(1, 11))
    taken |= row_taken(BALKON, "A", range(1, 7)) | row_taken(BALKON, "B", range(1, 7))
    assert pick(6, taken) == [(PARTERRE, "A", n) for n in (1, 2, 3, 5, 6, 7)]
    assert pick(5, taken) == [(PARTERRE, "A", n) for n in (1, 2, 3, 5, 6)]


def test_fewer_free_seats_than_requested_returns_every_free_seat() -> None:
    everything = {k for s in SECTIONS for k in keys(seats_of(s))}
    free = [(LOGE, "A", 2), (LOGE, "A", 4)]
    assert pick(3, everything - set(free), allowed=[LOGE]) == free


def test_never_more_than_requested() -> None:
    assert pick(0) == []
    assert len(pick(7)) == 7
    assert len(set(pick(20))) == 20


# ---- near a selection -----------------------------------------------------------------------


def test_near_seats_are_joined_in_their_own_row_and_never_offered_again() -> None:
    near = [seat(PARTERRE, "A", 9)]
    assert pick(2, near=near) == [(PARTERRE, "A", 8), (PARTERRE, "A", 10)]
    assert pick(3, near=near)[0] == (PARTERRE, "A", 7)


def test_near_prefers_seats_joined_to_the_selection_over_closer_ones_across_a_gap() -> None:
    taken = row_taken(PARTERRE, "A", [6])
    near = [seat(PARTERRE, "A", 5)]
    assert pick(3, taken, near) == [(PARTERRE, "A", n) for n in (2, 3, 4)]


def test_near_fills_its_row_before_any_other_row() -> None:
    taken = row_taken(PARTERRE, "B", range(1, 9))
    near = [seat(PARTERRE, "B", 9)]
    assert pick(1, taken, near) == [(PARTERRE, "B", 10)]
    # Then the row in front (listed first: results come in venue order), behind seat 9.
    assert pick(2, taken, near) == [(PARTERRE, "A", 9), (PARTERRE, "B", 10)]


def test_near_then_the_nearest_rows_of_its_section_by_seat_distance() -> None:
    taken = row_taken(PARTERRE, "B", range(1, 11)) - {(PARTERRE, "B", 5)}
    near = [seat(PARTERRE, "B", 5)]
    # A and C are both one row away: the front one first, directly beside seat 5's column.
    assert pick(2, taken, near) == [(PARTERRE, "A", 5), (PARTERRE, "A", 6)]
    front_taken = taken | row_taken(PARTERRE, "A", range(1, 11))
    assert pick(2, front_taken, near) == [(PARTERRE, "C", 5), (PARTERRE, "C", 6)]


def test_near_then_the_other_allowed_sections() -> None:
    parterre = set(keys(seats_of(next(s for s in SECTIONS if s.id == PARTERRE))))
    near = [seat(PARTERRE, "C", 3)]
    assert pick(2, parterre - {(PARTERRE, "C", 3)}, near) == [(BALKON, "A", 3), (BALKON, "A", 4)]


def test_near_seats_in_a_section_the_type_may_not_use_are_ignored() -> None:
    assert pick(2, near=[seat(LOGE, "A", 1)]) == pick(2)


def test_choice_is_deterministic() -> None:
    taken = row_taken(PARTERRE, "A", [1, 5, 9]) | row_taken(PARTERRE, "B", [3, 7])
    near = [seat(PARTERRE, "B", 4), seat(BALKON, "A", 2)]
    assert pick(9, taken, near) == pick(9, set(taken), list(near))


# ---- checking a selection -------------------------------------------------------------------


def test_conflicts_are_the_taken_seats_in_the_order_of_the_selection() -> None:
    a5, a6, a7 = seat(PARTERRE, "A", 5), seat(PARTERRE, "A", 6), seat(PARTERRE, "A", 7)
    loge = seat(LOGE, "A", 1)
    taken = {(PARTERRE, "A", 5), (LOGE, "A", 1)}
    selection = {1: [a5, a6, a7], 2: [loge]}
    assert conflicts(SECTIONS, selection, TYPES, taken) == [a5, loge]
    assert conflicts(SECTIONS, {1: [a6, a7]}, TYPES, taken) == []
    assert conflicts(SECTIONS, {}, TYPES, taken) == []


def test_a_seat_selected_twice_is_refused_like_the_purchase_refuses_it_not_a_conflict() -> None:
    """The pre-check and the purchase give one verdict: a malformed selection, naming the
    second mention, whether or not the seat is free."""
    a6, a7 = seat(PARTERRE, "A", 6), seat(PARTERRE, "A", 7)
    for taken in (set(), {(PARTERRE, "A", 6)}):
        with pytest.raises(InvalidCommand) as refused:
            conflicts(SECTIONS, {1: [a6, a7, a6]}, TYPES, taken)
        assert (refused.value.detail, refused.value.field) == (
            "a seat is selected twice",
            "selected_seats.1[2]",
        )


@pytest.mark.parametrize(
    ("selection", "field"),
    [
        ({99: [seat(PARTERRE, "A", 1)]}, "selected_seats.99"),
        ({1: [seat(PARTERRE, "A", 1), seat(PARTERRE, "Z", 1)]}, "selected_seats.1[1]"),
        ({1: [seat(PARTERRE, "A", 11)]}, "selected_seats.1[0]"),
        ({1: [seat(PARTERRE, "A", 0)]}, "selected_seats.1[0]"),
        ({1: [seat(404, "A", 1)]}, "selected_seats.1[0]"),
        ({3: [seat(GULV, "A", 1)]}, "selected_seats.3[0]"),
        ({1: [seat(BALKON, "B", 2), seat(LOGE, "A", 1)]}, "selected_seats.1[1]"),
    ],
)
def test_a_selection_outside_the_venue_or_the_types_sections_is_refused(
    selection: dict[int, list[SeatRef]], field: str
) -> None:
    for check in (
        lambda: check_selection(SECTIONS, selection, TYPES),
        lambda: conflicts(SECTIONS, selection, TYPES, set()),
    ):
        with pytest.raises(InvalidCommand) as refused:
            check()
        assert refused.value.field == field, refused.value.detail


def test_check_seat_names_the_field_it_is_given() -> None:
    by_id = {s.id: s for s in SECTIONS}
    check_seat(by_id, seat(BALKON, "B", 6), "near[0]")
    with pytest.raises(InvalidCommand) as refused:
        check_seat(by_id, seat(BALKON, "B", 7), "near[2]")
    assert refused.value.field == "near[2]"
    assert "not in the venue" in refused.value.detail


@pytest.mark.parametrize("seed", range(20))
def test_the_free_blocks_are_exactly_the_runs_of_untaken_seats(seed: int) -> None:
    """Every free seat of the allowed rows is offered to someone, no taken one ever: asking for
    the whole house returns exactly the free seats, whatever the pattern of taken ones (taken
    seats outside a row's numbers included)."""
    rng = random.Random(seed)
    rows = [Row(identifier=r, start=rng.randint(1, 5), end=rng.randint(6, 30)) for r in "ABCD"]
    hall = Section(id=1, name="Sal", width=100.0, height=50.0, rows=rows)
    seats = {(1, row.identifier, n) for row in rows for n in range(row.start, row.end + 1)}
    taken = {s for s in seats if rng.random() < rng.random()}
    taken |= {(1, "A", 0), (1, "B", 99), (2, "A", 3)}
    chosen = best_available([hall], [1], taken, len(seats))
    assert {(s.section_id, s.row, s.seat_number) for s in chosen} == seats - taken
    assert len(chosen) == len(seats - taken)
