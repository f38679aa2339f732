"""The ticket resource, in the reference's field names: one ticket by its uid, the search by
code within an event (a list of one, "for historic reasons"), and the partner's
personalization of its consumer."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from domain import tickets
from domain.catalog import ConsumerField, TicketTerms
from domain.tickets import Consumer
from services.api.context import PURCHASES, api_key_of, metadata_of, now, pool_of, public_base
from services.api.docs.page import PAGE_PATH
from services.api.errors import invalid_request
from services.api.etickets import eticket_url
from services.api.http import json_response, parse_body, parse_query
from services.api.routes import Route
from services.api.schemas import Payload, Query
from services.api.ticket_product import (
    Curie,
    DocumentationLink,
    Link,
    Localized,
    Money,
    ProductLinks,
    TicketEmbedded,
    embed_product,
    localized,
    money,
)
from services.usecases import ticket_resource
from services.usecases.ticket_resource import Ticket

TICKETS = "/api/v1/tickets"
HTML = "text/html"


class ConsumerView(Payload):
    first_name: str | None
    last_name: str | None
    email: str | None
    phone_number: str | None
    date_of_birth: date | None
    gender: Annotated[
        int | None, Meta(description="ISO/IEC 5218: 0 not known, 1 male, 2 female, 9 n/a")
    ]
    address: str | None
    postal_code: str | None
    city: str | None
    country: Annotated[str | None, Meta(description="ISO 3166-1 alpha-2")]
    state: str | None
    realm: str | None
    language: Annotated[str | None, Meta(description="A language tag, e.g. `da`")]


class Seating(Payload):
    """Ids and display labels of the seat; empty strings for general admission."""

    section: str
    row: str
    seat: str
    section_label: Localized
    row_label: Localized
    seat_label: Localized
    venue: Localized


class FormField(Payload):
    required: bool


class EmailField(FormField, frozen=True):
    unique_per_product: Annotated[
        bool, Meta(description="Always false: one person may hold several tickets")
    ]


class PersonalizationForm(Payload):
    """Every consumer field the ticket takes, and whether the event requires it."""

    first_name: FormField
    last_name: FormField
    email: EmailField
    phone_number: FormField
    date_of_birth: FormField
    gender: FormField
    address: FormField
    postal_code: FormField
    city: FormField
    country: FormField
    state: FormField
    realm: FormField
    language: FormField


class SaleLink(Payload):
    title: str
    href: str


class TicketLinks(Payload):
    """The reference's relations (`shop:` ones explained through `curies`), absolute."""

    self: Link
    event: Annotated[Link | None, Meta(description="Null for an attraction visit")] = msgspec.field(
        name="shop:event"
    )
    product: Annotated[Link, Meta(description="The event or attraction with its ticket types")] = (
        msgspec.field(name="shop:product")
    )
    order: Link = msgspec.field(name="shop:order")
    eticket: Annotated[
        Link | None,
        Meta(
            description="The ticket's PDF for its holder, opened without an API key (a signed"
            " link a transfer revokes); null before fulfillment starts and once refunded"
        ),
    ] = msgspec.field(name="shop:eticket")
    apple_wallet_pass: Annotated[
        Link | None, Meta(description="Null before fulfillment starts and once refunded")
    ]
    google_wallet_token: Annotated[
        Link | None, Meta(description="Null before fulfillment starts and once refunded")
    ]
    refund_requests: Link = msgspec.field(name="shop:refund_requests")
    personalization_requests: Annotated[
        list[Link], Meta(description="Always empty: consumers are set, not requested")
    ] = msgspec.field(name="shop:personalization_request")
    transfers: Annotated[Link, Meta(description="Offer the ticket to someone else")]
    transfer_approvals: Annotated[
        Link, Meta(description="Where the ticket is submitted to be transferred")
    ] = msgspec.field(name="shop:ticket_transfer_approvals")
    secondary_sales: Annotated[
        list[SaleLink], Meta(description="Channels where the holder may offer the ticket")
    ] = msgspec.field(name="shop:secondary_sales")
    profile: DocumentationLink
    curies: list[Curie]


class TicketResource(Payload):
    uid: Annotated[str, Meta(description="The ticket's id: use it with the API, not the code")]
    code: Annotated[str, Meta(description="The barcode now printed on the ticket")]
    status: str
    is_scanned: bool
    consumer: ConsumerView
    seating: Seating
    subproduct: Annotated[Localized, Meta(description="The ticket type's name")]
    has_valid_subscription: Annotated[
        bool, Meta(description="Always false: there are no subscriptions")
    ]
    needs_personalization: bool
    personalization_start: datetime | None
    personalization_end: datetime | None
    personalization_form: PersonalizationForm
    price: Money
    service_fee_paid: Annotated[Money | None, Meta(description="Null until the order is paid")]
    fulfillment_starts_at: Annotated[
        datetime | None,
        Meta(description="Before it, no PDF, e-ticket link or wallet pass is handed out"),
    ]
    scannable_until: datetime | None
    links: TicketLinks = msgspec.field(name="_links")
    embedded: TicketEmbedded = msgspec.field(name="_embedded")


