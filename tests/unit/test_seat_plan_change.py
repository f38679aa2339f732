"""Changing a venue's plan: sections keep their ids or get fresh ones, the plan is validated as
at registration, and neither a seat already held or sold nor a section a ticket type sells
from can be planned away."""

from __future__ import annotations

import pytest

from domain import venues
from domain.errors import InvalidCommand

ROW_A = venues.Row(identifier="A", start=1, end=10)
VENUE = venues.register_venue(
    venues.RegisterVenue(
        key="hall",
        name="Hall",
        sections=[venues.SectionPlan(name="Sal", width=10, height=10, rows=[ROW_A])],
    ),
    organization_id=1,
    venue_id=7,
    section_ids=[70],
)[0]
assert isinstance(VENUE, venues.VenueRegistered)


def _hall(rows: list[venues.Row], section_id: int | None = 70) -> venues.PlannedSection:
    return venues.PlannedSection(id=section_id, name="Sal", width=10, height=10, rows=rows)


def test_a_changed_plan_keeps_ids_and_numbers_new_sections() -> None:
    rows = [ROW_A, venues.Row(identifier="B", start=1, end=5)]
    cmd = venues.ChangeSeatPlan(sections=[_hall(rows), _hall([ROW_A], None)])
    (changed,) = venues.change_seat_plan(cmd, VENUE, [71], taken=[(70, "A", 3)])
    assert isinstance(changed, venues.VenuePlanChanged) and changed.venue_id == 7
    assert [s.id for s in changed.sections] == [70, 71]
    state = venues.evolve_venue(venues.evolve_venue(None, VENUE), changed)
    assert state is not None and state.sections == changed.sections and state.name == "Hall"


def test_the_same_plan_records_nothing() -> None:
    assert (
        venues.change_seat_plan(venues.ChangeSeatPlan(sections=[_hall([ROW_A])]), VENUE, []) == []
    )


@pytest.mark.parametrize(
    "sections",
    [
        [],
        [_hall([venues.Row(identifier="A", start=5, end=1)])],
        [_hall([ROW_A], 99)],
        [_hall([ROW_A]), _hall([ROW_A])],
    ],
    ids=["empty", "bad-row", "foreign-id", "twice"],
)
def test_an_invalid_plan_is_refused(sections: list[venues.PlannedSection]) -> None:
    with pytest.raises(InvalidCommand):
        venues.change_seat_plan(venues.ChangeSeatPlan(sections=sections), VENUE, [])


@pytest.mark.parametrize(
    ("sections", "new_ids"),
    [
        ([_hall([venues.Row(identifier="A", start=4, end=10)])], []),
        ([_hall([ROW_A], None)], [71]),
    ],
    ids=["seat-dropped", "section-replaced"],
)
def test_a_plan_without_a_sold_seat_is_refused(
    sections: list[venues.PlannedSection], new_ids: list[int]
) -> None:
    with pytest.raises(InvalidCommand, match=r"held or sold .*\(first: section 70 row A seat 3\)"):
        cmd = venues.ChangeSeatPlan(sections=sections)
        venues.change_seat_plan(cmd, VENUE, new_ids, taken=[(70, "A", 3)])


SOLD_IN = {70: "ticket type 5 (Alm) of event 3"}


def test_a_section_a_ticket_type_sells_from_stays_in_the_plan() -> None:
    cmd = venues.ChangeSeatPlan(sections=[_hall([ROW_A], None)])
    with pytest.raises(InvalidCommand, match=r"section 70 \(Sal\) is sold by ticket type 5"):
        venues.change_seat_plan(cmd, VENUE, [71], sold_in=SOLD_IN)
    (changed,) = venues.change_seat_plan(cmd, VENUE, [71], sold_in={})
    assert [s.id for s in changed.sections] == [71]


def test_a_section_a_ticket_type_sells_from_stays_seated() -> None:
    standing = venues.PlannedSection(
        id=70, name="Sal", seating_mode="standing", width=10, height=10, standing_capacity=50
    )
    cmd = venues.ChangeSeatPlan(sections=[standing])
    with pytest.raises(InvalidCommand, match="stays seated"):
        venues.change_seat_plan(cmd, VENUE, [], sold_in=SOLD_IN)
    longer = venues.ChangeSeatPlan(sections=[_hall([venues.Row(identifier="A", start=1, end=20)])])
    assert venues.change_seat_plan(longer, VENUE, [], sold_in=SOLD_IN) != []
