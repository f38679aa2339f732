"""Changing a venue's plan: sections keep their ids or get fresh ones, the plan is validated as
at registration, and a seat already held or sold cannot be planned away."""

from __future__ import annotations

import pytest

from domain import catalog as c
from domain.errors import InvalidCommand

ROW_A = c.Row(identifier="A", start=1, end=10)
VENUE = c.register_venue(
    c.RegisterVenue(
        key="hall",
        name="Hall",
        sections=[c.SectionPlan(name="Sal", width=10, height=10, rows=[ROW_A])],
    ),
    organization_id=1,
    venue_id=7,
    section_ids=[70],
)[0]
assert isinstance(VENUE, c.VenueRegistered)


def _hall(rows: list[c.Row], section_id: int | None = 70) -> c.PlannedSection:
    return c.PlannedSection(id=section_id, name="Sal", width=10, height=10, rows=rows)


def test_a_changed_plan_keeps_ids_and_numbers_new_sections() -> None:
    rows = [ROW_A, c.Row(identifier="B", start=1, end=5)]
    cmd = c.ChangeSeatPlan(sections=[_hall(rows), _hall([ROW_A], None)])
    (changed,) = c.change_seat_plan(cmd, VENUE, [71], taken=[(70, "A", 3)])
    assert isinstance(changed, c.VenuePlanChanged) and changed.venue_id == 7
    assert [s.id for s in changed.sections] == [70, 71]
    state = c.evolve_venue(c.evolve_venue(None, VENUE), changed)
    assert state is not None and state.sections == changed.sections and state.name == "Hall"


def test_the_same_plan_records_nothing() -> None:
    assert c.change_seat_plan(c.ChangeSeatPlan(sections=[_hall([ROW_A])]), VENUE, []) == []


@pytest.mark.parametrize(
    "sections",
    [
        [],
        [_hall([c.Row(identifier="A", start=5, end=1)])],
        [_hall([ROW_A], 99)],
        [_hall([ROW_A]), _hall([ROW_A])],
    ],
    ids=["empty", "bad-row", "foreign-id", "twice"],
)
def test_an_invalid_plan_is_refused(sections: list[c.PlannedSection]) -> None:
    with pytest.raises(InvalidCommand):
        c.change_seat_plan(c.ChangeSeatPlan(sections=sections), VENUE, [])


@pytest.mark.parametrize(
    ("sections", "new_ids"),
    [
        ([_hall([c.Row(identifier="A", start=4, end=10)])], []),
        ([_hall([ROW_A], None)], [71]),
    ],
    ids=["seat-dropped", "section-replaced"],
)
def test_a_plan_without_a_sold_seat_is_refused(
    sections: list[c.PlannedSection], new_ids: list[int]
) -> None:
    with pytest.raises(InvalidCommand, match="held or sold"):
        cmd = c.ChangeSeatPlan(sections=sections)
        c.change_seat_plan(cmd, VENUE, new_ids, taken=[(70, "A", 3)])
