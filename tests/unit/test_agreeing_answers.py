"""One rule behind each pair of answers: the visit days an attraction sells and the availability
it shows, the seat pre-check and the purchase, the gate's last moment of a visit day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain import catalog, tickets
from domain.catalog import OpeningHours, TicketType
from domain.errors import InvalidCommand
from domain.inventory import attraction_days
from domain.inventory.attraction_days import local_date, visit_day
from domain.inventory.events import SeatRef
from domain.seat_selection import conflicts
from tests.unit.test_selling import _event, _hold

MUSEUM = catalog.AttractionOpened(
    attraction_id=5,
    organization_id=1,
    venue_id=2,
    slug="m",
    name="M",
    description=None,
    visit_date_required=True,
    daily_max_tickets=None,
    opening_hours={"fri": OpeningHours(open="10:00", close="18:00")},
    ticket_types=[TicketType(id=7, name="Voksen", price_cents=100)],
)
FRIDAY = date(2026, 5, 1)


def test_a_visit_day_is_past_by_the_organizations_calendar_not_utc() -> None:
    """23:30 UTC on Friday is already Saturday in Copenhagen: Friday can no longer be sold
    there, while in New York it is still Friday afternoon."""
    moment = datetime(2026, 5, 1, 23, 30, tzinfo=UTC)
    assert visit_day(MUSEUM, FRIDAY, local_date(moment, "Europe/Copenhagen")) == "past"
    assert visit_day(MUSEUM, FRIDAY, local_date(moment, "America/New_York")) == "open"
    assert visit_day(MUSEUM, FRIDAY + timedelta(days=1), FRIDAY) == "closed"


@pytest.mark.parametrize(
    ("day", "detail"),
    [
        (FRIDAY - timedelta(days=7), "visit_date is in the past"),
        (FRIDAY + timedelta(days=1), "the attraction is closed on that day"),
    ],
)
def test_the_purchase_refuses_the_days_availability_reports(day: date, detail: str) -> None:
    state = attraction_days.evolve_attraction(attraction_days.AttractionInventory(), MUSEUM)
    with pytest.raises(InvalidCommand) as refused:
        attraction_days.hold_attraction_tickets(
            state,
            token="t",
            quantities={7: 1},
            visit_date=day,
            today=FRIDAY,
            expires_at=datetime(2026, 5, 1, tzinfo=UTC),
        )
    assert (refused.value.detail, refused.value.field) == (detail, "visit_date")
    assert visit_day(MUSEUM, day, FRIDAY) != "open"


def test_a_visit_ticket_scans_until_the_local_end_of_its_day() -> None:
    summer = tickets.visit_day_end(FRIDAY, "Europe/Copenhagen")
    winter = tickets.visit_day_end(date(2026, 1, 9), "Europe/Copenhagen")
    assert summer == datetime(2026, 5, 1, 22, tzinfo=UTC)
    assert winter == datetime(2026, 1, 9, 23, tzinfo=UTC)
    assert tickets.scannable_until(None, summer) == summer
    assert tickets.scannable_until(None, None) is None
    start = datetime(2026, 5, 1, 17, tzinfo=UTC)
    assert tickets.scannable_until(start, None) == start + timedelta(hours=6)


def test_the_purchase_and_the_pre_check_refuse_a_seat_listed_twice_alike() -> None:
    state, sections = _event()
    seat = SeatRef(section_id=12, row="A", seat_number=2)
    with pytest.raises(InvalidCommand) as bought:
        _hold(state, sections, "p", 2, [seat, seat])
    types = state.ticket_types
    with pytest.raises(InvalidCommand) as checked:
        conflicts(sections, {45: [seat, seat]}, types, set())
    assert (bought.value.detail, bought.value.field) == (checked.value.detail, checked.value.field)
    assert bought.value.field == "selected_seats.45[1]"
