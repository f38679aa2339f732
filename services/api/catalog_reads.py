"""Read endpoints of the catalog: the organization, upcoming events with their ticket types
and stock, venues and attractions. Everything comes from read models, scoped to the key's
organization; a missing, draft or foreign object is the same 404."""

from __future__ import annotations

import asyncpg
import msgspec
from aiohttp import web

from domain.catalog import OpeningHours
from domain.inventory.attraction_days import AttractionInventory
from domain.inventory.stock import early_bird_active, event_status
from projections import availability, catalog
from services.api import schemas as s
from services.api.availability import attraction_as_sold_here, available_of
from services.api.context import now, organization_of, pool_of
from services.api.errors import not_found
from services.api.http import Snapshot, memoized, parse_query, path_int, snapshot
from services.api.routes import Route
from services.api.seating import EventSeats, as_sold_here

_hours = msgspec.json.Decoder(dict[str, OpeningHours])


def venue_address(row) -> s.VenueAddress:
    return s.VenueAddress(
        id=row["venue_id"],
        name=row["venue_name"],
        city=row["city"],
        address=row["address"],
        zip_code=row["zip_code"],
    )


def _venue(row) -> s.Venue:
    return s.Venue(
        id=row["id"],
        name=row["name"],
        city=row["city"],
        address=row["address"],
        zip_code=row["zip_code"],
        seated_capacity=row["seated_capacity"],
        standing_capacity=row["standing_capacity"],
        floor_plan_width=row["floor_plan_width"],
        floor_plan_height=row["floor_plan_height"],
    )


async def get_organization(request: web.Request) -> Snapshot:
    row = await catalog.organization(pool_of(request), organization_of(request))
    if row is None:
        raise not_found("organization")
    return snapshot(
        s.OrganizationResponse(
            organization=s.Organization(
                id=row["id"],
                name=row["name"],
                description=row["description"],
                image_url=row["image_url"],
                primary_color=row["primary_color"],
                currency=row["currency"],
            )
        ),
    )


async def list_events(request: web.Request) -> Snapshot:
    query = parse_query(request, s.LimitQuery)
    rows = await catalog.upcoming_events(pool_of(request), organization_of(request), query.limit)
    events = [
        s.EventSummary(
            id=r["id"],
            slug=r["slug"],
            name=r["name"],
            event_date=r["event_date"],
            event_end_date=r["event_end_date"],
            sales_start_date=r["sales_start_date"],
            sales_end_date=r["sales_end_date"],
            venue=s.VenueRef(id=r["venue_id"], name=r["venue_name"], city=r["city"]),
        )
        for r in rows
    ]
    return snapshot(s.EventList(events=events, count=len(events)))


async def get_event(request: web.Request, event: EventSeats) -> Snapshot:
    """From the listing, seat map and taken seats the seat helpers keep (services/api/seating.py):
    an event page polled during its on-sale costs one read per move of the read model."""
    row, types = event.listing, list(event.ticket_types.values())
    available = await available_of(request, event)
    moment = now()
    detail = s.EventDetail(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        description=row["description"],
        event_date=row["event_date"],
        event_end_date=row["event_end_date"],
        doors_open=row["doors_open"],
        sales_start_date=row["sales_start_date"],
        sales_end_date=row["sales_end_date"],
        status=event_status(
            row["status"],
            row["sales_start_date"],
            row["sales_end_date"],
            row["event_date"],
            available.values(),
            moment,
        ),
        currency=row["currency"],
        venue=venue_address(row),
    )
    ticket_types = [
        s.EventTicketType(
            id=t.id,
            name=t.name,
            description=t.description,
            price_cents=t.price_cents,
            currency=row["currency"],
            early_bird_price_cents=t.early_bird_price_cents,
            early_bird_end_date=t.early_bird_end_date,
            early_bird_active=early_bird_active(t, moment),
            category=t.category,
            max_per_purchase=t.max_per_purchase,
            section_ids=t.section_ids,
            available=available[t.id],
        )
        for t in types
    ]
    return snapshot(s.EventResponse(event=detail, ticket_types=ticket_types))


