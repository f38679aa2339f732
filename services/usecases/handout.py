"""Handing a ticket to its holder outside the API: the e-ticket link and the wallet passes.
None of them is handed out before the event's fulfillment starts; a refunded ticket's pass is
void, and every one is made for the ticket's current code, so a transfer replaces them."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from domain.purchasing import PurchaseState
from domain.refunds import OrderInactive
from domain.tickets import TicketState, require_fulfilled
from infra.wallet.ticket import WalletTicket
from services.usecases import ticket_resource
from services.usecases.ticket_documents import Documents
from services.usecases.ticket_resource import NotYetPaid


def voided(ticket: TicketState, purchase: PurchaseState) -> bool:
    return ticket.status == "refunded" or purchase.refunded


async def partner_ticket(
    pool: asyncpg.Pool, uid: str, organization_id: int, now: datetime
) -> tuple[TicketState, PurchaseState]:
    """The organization's issued ticket with this uid, once its fulfillment has started. A
    ticket of an order that ended unpaid is there (its resource answers) but was never issued:
    `409 order_inactive`, as the order's other actions answer."""
    found = await ticket_resource.by_uid(pool, uid, organization_id)
    if found.issued is None:
        if found.purchase.status == "pending_payment":
            raise NotYetPaid("the ticket is handed out once its order is paid")
        raise OrderInactive(f"the ticket's order is {found.purchase.status}: it was never issued")
    require_fulfilled(found.issued, now)
    return found.issued, found.purchase


async def wallet_ticket(
    documents: Documents, ticket: TicketState, purchase: PurchaseState
) -> WalletTicket:
    """The ticket as a pass shows it: what its PDF page prints, with the current code."""
    issued = ticket.issued
    bought = [t for t in purchase.opened.tickets if t.id == issued.ticket_id]
    (page,) = await documents.pages(purchase, bought, refunded_too=True)
    product = (
        f"event-{issued.event_id}"
        if issued.event_id is not None
        else f"attraction-{issued.attraction_id}"
    )
    return WalletTicket(
        ticket_id=issued.ticket_id,
        generation=ticket.transfers,
        code=ticket.code,
        voided=voided(ticket, purchase),
        organization_name=page.organization_name,
        color=page.organization_color,
        product_key=product,
        product_name=page.product_name,
        ticket_type_name=page.ticket_type_name,
        starts_at=page.starts_at,
        visit_date=page.visit_date,
        venue_name=page.venue_name,
        venue_address=page.venue_address,
        section_name=page.section_name,
        row=page.row,
        seat_number=page.seat_number,
        holder_name=ticket.holder_name,
        scannable_until=issued.scannable_until,
    )
