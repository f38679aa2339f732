"""The inventory aggregates without IO: an event's seats, standing places and ticket-type counts,
and an attraction's days, held all or nothing, given back once, held again for a late payment
only while they are still free; and the counts the availability answers show."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from domain.catalog import EventCancelled
from domain.errors import InvalidCommand, NotFound
from domain.inventory import attraction_days, holds, stock
from domain.inventory.events import (
    AttractionTicketsHeld,
    AttractionTicketsReleased,
    HeldSeat,
    SeatRef,
    SeatsHeld,
    SeatsReleased,
)
from domain.venues import Row, Section
from tests.unit.builders import (
    EXTRA,
    FLOOR,
    HALL,
    HOLD_ENDS,
    NOW,
    SECTIONS,
    SHOW_STARTS,
    SHOW_TYPES,
    STAAENDE,
    VOKSEN,
    apply,
    museum_inventory,
    on_sale,
    refused,
    scheduled,
    seat,
    ticket_type,
)

LATER = HOLD_ENDS + timedelta(minutes=5)
DAY = date(2026, 4, 2)


def _hold(
    state: holds.EventInventory,
    quantities: dict[int, int],
    selected: dict[int, list[SeatRef]] | None = None,
    token: str = "p1",
    now: datetime = NOW,
) -> SeatsHeld:
    return holds.hold_seats(
        state,
        SECTIONS,
        token=token,
        quantities=quantities,
        selected=selected or {},
        now=now,
        expires_at=HOLD_ENDS,
    )


def _held(state: holds.EventInventory, *args: Any, **kwargs: Any) -> SeatsHeld:
    """Hold and store the hold."""
    held = _hold(state, *args, **kwargs)
    holds.evolve_inventory(state, held)
    return held


def _release(state: holds.EventInventory, token: str) -> None:
    apply(holds.evolve_inventory, state, holds.release_seats(state, token, "expired"))


# ---- on sale ---------------------------------------------------------------------------------


def test_an_unknown_or_draft_event_is_not_found() -> None:
    draft = apply(holds.evolve_inventory, holds.EventInventory(), [scheduled()])
    for state in (holds.EventInventory(), draft):
        with refused(NotFound, "not_found", "event_slug"):
            _hold(state, {VOKSEN: 1})


@pytest.mark.parametrize(
    ("changes", "now", "detail"),
    [
        ({"sales_start_date": NOW + timedelta(hours=1)}, NOW, "ticket sales have not started"),
        ({"sales_end_date": NOW}, NOW, "ticket sales have ended"),
        ({}, SHOW_STARTS, "ticket sales have ended"),
        (
            {"sales_end_date": SHOW_STARTS + timedelta(days=1)},
            SHOW_STARTS,
            "ticket sales have ended",
        ),
    ],
)
def test_nothing_is_held_outside_the_sales_window(
    changes: dict, now: datetime, detail: str
) -> None:
    with refused(InvalidCommand, "invalid_request", "event_slug") as caught:
        _hold(on_sale(**changes), {VOKSEN: 1}, now=now)
    assert caught.value.detail == detail


def test_sales_run_from_their_start_to_the_moment_before_the_show() -> None:
    state = on_sale(sales_start_date=NOW)
    assert _hold(state, {VOKSEN: 1}, now=NOW).counts == {VOKSEN: 1}
    assert _hold(state, {VOKSEN: 1}, now=SHOW_STARTS - timedelta(microseconds=1)).seats


def test_a_cancelled_event_sells_nothing() -> None:
    state = apply(holds.evolve_inventory, on_sale(), [EventCancelled(event_id=3)])
    with refused(InvalidCommand, "invalid_request", "event_slug") as caught:
        _hold(state, {VOKSEN: 1})
    assert caught.value.detail == "the event is cancelled"


# ---- seats -----------------------------------------------------------------------------------


def test_a_hold_records_the_purchases_seats_by_type_and_its_counts() -> None:
    state = on_sale()
    held = _hold(state, {VOKSEN: 2, STAAENDE: 0}, {VOKSEN: [seat("B", 4), seat("A", 1)]})
    assert held == SeatsHeld(
        event_id=3,
        purchase_token="p1",
        seats=[
            HeldSeat(ticket_type_id=VOKSEN, section_id=HALL, row="B", seat_number=4),
            HeldSeat(ticket_type_id=VOKSEN, section_id=HALL, row="A", seat_number=1),
        ],
        counts={VOKSEN: 2},
        expires_at=HOLD_ENDS,
    )
    holds.evolve_inventory(state, held)
    assert state.taken == {(HALL, "B", 4): "p1", (HALL, "A", 1): "p1"}
    assert (state.taken_per_type[VOKSEN], state.taken_per_section[HALL]) == (2, 2)
    with refused(holds.SeatsTaken, "seats_taken"):
        _hold(state, {VOKSEN: 1}, {VOKSEN: [seat("A", 1)]}, token="p2")
    # The same draft decided again (an owner that answered too late): its own purchase's seats.
    with pytest.raises(holds.DecidedBefore):
        _hold(state, {VOKSEN: 1}, {VOKSEN: [seat("A", 1)]}, token="p1")


def test_a_type_chosen_for_by_best_available_sits_beside_the_seats_selected_for_another() -> None:
    twins = [*SHOW_TYPES, ticket_type(EXTRA, section_ids=[HALL])]
    centre = [seat("A", 2), seat("A", 3)]
    held = _hold(on_sale(ticket_types=twins), {VOKSEN: 2, EXTRA: 2}, {EXTRA: centre})
    assert [(s.ticket_type_id, s.row, s.seat_number) for s in held.seats] == [
        (VOKSEN, "A", 1),
        (VOKSEN, "A", 4),
        (EXTRA, "A", 2),
        (EXTRA, "A", 3),
    ]


def test_a_party_of_several_types_sits_together_where_all_of_them_may_sit() -> None:
    twins = [*SHOW_TYPES, ticket_type(EXTRA, section_ids=[HALL])]
    state = on_sale(ticket_types=twins)
    _held(state, {VOKSEN: 2}, {VOKSEN: [seat("A", 3), seat("A", 4)]}, token="p0")
    # Type by type, the adults would take A1-A2 (the front) and the others B2-B3.
    held = _hold(state, {VOKSEN: 2, EXTRA: 2})
    assert [(s.ticket_type_id, s.row, s.seat_number) for s in held.seats] == [
        (VOKSEN, "B", 1),
        (VOKSEN, "B", 2),
        (EXTRA, "B", 3),
        (EXTRA, "B", 4),
    ]


def test_a_party_with_too_few_seats_where_all_may_sit_takes_each_types_best() -> None:
    side = Section(
        id=14, name="Side", width=10.0, height=10.0, rows=[Row(identifier="A", start=1, end=4)]
    )
    sections = [*SECTIONS, side]
    types = [
        ticket_type(VOKSEN, section_ids=[HALL, 14]),
        ticket_type(EXTRA, section_ids=[14]),
        ticket_type(STAAENDE, section_ids=[FLOOR]),
    ]
    state = on_sale(ticket_types=types)
    held = holds.hold_seats(
        state,
        sections,
        token="p1",
        quantities={VOKSEN: 3, EXTRA: 2},
        selected={},
        now=NOW,
        expires_at=HOLD_ENDS,
    )
    by_type = {(s.ticket_type_id, s.section_id) for s in held.seats}
    assert by_type == {(VOKSEN, HALL), (EXTRA, 14)}


@pytest.mark.parametrize(
    ("quantities", "selected", "field"),
    [
        ({VOKSEN: 1}, {STAAENDE: [seat("A", 1)]}, "selected_seats"),
        ({VOKSEN: 2}, {VOKSEN: [seat("A", 1)]}, f"selected_seats.{VOKSEN}"),
        ({VOKSEN: 1}, {VOKSEN: [seat("A", 1, FLOOR)]}, f"selected_seats.{VOKSEN}[0]"),
        ({VOKSEN: 1}, {VOKSEN: [seat("A", 5)]}, f"selected_seats.{VOKSEN}[0]"),
    ],
)
def test_a_selection_that_does_not_fit_the_request_is_refused_naming_the_field(
    quantities: dict[int, int], selected: dict[int, list[SeatRef]], field: str
) -> None:
    with refused(InvalidCommand, "invalid_request", field):
        _hold(on_sale(), quantities, selected)


def test_a_seat_selected_for_two_types_is_refused_at_its_second_mention() -> None:
    twins = [*SHOW_TYPES, ticket_type(EXTRA, section_ids=[HALL])]
    with refused(InvalidCommand, "invalid_request", f"selected_seats.{EXTRA}[0]"):
        _hold(
            on_sale(ticket_types=twins),
            {VOKSEN: 1, EXTRA: 1},
            {EXTRA: [seat("A", 1)], VOKSEN: [seat("A", 1)]},
        )


def test_seats_selected_for_a_standing_type_are_refused_as_the_pre_check_refuses_them() -> None:
    with refused(InvalidCommand, "invalid_request", f"selected_seats.{STAAENDE}[0]"):
        _hold(on_sale(), {STAAENDE: 1}, {STAAENDE: [seat("A", 1)]})


def test_a_seated_types_own_capacity_caps_it_below_its_sections_seats() -> None:
    state = on_sale(ticket_types=[ticket_type(VOKSEN, section_ids=[HALL], capacity=2)])
    with refused(holds.InsufficientAvailability, "insufficient_availability"):
        _hold(state, {VOKSEN: 3})
    _held(state, {VOKSEN: 2})
    with refused(holds.InsufficientAvailability, "insufficient_availability"):
        _hold(state, {VOKSEN: 1}, {VOKSEN: [seat("B", 1)]}, token="p2")


# ---- standing and unseated -------------------------------------------------------------------


def test_standing_places_are_counted_not_seated_and_come_back_on_release() -> None:
    state = on_sale()
    held = _held(state, {STAAENDE: 5})
    assert (held.seats, held.counts) == ([], {STAAENDE: 5})
    with refused(holds.InsufficientAvailability, "insufficient_availability") as caught:
        _hold(state, {STAAENDE: 1}, token="p2")
    assert caught.value.detail == "only 0 left of Ståplads"
    _release(state, "p1")
    assert _hold(state, {STAAENDE: 5}, token="p2").counts == {STAAENDE: 5}


def test_types_sharing_a_standing_floor_share_its_places() -> None:
    vip = ticket_type(EXTRA, name="VIP", section_ids=[FLOOR])
    state = on_sale(ticket_types=[*SHOW_TYPES, vip])
    _held(state, {STAAENDE: 3})
    with refused(holds.InsufficientAvailability, "insufficient_availability"):
        _hold(state, {EXTRA: 3}, token="p2")
    assert _hold(state, {EXTRA: 2}, token="p2").counts == {EXTRA: 2}


def test_a_type_without_sections_sells_its_capacity() -> None:
    state = on_sale(ticket_types=[ticket_type(EXTRA, capacity=2)])
    _held(state, {EXTRA: 2})
    with refused(holds.InsufficientAvailability, "insufficient_availability"):
        _hold(state, {EXTRA: 1}, token="p2")


# ---- release and hold again ------------------------------------------------------------------


def test_a_release_gives_back_exactly_what_the_purchase_held_once() -> None:
    state = on_sale()
    held = _held(state, {VOKSEN: 2, STAAENDE: 1})
    released = holds.release_seats(state, "p1", "cancelled")
    assert released == [
        SeatsReleased(
            event_id=3,
            purchase_token="p1",
            seats=held.seats,
            counts={VOKSEN: 2, STAAENDE: 1},
            reason="cancelled",
        )
    ]
    apply(holds.evolve_inventory, state, released)
    assert (state.taken, state.holds) == ({}, {})
    assert (state.taken_per_type[VOKSEN], state.taken_per_type[STAAENDE]) == (0, 0)
    assert state.taken_per_section[HALL] == 0
    assert holds.release_seats(state, "p1", "cancelled") == []
    assert holds.release_seats(state, "never-held", "expired") == []


def test_a_late_payment_takes_its_seats_again_while_they_are_free() -> None:
    state = on_sale()
    held = _held(state, {VOKSEN: 2})
    _release(state, "p1")
    again = holds.rehold_seats(state, SECTIONS, held, LATER)
    assert again == SeatsHeld(
        event_id=3, purchase_token="p1", seats=held.seats, counts=held.counts, expires_at=LATER
    )


def test_a_late_payment_does_not_take_a_seat_sold_meanwhile() -> None:
    state = on_sale()
    held = _held(state, {VOKSEN: 2}, {VOKSEN: [seat("A", 1), seat("A", 2)]})
    _release(state, "p1")
    _held(state, {VOKSEN: 1}, {VOKSEN: [seat("A", 2)]}, token="p2")
    with refused(holds.SeatsTaken, "seats_taken"):
        holds.rehold_seats(state, SECTIONS, held, LATER)


def test_a_late_payment_does_not_exceed_its_types_capacity() -> None:
    state = on_sale(ticket_types=[ticket_type(VOKSEN, section_ids=[HALL], capacity=2)])
    held = _held(state, {VOKSEN: 2}, {VOKSEN: [seat("A", 1), seat("A", 2)]})
    _release(state, "p1")
    _held(state, {VOKSEN: 2}, {VOKSEN: [seat("B", 1), seat("B", 2)]}, token="p2")
    with refused(holds.InsufficientAvailability, "insufficient_availability"):
        holds.rehold_seats(state, SECTIONS, held, LATER)


def test_a_late_payment_does_not_take_standing_places_sold_meanwhile() -> None:
    state = on_sale()
    held = _held(state, {STAAENDE: 3})
    _release(state, "p1")
    _held(state, {STAAENDE: 5}, token="p2")
    with refused(holds.InsufficientAvailability, "insufficient_availability"):
        holds.rehold_seats(state, SECTIONS, held, LATER)


def test_a_batch_decides_on_a_clone_and_the_stored_state_stays_as_it_was() -> None:
    state = on_sale()
    batch = holds.clone_inventory(state)
    _held(batch, {VOKSEN: 1, STAAENDE: 1}, {VOKSEN: [seat("A", 1)]})
    assert (state.taken, state.holds, state.taken_by_row) == ({}, {}, {})
    assert state.taken_per_type[STAAENDE] == 0
    assert _hold(state, {VOKSEN: 1}, {VOKSEN: [seat("A", 1)]}, token="p2").seats


# ---- attraction days -------------------------------------------------------------------------


def _visit(
    state: attraction_days.AttractionInventory,
    quantities: dict[int, int],
    visit_date: date | None = DAY,
    token: str = "v1",
) -> AttractionTicketsHeld:
    return attraction_days.hold_attraction_tickets(
        state,
        token=token,
        quantities=quantities,
        visit_date=visit_date,
        today=NOW.date(),
        expires_at=HOLD_ENDS,
    )


def _visited(
    state: attraction_days.AttractionInventory, *args: Any, **kwargs: Any
) -> AttractionTicketsHeld:
    held = _visit(state, *args, **kwargs)
    attraction_days.evolve_attraction(state, held)
    return held


def test_an_unknown_attraction_is_not_found() -> None:
    with refused(NotFound, "not_found", "attraction_slug"):
        _visit(attraction_days.AttractionInventory(), {7: 1})


def test_an_attraction_hold_records_its_day_and_counts() -> None:
    state = museum_inventory(ticket_types=[ticket_type(7), ticket_type(8)])
    held = _visited(state, {7: 2, 8: 0})
    assert held == AttractionTicketsHeld(
        attraction_id=5, purchase_token="v1", visit_date=DAY, counts={7: 2}, expires_at=HOLD_ENDS
    )
    assert (state.taken_per_day[DAY], state.taken_per_type[7]) == (2, 2)


def test_a_days_last_places_are_sold_and_a_release_gives_them_back_once() -> None:
    state = museum_inventory(daily_max_tickets=3)
    _visited(state, {7: 3})
    with refused(attraction_days.DailyCapacityExceeded, "daily_capacity_exceeded") as caught:
        _visit(state, {7: 1}, token="v2")
    assert caught.value.detail == f"only 0 places left on {DAY}"
    released = attraction_days.release_attraction_tickets(state, "v1", "expired")
    assert released == [
        AttractionTicketsReleased(
            attraction_id=5, purchase_token="v1", visit_date=DAY, counts={7: 3}, reason="expired"
        )
    ]
    apply(attraction_days.evolve_attraction, state, released)
    assert (state.taken_per_day[DAY], state.taken_per_type[7], state.holds) == (0, 0, {})
    assert attraction_days.release_attraction_tickets(state, "v1", "expired") == []
    assert _visit(state, {7: 3}, token="v2").counts == {7: 3}


def test_an_attraction_types_capacity_holds_across_days() -> None:
    state = museum_inventory(ticket_types=[ticket_type(7, name="Rundvisning", capacity=2)])
    _visited(state, {7: 2})
    with refused(holds.InsufficientAvailability, "insufficient_availability") as caught:
        _visit(state, {7: 1}, DAY + timedelta(days=1), token="v2")
    assert caught.value.detail == "not enough Rundvisning tickets left"


def test_a_late_visit_payment_takes_its_places_again_while_the_day_and_type_have_them() -> None:
    state = museum_inventory(daily_max_tickets=3)
    held = _visited(state, {7: 2})
    apply(
        attraction_days.evolve_attraction,
        state,
        attraction_days.release_attraction_tickets(state, "v1", "expired"),
    )
    assert attraction_days.rehold_attraction_tickets(state, held) == held
    _visited(state, {7: 2}, token="v2")
    with refused(attraction_days.DailyCapacityExceeded, "daily_capacity_exceeded"):
        attraction_days.rehold_attraction_tickets(state, held)


def test_a_late_visit_payment_does_not_exceed_its_types_capacity() -> None:
    state = museum_inventory(ticket_types=[ticket_type(7, capacity=2)])
    held = _visited(state, {7: 2})
    apply(
        attraction_days.evolve_attraction,
        state,
        attraction_days.release_attraction_tickets(state, "v1", "expired"),
    )
    _visited(state, {7: 1}, DAY + timedelta(days=1), token="v2")
    with refused(holds.InsufficientAvailability, "insufficient_availability"):
        attraction_days.rehold_attraction_tickets(state, held)


def test_an_attraction_batch_decides_on_a_clone() -> None:
    state = museum_inventory(daily_max_tickets=3)
    _visited(attraction_days.clone_attraction(state), {7: 3})
    assert (state.taken_per_day[DAY], state.holds) == (0, {})
    assert _visit(state, {7: 3}).counts == {7: 3}


# ---- counts shown ----------------------------------------------------------------------------


def test_available_per_type_counts_seats_shared_floors_and_capacities() -> None:
    types = [
        ticket_type(VOKSEN, section_ids=[HALL]),
        ticket_type(STAAENDE, section_ids=[FLOOR]),
        ticket_type(EXTRA, section_ids=[FLOOR], capacity=1),
        ticket_type(48, capacity=10),
        ticket_type(49, section_ids=[HALL], capacity=3),
    ]
    taken_per_type = {VOKSEN: 2, STAAENDE: 3, 48: 4, 49: 1}
    available = stock.available_per_type(SECTIONS, types, {HALL: 3}, taken_per_type)
    assert available == {VOKSEN: 5, STAAENDE: 2, EXTRA: 1, 48: 6, 49: 2}
    full = stock.available_per_type(SECTIONS, types, {HALL: 8}, {STAAENDE: 6, 48: 11})
    assert full == {VOKSEN: 0, STAAENDE: 0, EXTRA: 0, 48: 0, 49: 0}


def test_a_section_gone_from_the_plan_has_nothing_left_to_sell() -> None:
    """An event cancelled or over may name a section its venue's plan has since dropped: its
    types count nothing there, where the lookup failed every read of the event."""
    types = [
        ticket_type(VOKSEN, section_ids=[HALL, 404]),
        ticket_type(STAAENDE, section_ids=[404]),
        ticket_type(EXTRA, section_ids=[404], capacity=5),
    ]
    available = stock.available_per_type(SECTIONS, types, {HALL: 3}, {STAAENDE: 1})
    assert available == {VOKSEN: 5, STAAENDE: 0, EXTRA: 0}


@pytest.mark.parametrize(
    ("listing", "changes", "available", "status"),
    [
        ("draft", {"sales_start": NOW + timedelta(days=1)}, [0], "draft"),
        ("cancelled", {"sales_start": NOW + timedelta(days=1)}, [0], "cancelled"),
        ("published", {"sales_start": NOW + timedelta(days=1)}, [0], "sales_not_started"),
        ("published", {"sales_end": NOW}, [5], "sales_ended"),
        ("published", {"event_date": NOW}, [5], "sales_ended"),
        ("published", {"sales_end": SHOW_STARTS + timedelta(days=1)}, [0, 0], "sold_out"),
        ("published", {}, [0, 1], "available"),
    ],
)
def test_an_events_status_is_draft_cancelled_then_its_sales_window_then_stock(
    listing: str, changes: dict, available: list[int], status: str
) -> None:
    window = {"sales_start": None, "sales_end": None, "event_date": SHOW_STARTS} | changes
    assert stock.event_status(listing, now=NOW, available=available, **window) == status
