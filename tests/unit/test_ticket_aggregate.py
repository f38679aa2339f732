"""The ticket aggregate without IO: the tickets a paid purchase issues, the gate's one admission
per ticket, and the buyer's edits of the attendee until the event starts or the ticket is used."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from domain import personalization, streams, tickets
from domain.errors import InvalidCommand
from domain.events import Event
from domain.personalization import PersonalizationClosed
from domain.tickets import (
    Consumer,
    ConsumerUpdated,
    TicketScanned,
    TicketState,
)
from tests.unit.builders import (
    NOW,
    SHOW_STARTS,
    pricing,
    purchase_opened,
    purchased_ticket,
    refused,
    replayed,
)

GATES_CLOSE = SHOW_STARTS + tickets.SCANNABLE_AFTER_START
OPENED = purchase_opened(
    tickets=[
        purchased_ticket(1, name="Ann", email="ann@example.com", named=True),
        purchased_ticket(2),
        purchased_ticket(3, seat=None, ticket_type_id=46, ticket_type_name="Ståplads"),
    ],
    pricing=pricing(fee_cents=100),
)


def _issued(
    starts_at: datetime | None = SHOW_STARTS, ends_at: datetime | None = None
) -> dict[str, list[Event]]:
    schedule = tickets.Schedule(starts_at=starts_at, ends_at=ends_at)
    return tickets.issue_tickets(OPENED, NOW, schedule, named={1})


def _then(state: TicketState | None, events: list[Event]) -> TicketState:
    return replayed(tickets.evolve_ticket, state, events)


def _ticket(ticket_id: int = 2, **times: datetime | None) -> TicketState:
    return _then(None, _issued(**times)[streams.ticket(ticket_id)])


# ---- issue -----------------------------------------------------------------------------------


def test_a_paid_purchase_issues_one_ticket_per_stream_carrying_the_purchase() -> None:
    issued = _issued()
    assert list(issued) == ["ticket-1", "ticket-2", "ticket-3"]
    [first] = issued["ticket-1"]
    assert isinstance(first, tickets.TicketIssued)
    assert (first.ticket_id, first.purchase_token, first.code, first.attendee_token) == (
        1,
        "tok",
        "CODE1",
        "att1",
    )
    assert (first.event_id, first.product_slug, first.seat, first.price_cents) == (
        3,
        "hamlet",
        OPENED.tickets[0].seat,
        35000,
    )
    assert (first.holder_name, first.holder_email, first.currency, first.issued_at) == (
        "Ann",
        "ann@example.com",
        "DKK",
        NOW,
    )


def test_the_service_fee_is_split_over_the_tickets_to_the_cent() -> None:
    fees = [_ticket(ticket_id).issued.service_fee_cents for ticket_id in (1, 2, 3)]
    assert fees == [34, 33, 33]


def test_tickets_not_named_at_purchase_need_personalization_until_the_show_starts() -> None:
    named, unnamed = _ticket(1), _ticket(2)
    assert not named.needs_personalization
    assert unnamed.needs_personalization
    assert unnamed.issued.personalization_end == SHOW_STARTS
    assert (unnamed.status, unnamed.holder_name) == ("valid", None)


def test_a_visit_without_a_start_needs_no_personalization_and_scans_until_its_day_ends() -> None:
    day_end = tickets.visit_day_end(date(2026, 4, 2), "Europe/Copenhagen")
    visit = _ticket(2, starts_at=None, ends_at=day_end)
    assert not visit.needs_personalization
    assert visit.issued.scannable_until == day_end


def test_gates_close_six_hours_after_the_start_or_at_a_later_end() -> None:
    assert _ticket().issued.scannable_until == GATES_CLOSE
    long_show = GATES_CLOSE + timedelta(hours=2)
    assert _ticket(ends_at=long_show).issued.scannable_until == long_show


# ---- scan ------------------------------------------------------------------------------------


def test_a_ticket_is_admitted_once() -> None:
    state = _ticket()
    reason, scanned = tickets.scan(state, SHOW_STARTS, 77)
    assert reason == "ok"
    assert scanned == [TicketScanned(ticket_id=2, scanned_at=SHOW_STARTS, api_key_id=77)]
    state = _then(state, scanned)
    assert state.status == "scanned"
    assert tickets.scan(state, SHOW_STARTS + timedelta(seconds=1), 78) == ("already_scanned", [])


def test_gates_refuse_a_ticket_once_they_close() -> None:
    state = _ticket()
    assert tickets.scan(state, GATES_CLOSE, None) == ("expired", [])
    assert tickets.scan(state, GATES_CLOSE - timedelta(microseconds=1), None)[0] == "ok"


def test_a_visit_without_a_date_scans_at_any_time() -> None:
    state = _ticket(starts_at=None, ends_at=None)
    assert tickets.scan(state, NOW + timedelta(days=3650), None)[0] == "ok"


# ---- update_attendee -------------------------------------------------------------------------


def test_naming_the_attendee_personalizes_the_ticket() -> None:
    state = _ticket()
    updated = personalization.update_attendee(state, " Bo ", " bo@example.com ", NOW, "seats[0]")
    bo = Consumer(first_name="Bo", email="bo@example.com")
    assert updated == [ConsumerUpdated(ticket_id=2, consumer=bo, by="buyer")]
    state = _then(state, updated)
    assert (state.holder_name, state.holder_email) == ("Bo", "bo@example.com")
    assert not state.needs_personalization
    assert personalization.update_attendee(state, "Bo", "bo@example.com", NOW, "seats[0]") == []


def test_empty_strings_clear_the_attendee_and_the_ticket_needs_a_name_again() -> None:
    state = _ticket()
    state = _then(
        state, personalization.update_attendee(state, "Bo", "bo@example.com", NOW, "seats[0]")
    )
    cleared = personalization.update_attendee(state, "", "", NOW, "seats[0]")
    assert cleared == [ConsumerUpdated(ticket_id=2, consumer=Consumer(), by="buyer")]
    state = _then(state, cleared)
    assert (state.holder_name, state.holder_email) == (None, None)
    assert state.needs_personalization


def test_a_ticket_named_at_purchase_and_cleared_needs_a_name_like_any_other() -> None:
    state = _ticket(1)
    state = _then(state, personalization.update_attendee(state, "", "", NOW, "seats[0]"))
    assert state.holder_name is None
    assert state.needs_personalization


@pytest.mark.parametrize(
    ("name", "email", "field"),
    [
        ("B" * 201, None, "seats[3].name"),
        ("Bo", "bo.example.com", "seats[3].email"),
        ("Bo", "b@" + "o" * 250 + ".dk", "seats[3].email"),
    ],
)
def test_a_malformed_attendee_is_refused_naming_the_field(
    name: str, email: str | None, field: str
) -> None:
    with refused(InvalidCommand, "invalid_request", field):
        personalization.update_attendee(_ticket(), name, email, NOW, "seats[3]")


def test_the_attendee_can_be_changed_until_the_show_starts() -> None:
    state = _ticket()
    before = SHOW_STARTS - timedelta(microseconds=1)
    assert personalization.update_attendee(state, "Bo", None, before, "seats[0]")
    with refused(PersonalizationClosed, "personalization_closed"):
        personalization.update_attendee(state, "Bo", None, SHOW_STARTS, "seats[0]")


def test_a_scanned_ticket_keeps_its_attendee() -> None:
    state = _ticket(starts_at=None, ends_at=None)
    state = _then(state, tickets.scan(state, NOW, None)[1])
    with refused(PersonalizationClosed, "personalization_closed"):
        personalization.update_attendee(state, "Bo", None, NOW, "seats[0]")