async def list_venues(request: web.Request) -> Snapshot:
    rows = await catalog.venues(pool_of(request), organization_of(request))
    return snapshot(s.VenueList(venues=[_venue(r) for r in rows], count=len(rows)))


async def get_venue(request: web.Request) -> Snapshot:
    row = await catalog.venue(pool_of(request), organization_of(request), path_int(request, "id"))
    if row is None:
        raise not_found("venue")
    return snapshot(s.VenueResponse(venue=_venue(row)))


async def list_attractions(request: web.Request) -> Snapshot:
    query = parse_query(request, s.LimitQuery)
    rows = await catalog.attractions(pool_of(request), organization_of(request), query.limit)
    items = [
        s.AttractionSummary(
            id=r["id"],
            slug=r["slug"],
            name=r["name"],
            visit_date_required=r["visit_date_required"],
            daily_max_tickets=r["daily_max_tickets"],
            venue=s.VenueRef(id=r["venue_id"], name=r["venue_name"], city=r["city"]),
        )
        for r in rows
    ]
    return snapshot(s.AttractionList(attractions=items, count=len(items)))


async def get_attraction(
    request: web.Request, row: asyncpg.Record, state: AttractionInventory | None
) -> Snapshot:
    taken = None if state is None else state.taken_per_type
    types, available = await availability.attraction_stock(pool_of(request), row, taken)
    detail = s.AttractionDetail(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        description=row["description"],
        status="available" if any(available.values()) else "sold_out",
        visit_date_required=row["visit_date_required"],
        daily_max_tickets=row["daily_max_tickets"],
        opening_hours=_hours.decode(row["hours"]),
        currency=row["currency"],
        venue=venue_address(row),
    )
    ticket_types = [
        s.AttractionTicketType(
            id=t.id,
            name=t.name,
            description=t.description,
            price_cents=t.price_cents,
            currency=row["currency"],
            category=t.category,
            max_per_purchase=t.max_per_purchase,
            available=available[t.id],
        )
        for t in types
    ]
    return snapshot(s.AttractionResponse(attraction=detail, ticket_types=ticket_types))


ROUTES = [
    Route(
        "GET",
        "/api/v1/organization",
        memoized(get_organization),
        "Fetch your organization",
        "Organization",
        s.OrganizationResponse,
        errors=(401, 429),
    ),
    Route(
        "GET",
        "/api/v1/events",
        memoized(list_events),
        "List upcoming events",
        "Events",
        s.EventList,
        query=s.LimitQuery,
        errors=(401, 422, 429),
    ),
    Route(
        "GET",
        "/api/v1/events/{slug}",
        as_sold_here(get_event),
        "Fetch an event with its ticket types",
        "Events",
        s.EventResponse,
        errors=(401, 404, 429),
        path_params={"slug": str},
    ),
    Route(
        "GET",
        "/api/v1/venues",
        memoized(list_venues),
        "List venues",
        "Venues",
        s.VenueList,
        errors=(401, 429),
    ),
    Route(
        "GET",
        "/api/v1/venues/{id}",
        memoized(get_venue),
        "Fetch a venue",
        "Venues",
        s.VenueResponse,
        errors=(401, 404, 422, 429),
        path_params={"id": int},
    ),
    Route(
        "GET",
        "/api/v1/attractions",
        memoized(list_attractions),
        "List attractions",
        "Attractions",
        s.AttractionList,
        query=s.LimitQuery,
        errors=(401, 422, 429),
    ),
    Route(
        "GET",
        "/api/v1/attractions/{slug}",
        attraction_as_sold_here(get_attraction),
        "Fetch an attraction",
        "Attractions",
        s.AttractionResponse,
        errors=(401, 404, 429),
        path_params={"slug": str},
    ),
]
