"""What the sales desk asks of a command: its decision, the discount codes it decides on, and
the seats it pledges.

A sale touches several aggregates at once: the inventory it holds from (an event's seats or an
attraction's days), the discount code it redeems, the purchase it opens and, for a free or paid
purchase, the tickets it issues. Each command (domain/sale_commands.py) is decided on the
inventory's state and the discount codes it names (`companions`, by stream), opening a purchase
(domain/purchase_opening.py) or acting on an open one (domain/purchase_settling.py), and returns
its events per stream in one `Decision`: the sales desk (services/usecases/desk.py) only queues,
batches, appends and retries. Randomness and ids are drawn before the decision (`Draft`); so is
the clock."""

from __future__ import annotations

from typing import Any

from domain import streams
from domain.purchase_opening import open_attraction_purchase, open_event_purchase
from domain.purchase_settling import hold_again, refund_tickets, release_holds
from domain.sale_commands import (
    Companions,
    Decision,
    HoldAgain,
    OpenAttractionPurchase,
    OpenEventPurchase,
    RefundTickets,
    ReleaseHolds,
    SaleCommand,
)
from domain.seating import SeatKey, selected_keys


def decide(command: SaleCommand, inventory: Any, companions: Companions) -> Decision:
    """The one entry the sales desk calls: every sale's decision starts here."""
    match command:
        case OpenEventPurchase():
            return open_event_purchase(command, inventory, companions)
        case OpenAttractionPurchase():
            return open_attraction_purchase(command, inventory, companions)
        case ReleaseHolds():
            return release_holds(command, inventory, companions)
        case HoldAgain():
            return hold_again(command, inventory, companions)
        case RefundTickets():
            return refund_tickets(command, inventory, companions)
    raise TypeError(f"not a sale command: {command!r}")


def seats_chosen(command: SaleCommand) -> frozenset[SeatKey]:
    """The seats a purchase's buyer chose (`selected_seats`): no other seat will do for them,
    so two purchases choosing one of them cannot both go through. Seats left to the desk are
    not claimed: it picks free ones when it decides."""
    if not isinstance(command, OpenEventPurchase) or not command.request.selected_seats:
        return frozenset()
    return frozenset(selected_keys(command.request.selected_seats))


def discount_streams(command: SaleCommand) -> tuple[str, ...]:
    """The discount code streams a command decides on, besides the inventory."""
    match command:
        case OpenEventPurchase() | OpenAttractionPurchase():
            discount_id = command.draft.discount_id
        case ReleaseHolds():
            discount_id = command.opened.discount_id
        case HoldAgain():
            discount_id = command.state.opened.discount_id
        case RefundTickets() if command.refund.whole:
            discount_id = command.opened.discount_id
        case _:
            discount_id = None
    return (streams.discount(discount_id),) if discount_id is not None else ()