class SearchLinks(Payload):
    self: Link
    search: Link
    profile: DocumentationLink
    curies: list[Curie]


class SearchLink(Link, frozen=True):
    templated: bool


class FoundTickets(Payload):
    tickets: Annotated[
        list[TicketResource], Meta(description="Exactly one ticket, for historic reasons")
    ] = msgspec.field(name="shop:ticket")


class TicketSearch(Payload):
    links: SearchLinks = msgspec.field(name="_links")
    embedded: FoundTickets = msgspec.field(name="_embedded")


class TicketSearchQuery(Query):
    code: Annotated[str, Meta(min_length=1, max_length=64, description="The ticket's code")]
    event: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=500,
            description="The event (or attraction): its URL as the ticket's `shop:event` gives"
            " it, its path, its slug or its id",
        ),
    ]


_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
# A consumer field in an edit: left out (UNSET) keeps it, "" or null clears it.
Text = str | UnsetType | None
BirthDate = Annotated[str, Meta(description="YYYY-MM-DD")] | UnsetType | None
Gender = Annotated[int, Meta(description="ISO/IEC 5218")] | Literal[""] | UnsetType | None


class ConsumerEdit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields to set: a field left out keeps its value, an empty string or null clears it."""

    first_name: Text = UNSET
    last_name: Text = UNSET
    email: Text = UNSET
    phone_number: Text = UNSET
    date_of_birth: BirthDate = UNSET
    gender: Gender = UNSET
    address: Text = UNSET
    postal_code: Text = UNSET
    city: Text = UNSET
    country: Text = UNSET
    state: Text = UNSET
    realm: Text = UNSET
    language: Text = UNSET


def consumer_changes(edit: ConsumerEdit, field: str = "") -> dict[str, object]:
    """The fields an edit names, typed as the consumer holds them ("" and null clear)."""
    changes: dict[str, object] = {
        name: value for name, value in msgspec.structs.asdict(edit).items() if value is not UNSET
    }
    born = changes.get("date_of_birth")
    if isinstance(born, str) and born:
        try:
            if not _DATE.match(born):  # fromisoformat takes 19700101 and 1970-W01-1 too
                raise ValueError(born)
            changes["date_of_birth"] = date.fromisoformat(born)
        except ValueError:
            raise invalid_request(f"{field}date_of_birth", "not a date (YYYY-MM-DD)") from None
    return changes


def _consumer(consumer: Consumer) -> ConsumerView:
    return ConsumerView(**msgspec.structs.asdict(consumer))


def _form(required: list[ConsumerField]) -> PersonalizationForm:
    fields = {
        f.name: FormField(required=f.name in required) for f in msgspec.structs.fields(Consumer)
    }
    fields["email"] = EmailField(required="email" in required, unique_per_product=False)
    return PersonalizationForm(**fields)


def _terms(ticket: Ticket, scheduled: TicketTerms) -> TicketTerms:
    """The terms the ticket was issued under; before issue, its event's (which never change)."""
    return ticket.issued.issued.terms if ticket.issued else scheduled


def _documentation(base: str) -> tuple[DocumentationLink, list[Curie]]:
    """The `profile` and `curies` of the reference's resources: this API's documentation."""
    page = f"{base}{PAGE_PATH}#tag/Tickets"
    curie = Curie(href=f"{base}{PAGE_PATH}#{{rel}}", name="shop", templated=True, type=HTML)
    return DocumentationLink(href=page, type=HTML), [curie]


def ticket_links(
    ticket: Ticket, terms: TicketTerms, at: datetime, base: str, eticket: str | None = None
) -> TicketLinks:
    """Where the ticket's other resources are (`base`: this API's address). What hands the
    ticket to its holder (wallet passes, the e-ticket) only once fulfillment starts, and never
    for a refunded ticket."""
    opened = ticket.purchase.opened
    own = f"{base}{TICKETS}/uid/{ticket.uid}"
    kind = "events" if opened.event_id is not None else "attractions"
    product = Link(href=f"{base}/api/v1/{kind}/{opened.product_slug}")
    handed_out = ticket.issued is not None and tickets.handed_out(ticket.issued, at)

    def holders(path: str) -> Link | None:
        return Link(href=path) if handed_out else None

    profile, curies = _documentation(base)
    return TicketLinks(
        self=Link(href=own),
        event=product if opened.event_id is not None else None,
        product=product,
        order=Link(href=f"{base}/api/v1/purchases/{opened.token}"),
        eticket=holders(eticket) if eticket else None,
        apple_wallet_pass=holders(f"{own}/wallet/apple"),
        google_wallet_token=holders(f"{own}/wallet/google"),
        refund_requests=Link(href=f"{base}/api/v1/refund-requests?ticket={ticket.uid}"),
        personalization_requests=[],
        transfers=Link(href=f"{own}/transfers"),
        transfer_approvals=Link(href=f"{own}/transfers"),
        secondary_sales=[SaleLink(title=c.title, href=c.url) for c in terms.secondary_sales],
        profile=profile,
        curies=curies,
    )


