"""Personalization without IO: who may give a ticket's consumer and when (inside the event's
window, never once the ticket is scanned or refunded), what the event requires of it, and that
clearing a required field makes the ticket need personalization again."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from domain import personalization, streams, tickets
from domain.catalog import PersonalizationPolicy, TicketTerms
from domain.errors import InvalidCommand
from domain.personalization import PersonalizationClosed, PersonalizationNotOpen
from domain.tickets import (
    Consumer,
    ConsumerUpdated,
    TicketRefunded,
    TicketState,
)
from tests.unit.builders import NOW, SHOW_STARTS, purchase_opened, purchased_ticket, refused

OPENS = NOW + timedelta(days=1)
CLOSES = SHOW_STARTS - timedelta(days=1)
INSIDE = OPENS + timedelta(hours=1)
REQUIRED = ["first_name", "last_name", "email", "date_of_birth"]
COMPLETE = Consumer(
    first_name="Bo", last_name="Ek", email="bo@example.com", date_of_birth=date(1990, 5, 17)
)


def _ticket(policy: PersonalizationPolicy | None = None, *, named: bool = True) -> TicketState:
    """Ticket 1, bought by Ann, of an event that asks for `policy` (by default REQUIRED inside
    [OPENS, CLOSES))."""
    if policy is None:
        policy = PersonalizationPolicy(required=REQUIRED, starts_at=OPENS, ends_at=CLOSES)
    opened = purchase_opened(
        tickets=[purchased_ticket(1, name="Ann Holm", email="ann@example.com", named=named)]
    )
    schedule = tickets.Schedule(starts_at=SHOW_STARTS, terms=TicketTerms(personalization=policy))
    issued = tickets.issue_tickets(opened, NOW, schedule, named={1} if named else set())
    state = tickets.replay_ticket(issued[streams.ticket(1)])
    assert state is not None
    return state


def _personalized(state: TicketState, consumer: Consumer, at: datetime = INSIDE) -> TicketState:
    for event in personalization.personalize(state, consumer, "partner", at):
        tickets.evolve_ticket(state, event)
    return state


def test_the_window_opens_at_its_start_and_closes_at_its_end() -> None:
    state = _ticket()
    assert personalization.personalize(state, COMPLETE, "partner", OPENS)
    assert personalization.personalize(state, COMPLETE, "buyer", CLOSES - timedelta(microseconds=1))
    with refused(PersonalizationNotOpen, "personalization_not_open"):
        personalization.personalize(state, COMPLETE, "partner", OPENS - timedelta(microseconds=1))
    with refused(PersonalizationClosed, "personalization_closed"):
        personalization.personalize(state, COMPLETE, "partner", CLOSES)


def test_without_a_start_the_window_is_open_from_the_sale_and_ends_when_the_show_starts() -> None:
    state = _ticket(PersonalizationPolicy(required=["first_name"]))
    assert state.issued.personalization_end == SHOW_STARTS
    assert personalization.personalize(state, COMPLETE, "partner", NOW)
    with refused(PersonalizationClosed, "personalization_closed"):
        personalization.personalize(state, COMPLETE, "partner", SHOW_STARTS)


def test_every_change_is_an_event_saying_who_gave_it() -> None:
    state = _ticket()
    assert personalization.personalize(state, COMPLETE, "buyer", INSIDE) == [
        ConsumerUpdated(ticket_id=1, consumer=COMPLETE, by="buyer")
    ]
    state = _personalized(state, COMPLETE)
    assert state.consumer == COMPLETE
    assert personalization.personalize(state, COMPLETE, "partner", INSIDE) == []


def test_a_ticket_named_at_purchase_still_needs_what_the_event_requires() -> None:
    state = _ticket()
    assert (state.holder_name, state.consumer.date_of_birth) == ("Ann Holm", None)
    assert state.needs_personalization
    names_only = Consumer(first_name="Bo", last_name="Ek", email="bo@example.com")
    state = _personalized(state, names_only)
    assert state.needs_personalization
    state = _personalized(state, COMPLETE)
    assert not state.needs_personalization


def test_clearing_a_required_field_makes_the_ticket_need_personalization_again() -> None:
    state = _personalized(_ticket(), COMPLETE)
    cleared = personalization.edited(state.consumer, {"last_name": "", "phone_number": None})
    assert cleared == Consumer(
        first_name="Bo", email="bo@example.com", date_of_birth=COMPLETE.date_of_birth
    )
    state = _personalized(state, cleared)
    assert state.consumer.last_name is None
    assert state.needs_personalization


def test_blank_text_is_no_text_and_countries_are_capitals() -> None:
    state = _ticket()
    given = Consumer(first_name="  Bo ", last_name=" ", email=" bo@example.com ", country="dk")
    [event] = personalization.personalize(state, given, "partner", INSIDE)
    assert isinstance(event, ConsumerUpdated)
    assert event.consumer == Consumer(first_name="Bo", email="bo@example.com", country="DK")


def test_a_scanned_ticket_keeps_its_consumer() -> None:
    state = _ticket()
    tickets.evolve_ticket(state, tickets.scan(state, INSIDE, None)[1][0])
    with refused(PersonalizationClosed, "personalization_closed"):
        personalization.personalize(state, COMPLETE, "partner", INSIDE)


def test_a_refunded_ticket_keeps_its_consumer() -> None:
    state = _ticket()
    tickets.evolve_ticket(state, TicketRefunded(ticket_id=1, refund_id="re_1"))
    with refused(PersonalizationClosed, "personalization_closed"):
        personalization.personalize(state, COMPLETE, "buyer", INSIDE)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"first_name": "B" * 201}, "consumer.first_name"),
        ({"email": "bo.example.com"}, "consumer.email"),
        ({"phone_number": "call me"}, "consumer.phone_number"),
        ({"date_of_birth": date(1899, 12, 31)}, "consumer.date_of_birth"),
        ({"date_of_birth": (INSIDE + timedelta(days=1)).date()}, "consumer.date_of_birth"),
        ({"gender": 3}, "consumer.gender"),
        ({"country": "DNK"}, "consumer.country"),
        ({"postal_code": "1" * 21}, "consumer.postal_code"),
    ],
)
def test_a_malformed_consumer_is_refused_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    given = personalization.edited(COMPLETE, changes)
    with refused(InvalidCommand, "invalid_request", field):
        personalization.personalize(_ticket(), given, "partner", INSIDE, "consumer")


def test_the_buyers_seat_edit_keeps_the_other_details_and_is_the_buyers() -> None:
    state = _personalized(_ticket(), personalization.edited(COMPLETE, {"city": "Aarhus"}))
    [event] = personalization.update_attendee(
        state, "Liv Berg", "liv@example.com", INSIDE, "seats[0]"
    )
    assert isinstance(event, ConsumerUpdated) and event.by == "buyer"
    assert event.consumer == personalization.edited(
        COMPLETE,
        {"first_name": "Liv", "last_name": "Berg", "email": "liv@example.com", "city": "Aarhus"},
    )
    with refused(InvalidCommand, "invalid_request", "seats[0].consumer.date_of_birth"):
        personalization.update_attendee(
            state, "Liv", None, INSIDE, "seats[0]", {"date_of_birth": date(1800, 1, 1)}
        )
