"""What the sales desk decides on a purchase once it is open: its payment with the tickets it
issues, its end unpaid (its holds and discount use given back), its refunded tickets' seats or
places returned, and its hold again when a payment comes after the hold was let go. Each comes
to one append, so no purchase is paid without its tickets, nor ended or refunded without giving
its seats back."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import msgspec

from domain import discounts, purchasing, streams, tickets
from domain.errors import DomainError
from domain.events import Event
from domain.inventory import attraction_days, holds
from domain.inventory.events import AttractionTicketsHeld, HeldSeat, SeatsHeld
from domain.purchasing import PurchaseOpened, PurchaseState
from domain.sale_commands import Companions, Decision, HoldAgain, RefundTickets, ReleaseHolds

Inventory = holds.EventInventory | attraction_days.AttractionInventory


class SettledMeanwhile(DomainError):
    """Another delivery of a late payment held the seats again first: this one must read the
    purchase again (it will find the payment applied)."""

    code = "settled_meanwhile"


def release_holds(command: ReleaseHolds, inventory: Inventory, companions: Companions) -> Decision:
    opened, token = command.opened, command.opened.token
    if opened.event_id is not None:
        inventory_stream = streams.event(opened.event_id)
        released = holds.release_seats(inventory, token, command.reason)
    else:
        assert opened.attraction_id is not None
        inventory_stream = streams.attraction(opened.attraction_id)
        released = attraction_days.release_attraction_tickets(inventory, token, command.reason)
    purchase = streams.purchase(token)
    events: dict[str, list[Event]] = {inventory_stream: released, purchase: command.ending}
    if opened.discount_id is not None:
        code = companions.get(streams.discount(opened.discount_id))
        if code is not None:
            events[streams.discount(opened.discount_id)] = discounts.release(code, token)
    return Decision(events, expected={purchase: command.purchase_version})


def refund_tickets(
    command: RefundTickets, inventory: Inventory, companions: Companions
) -> Decision:
    opened, refund = command.opened, command.refund
    counts = dict(Counter(t.ticket_type_id for t in refund.returned))
    back: list[Event]
    if opened.event_id is not None:
        assert isinstance(inventory, holds.EventInventory)
        inventory_stream = streams.event(opened.event_id)
        seats = [
            HeldSeat(ticket_type_id=t.ticket_type_id, **msgspec.structs.asdict(t.seat))
            for t in refund.returned
            if t.seat is not None
        ]
        back = holds.return_seats(inventory, opened.token, seats, counts, "refunded")
    else:
        assert isinstance(inventory, attraction_days.AttractionInventory)
        assert opened.attraction_id is not None
        inventory_stream = streams.attraction(opened.attraction_id)
        back = attraction_days.return_attraction_tickets(
            inventory, opened.token, counts, "refunded"
        )
    events: dict[str, list[Event]] = {inventory_stream: back, **refund.events}
    if refund.whole and opened.discount_id is not None:
        code = companions.get(streams.discount(opened.discount_id))
        if code is not None:
            events[streams.discount(opened.discount_id)] = discounts.release(code, opened.token)
    return Decision(events, result=refund, expected=command.expected)


def hold_again(command: HoldAgain, inventory: Inventory, companions: Companions) -> Decision:
    """The seats (or places) again, and the discount use the purchase gave back with them: a
    code at its limit by now refuses, as taken seats do, and the payment is given back."""
    state, now = command.state, command.now
    opened = state.opened
    purchase = streams.purchase(opened.token)
    if opened.token in inventory.holds:
        # Another delivery of this payment has held the seats again, in this batch or in one
        # this delivery's read of the purchase did not see.
        raise SettledMeanwhile("the late payment was settled meanwhile")
    before = previous_hold(opened, now)
    if isinstance(before, SeatsHeld):
        assert isinstance(inventory, holds.EventInventory)
        held: Event = holds.rehold_seats(inventory, command.sections, before, now)
        inventory_stream = streams.event(before.event_id)
    else:
        assert isinstance(inventory, attraction_days.AttractionInventory)
        held = attraction_days.rehold_attraction_tickets(inventory, before)
        inventory_stream = streams.attraction(before.attraction_id)
    events: dict[str, list[Event]] = {inventory_stream: [held]}
    if opened.discount_id is not None:
        code = companions.get(streams.discount(opened.discount_id))
        if code is not None:
            events[streams.discount(opened.discount_id)] = discounts.redeem_again(
                code, opened.token
            )
    paid = paid_with_tickets(state, command.intent_id, now, command.schedule, late=True)
    expected = dict.fromkeys(paid, streams.NEW) | {purchase: command.purchase_version}
    return Decision(events | paid, expected=expected)


def paid_with_tickets(
    state: PurchaseState,
    intent_id: str | None,
    now: datetime,
    schedule: tickets.Schedule,
    *,
    late: bool = False,
) -> dict[str, list[Event]]:
    """A payment and the tickets it issues, for one append: never a paid purchase without
    its tickets, never a ticket for an unpaid purchase."""
    paid = purchasing.pay(state, intent_id, now, late=late)
    if not paid:
        return {}
    opened = state.opened
    issued = tickets.issue_tickets(
        opened, now, schedule, named={t.id for t in opened.tickets if t.named}
    )
    return {streams.purchase(opened.token): paid, **issued}


def previous_hold(
    opened: PurchaseOpened, expires_at: datetime
) -> SeatsHeld | AttractionTicketsHeld:
    """The hold a purchase had, rebuilt from what it bought (to hold again after a late
    payment)."""
    counts: dict[int, int] = {}
    for t in opened.tickets:
        counts[t.ticket_type_id] = counts.get(t.ticket_type_id, 0) + 1
    if opened.attraction_id is not None:
        return AttractionTicketsHeld(
            attraction_id=opened.attraction_id,
            purchase_token=opened.token,
            visit_date=opened.visit_date,
            counts=counts,
            expires_at=expires_at,
        )
    assert opened.event_id is not None
    return SeatsHeld(
        event_id=opened.event_id,
        purchase_token=opened.token,
        seats=[
            HeldSeat(ticket_type_id=t.ticket_type_id, **msgspec.structs.asdict(t.seat))
            for t in opened.tickets
            if t.seat is not None
        ],
        counts=counts,
        expires_at=expires_at,
    )