async def _resource(request: web.Request, ticket: Ticket) -> TicketResource:
    catalog = request.app[PURCHASES].catalog
    opened = ticket.purchase.opened
    schedule = await catalog.schedule(opened)
    if opened.event_id is not None:
        venue_id = (await catalog.scheduled(opened.event_id)).venue_id
    else:
        assert opened.attraction_id is not None
        venue_id = (await catalog.attraction(opened.attraction_id)).venue_id
    venue = await catalog.venue(venue_id)
    seat = ticket.bought.seat
    sections = {s.id: s.name for s in venue.sections}
    facts = ticket.facts
    terms = _terms(ticket, schedule.terms)
    issued = ticket.issued
    policy = terms.personalization
    required = issued.required_fields if issued else (policy.required if policy else [])
    currency = opened.pricing.currency
    moment = now()
    eticket = eticket_url(request, issued, moment) if issued else None
    links = ticket_links(ticket, terms, moment, public_base(request), eticket)
    product = ProductLinks(
        self=links.product, event=links.event, profile=links.profile, curies=links.curies
    )
    return TicketResource(
        uid=ticket.uid,
        code=facts.code,
        status=facts.status,
        is_scanned=bool(facts.scan_count),
        consumer=_consumer(facts.consumer),
        seating=Seating(
            section=str(seat.section_id) if seat else "",
            row=seat.row if seat else "",
            seat=str(seat.seat_number) if seat else "",
            section_label=localized(sections.get(seat.section_id) if seat else None),
            row_label=localized(seat.row if seat else None),
            seat_label=localized(str(seat.seat_number) if seat else None),
            venue=localized(venue.name),
        ),
        subproduct=localized(ticket.bought.ticket_type_name),
        has_valid_subscription=False,
        needs_personalization=facts.needs_personalization,
        personalization_start=facts.personalization_start,
        personalization_end=facts.personalization_end,
        personalization_form=_form(required),
        price=money(ticket.bought.amount_cents, currency),
        service_fee_paid=money(issued.issued.service_fee_cents, currency) if issued else None,
        fulfillment_starts_at=terms.fulfillment_starts_at,
        scannable_until=facts.scannable_until,
        links=links,
        embedded=await embed_product(request, ticket, terms, product),
    )


async def get_ticket(request: web.Request) -> web.Response:
    ticket = await ticket_resource.by_uid(
        pool_of(request), request.match_info["uid"], api_key_of(request).organization_id
    )
    return json_response(await _resource(request, ticket))


async def search_tickets(request: web.Request) -> web.Response:
    query = parse_query(request, TicketSearchQuery)
    ticket = await ticket_resource.by_code(
        pool_of(request), query.code, _product(query.event), api_key_of(request).organization_id
    )
    base = public_base(request)
    profile, curies = _documentation(base)
    links = SearchLinks(
        self=Link(href=f"{base}{TICKETS}"),
        search=SearchLink(href=f"{base}{TICKETS}{{?event,code}}", templated=True),
        profile=profile,
        curies=curies,
    )
    found = FoundTickets(tickets=[await _resource(request, ticket)])
    return json_response(TicketSearch(links=links, embedded=found))


def _product(event: str) -> str:
    """The slug or id the search's `event` names: the last part of a URL or path
    (`https://…/api/v1/events/hamlet-2026`, `/api/v1/events/8`), or the value itself."""
    return event.split("?", 1)[0].rstrip("/").rpartition("/")[2]


async def personalize_ticket(request: web.Request) -> web.Response:
    changes = consumer_changes(await parse_body(request, ConsumerEdit))
    ticket = await ticket_resource.personalize(
        pool_of(request),
        request.match_info["uid"],
        api_key_of(request).organization_id,
        changes,
        metadata_of(request),
    )
    return json_response(await _resource(request, ticket))


ROUTES = [
    Route(
        "GET",
        f"{TICKETS}/uid/{{uid}}",
        get_ticket,
        "One ticket by its uid",
        "Tickets",
        TicketResource,
        errors=(401, 404, 429),
        path_params={"uid": str},
    ),
    Route(
        "GET",
        TICKETS,
        search_tickets,
        "Find a ticket by its code within an event (a list of exactly one; 404 when no ticket "
        "of that event has the code now)",
        "Tickets",
        TicketSearch,
        query=TicketSearchQuery,
        errors=(401, 404, 422, 429),
    ),
    Route(
        "PUT",
        f"{TICKETS}/uid/{{uid}}/consumer",
        personalize_ticket,
        "Personalize a ticket (set its consumer inside the personalization window)",
        "Tickets",
        TicketResource,
        body=ConsumerEdit,
        errors=(401, 404, 409, 422, 429),
        path_params={"uid": str},
    ),
]
