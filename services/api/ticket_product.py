"""What the ticket resource embeds, in the reference's shapes: the product the ticket is of (its
ticket type, with what is left of it) and the channels where its holder may offer it. Texts
are given per language as the reference's are; a venue names things in one language, which
stands for every one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from domain.catalog import TicketTerms, TicketType
from domain.inventory.stock import available_per_type
from projections import availability
from services.api.availability import left_per_type
from services.api.context import PURCHASES, pool_of
from services.api.schemas import Payload
from services.api.seating import DESK_IN_STEP_SECONDS, taken_now
from services.usecases.ticket_resource import Ticket

LANGUAGES = ("de", "en", "es", "fr", "nl", "pt", "tr")

Localized = Annotated[dict[str, str], Meta(description="The text per language (de, en, …)")]


def localized(text: str | None) -> dict[str, str]:
    return dict.fromkeys(LANGUAGES, text or "")


class Link(Payload):
    href: str


class DocumentationLink(Payload):
    href: str
    type: str


class Curie(Payload):
    """Where a `shop:` relation is explained: `href` with the relation's name for `{rel}`."""

    href: str
    name: str
    templated: bool
    type: str


class Money(Payload):
    amount: Annotated[str, Meta(description="In the currency's main unit: `350.00`")]
    currency: str


class ProductLinks(Payload):
    self: Link
    event: Annotated[Link | None, Meta(description="Null for an attraction")] = msgspec.field(
        name="shop:event"
    )
    profile: DocumentationLink
    curies: list[Curie]


class Product(Payload):
    """The ticket type the ticket is of."""

    links: ProductLinks = msgspec.field(name="_links")
    uid: Annotated[str, Meta(description="The ticket type's id")]
    reference: str
    name: Localized
    subtitle: Localized
    additional_information: Localized
    sold_out_text: Localized
    availability: Annotated[int, Meta(description="Tickets of this type left to sell")]
    total_availability: Annotated[int, Meta(description="Tickets of this type in all")]
    min_per_order: int
    max_per_order: int
    price: Money
    sale_start: datetime | None
    sale_end: datetime | None
    separately_saleable: bool
    combo: None
    parents: None
    types: list[str]
    viewing_order: int
    requires_membership: bool
    provides_membership: bool


class Channel(Payload):
    title: Localized


class SaleLinks(Payload):
    self: Link


class TransferSale(Payload):
    """A channel where the holder may offer the ticket (the organizer's secondary sales)."""

    links: SaleLinks = msgspec.field(name="_links")
    channel: Channel


class TicketEmbedded(Payload):
    product: Product = msgspec.field(name="shop:product")
    transfer_sales: list[TransferSale] = msgspec.field(name="shop:transfer_sale")


def money(cents: int, currency: str) -> Money:
    units, rest = divmod(cents, 100)
    return Money(amount=f"{units}.{rest:02d}", currency=currency)


@dataclass(frozen=True)
class _Stock:
    """The ticket's type, its place among its product's types, what is left of it and how
    many there are in all, and the product's sales window."""

    kind: TicketType
    order: int
    left: int
    total: int
    sales: tuple[datetime | None, datetime | None] = (None, None)


async def _stock(request: web.Request, ticket: Ticket) -> _Stock:
    """As the event's or attraction's page counts them: from the catalog's streams (which a
    ticket's purchase implies are there), and what is taken as the sales desk selling here has
    stored it (a purchase or cancel a moment ago counts at once), else as the availability read
    model has it."""
    cache, pool = request.app[PURCHASES].catalog, pool_of(request)
    opened = ticket.purchase.opened
    type_id = ticket.bought.ticket_type_id
    if opened.event_id is not None:
        event_id = opened.event_id
        scheduled = await cache.scheduled(event_id)
        types = scheduled.ticket_types
        sections = await cache.sections_of_event(event_id)
        taken, _ = await taken_now(request, event_id)
        left = await left_per_type(request, event_id, sections, types, taken)
        total = available_per_type(sections, types, {}, {})[type_id]
        sales = (scheduled.sales_start_date, scheduled.sales_end_date)
    else:
        assert opened.attraction_id is not None
        attraction = await cache.attraction(opened.attraction_id)
        types = attraction.ticket_types
        stored = await request.app[PURCHASES].seats.attraction_now(
            opened.attraction_id, DESK_IN_STEP_SECONDS
        )
        taken = None if stored is None else stored[0].taken_per_type
        left = await availability.attraction_left(pool, types, attraction.daily_max_tickets, taken)
        capacity = next(t.capacity for t in types if t.id == type_id)
        total = capacity or attraction.daily_max_tickets or left[type_id]
        sales = (None, None)
    order = next(n for n, t in enumerate(types) if t.id == type_id)
    return _Stock(types[order], order + 1, left[type_id], total, sales)


async def embed_product(
    request: web.Request, ticket: Ticket, terms: TicketTerms, links: ProductLinks
) -> TicketEmbedded:
    stock = await _stock(request, ticket)
    kind = stock.kind
    return TicketEmbedded(
        product=Product(
            links=links,
            uid=str(kind.id),
            reference=str(kind.id),
            name=localized(kind.name),
            subtitle=localized(None),
            additional_information=localized(kind.description),
            sold_out_text=localized(None),
            availability=stock.left,
            total_availability=stock.total,
            min_per_order=1,
            max_per_order=kind.max_per_purchase,
            price=money(kind.price_cents, ticket.purchase.opened.pricing.currency),
            sale_start=stock.sales[0],
            sale_end=stock.sales[1],
            separately_saleable=True,
            combo=None,
            parents=None,
            types=[],
            viewing_order=stock.order,
            requires_membership=False,
            provides_membership=False,
        ),
        transfer_sales=[
            TransferSale(
                links=SaleLinks(self=Link(href=c.url)), channel=Channel(title=localized(c.title))
            )
            for c in terms.secondary_sales
        ],
    )
