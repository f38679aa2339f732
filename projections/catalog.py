"""The catalog read model: organizations, venues with their seat maps, events, ticket types,
attractions and discount codes, in the shape the partner API's read endpoints serve. Its
queries are scoped to one organization: the only way the read endpoints reach these tables,
so no handler can forget the organization filter."""

from __future__ import annotations

from typing import ClassVar

import asyncpg
import msgspec

from domain import catalog, discounts
from domain.events import Event
from domain.venues import Section, VenuePlanChanged, VenueRegistered
from infra.eventstore import RecordedEvent
from projections.framework import live_schema

_json = msgspec.json.Encoder()


class CatalogProjection:
    name: ClassVar[str] = "catalog"
    categories: ClassVar[tuple[str, ...]] = (
        "organization",
        "venue",
        "event",
        "attraction",
        "discount",
    )
    tables_sql: ClassVar[str] = """
        CREATE TABLE {schema}.organizations (
            id bigint PRIMARY KEY, slug text NOT NULL UNIQUE, name text NOT NULL,
            description text, image_url text, primary_color text NOT NULL,
            currency text NOT NULL, stripe_account_id text,
            fee_percent_bps integer NOT NULL, fee_per_ticket_cents integer NOT NULL);
        CREATE TABLE {schema}.venues (
            id bigint PRIMARY KEY, organization_id bigint NOT NULL, name text NOT NULL,
            address text, city text, zip_code text,
            seated_capacity integer NOT NULL, standing_capacity integer NOT NULL,
            floor_plan_width integer NOT NULL, floor_plan_height integer NOT NULL,
            sections jsonb NOT NULL);
        CREATE INDEX ON {schema}.venues (organization_id, id);
        CREATE TABLE {schema}.events (
            id bigint PRIMARY KEY, organization_id bigint NOT NULL, venue_id bigint NOT NULL,
            slug text NOT NULL, name text NOT NULL, description text,
            event_date timestamptz NOT NULL, event_end_date timestamptz,
            doors_open timestamptz, sales_start_date timestamptz, sales_end_date timestamptz,
            status text NOT NULL, UNIQUE (organization_id, slug));
        CREATE INDEX ON {schema}.events (organization_id, event_date) WHERE status = 'published';
        CREATE TABLE {schema}.attractions (
            id bigint PRIMARY KEY, organization_id bigint NOT NULL, venue_id bigint NOT NULL,
            slug text NOT NULL, name text NOT NULL, description text,
            visit_date_required boolean NOT NULL, daily_max_tickets integer,
            opening_hours jsonb NOT NULL, UNIQUE (organization_id, slug));
        CREATE TABLE {schema}.ticket_types (
            id bigint PRIMARY KEY, event_id bigint, attraction_id bigint,
            display_order integer NOT NULL, name text NOT NULL, description text,
            price_cents integer NOT NULL, early_bird_price_cents integer,
            early_bird_end_date timestamptz, category text NOT NULL,
            max_per_purchase integer NOT NULL, section_ids bigint[] NOT NULL,
            capacity integer, CHECK ((event_id IS NULL) <> (attraction_id IS NULL)));
        CREATE INDEX ON {schema}.ticket_types (event_id, display_order);
        CREATE INDEX ON {schema}.ticket_types (attraction_id, display_order);
        CREATE TABLE {schema}.discount_codes (
            id bigint PRIMARY KEY, organization_id bigint NOT NULL, code text NOT NULL,
            percentage integer, amount_cents integer, applies_to_all boolean NOT NULL,
            ticket_type_ids bigint[] NOT NULL, valid_from timestamptz, valid_until timestamptz,
            max_uses integer, current_uses integer NOT NULL DEFAULT 0,
            UNIQUE (organization_id, code));
    """

    @property
    def handles(self) -> frozenset[str]:
        return _HANDLES

    async def apply(self, conn: asyncpg.Connection, schema: str, event: RecordedEvent) -> None:
        if event.type not in _HANDLED:
            return
        await _HANDLED[event.type](conn, schema, event.event())


async def _organization(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, catalog.OrganizationRegistered)
    await conn.execute(
        f"INSERT INTO {schema}.organizations VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        e.organization_id,
        e.slug,
        e.name,
        e.description,
        e.image_url,
        e.primary_color,
        e.currency,
        e.stripe_account_id,
        e.fee.percent_bps,
        e.fee.per_ticket_cents,
    )


async def _venue(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, VenueRegistered)
    await conn.execute(
        f"INSERT INTO {schema}.venues VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        e.venue_id,
        e.organization_id,
        e.name,
        e.address,
        e.city,
        e.zip_code,
        sum(s.seated_capacity for s in e.sections),
        sum(s.standing_capacity for s in e.sections),
        e.floor_plan_width,
        e.floor_plan_height,
        _json.encode(e.sections).decode(),
    )


async def _venue_plan(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, VenuePlanChanged)
    await conn.execute(
        f"UPDATE {schema}.venues SET seated_capacity = $2, standing_capacity = $3,"
        " sections = $4::jsonb WHERE id = $1",
        e.venue_id,
        sum(s.seated_capacity for s in e.sections),
        sum(s.standing_capacity for s in e.sections),
        _json.encode(e.sections).decode(),
    )


async def _ticket_types(
    conn: asyncpg.Connection,
    schema: str,
    types: list[catalog.TicketType],
    event_id: int | None,
    attraction_id: int | None,
) -> None:
    await conn.executemany(
        f"INSERT INTO {schema}.ticket_types VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        [
            (
                t.id,
                event_id,
                attraction_id,
                order,
                t.name,
                t.description,
                t.price_cents,
                t.early_bird_price_cents,
                t.early_bird_end_date,
                t.category,
                t.max_per_purchase,
                t.section_ids,
                t.capacity,
            )
            for order, t in enumerate(types)
        ],
    )


async def _event_scheduled(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, catalog.EventScheduled)
    await conn.execute(
        f"INSERT INTO {schema}.events VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'draft')",
        e.event_id,
        e.organization_id,
        e.venue_id,
        e.slug,
        e.name,
        e.description,
        e.event_date,
        e.event_end_date,
        e.doors_open,
        e.sales_start_date,
        e.sales_end_date,
    )
    await _ticket_types(conn, schema, e.ticket_types, e.event_id, None)


async def _event_published(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, catalog.EventPublished)
    await conn.execute(f"UPDATE {schema}.events SET status = 'published' WHERE id = $1", e.event_id)


async def _event_cancelled(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, catalog.EventCancelled)
    await conn.execute(f"UPDATE {schema}.events SET status = 'cancelled' WHERE id = $1", e.event_id)


async def _attraction(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, catalog.AttractionOpened)
    await conn.execute(
        f"INSERT INTO {schema}.attractions VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        e.attraction_id,
        e.organization_id,
        e.venue_id,
        e.slug,
        e.name,
        e.description,
        e.visit_date_required,
        e.daily_max_tickets,
        _json.encode(e.opening_hours).decode(),
    )
    await _ticket_types(conn, schema, e.ticket_types, None, e.attraction_id)


async def _discount(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    assert isinstance(e, discounts.DiscountCodeCreated)
    await conn.execute(
        f"INSERT INTO {schema}.discount_codes VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)",
        e.discount_id,
        e.organization_id,
        e.code,
        e.percentage,
        e.amount_cents,
        e.applies_to_all,
        e.ticket_type_ids,
        e.valid_from,
        e.valid_until,
        e.max_uses,
    )


async def _redeemed(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    """A use counts from the append that redeems it, whether or not the purchase is paid yet,
    as the code's own stream counts it; replaying the same events gives the same count."""
    assert isinstance(e, discounts.DiscountCodeRedeemed)
    await conn.execute(
        f"UPDATE {schema}.discount_codes SET current_uses = current_uses + 1 WHERE id = $1",
        e.discount_id,
    )


async def _released(conn: asyncpg.Connection, schema: str, e: Event) -> None:
    """Only a redeemed use is ever released (domain.discounts.release), so this never goes
    below zero."""
    assert isinstance(e, discounts.DiscountCodeReleased)
    await conn.execute(
        f"UPDATE {schema}.discount_codes SET current_uses = current_uses - 1 WHERE id = $1",
        e.discount_id,
    )


_HANDLED = {
    "OrganizationRegistered": _organization,
    "VenueRegistered": _venue,
    "VenuePlanChanged": _venue_plan,
    "EventScheduled": _event_scheduled,
    "EventPublished": _event_published,
    "EventCancelled": _event_cancelled,
    "AttractionOpened": _attraction,
    "DiscountCodeCreated": _discount,
    "DiscountCodeRedeemed": _redeemed,
    "DiscountCodeReleased": _released,
}
_HANDLES = frozenset(_HANDLED)


_LIVE = live_schema(CatalogProjection())

_sections = msgspec.json.Decoder(list[Section])

_EVENT_COLUMNS = (
    "e.id, e.slug, e.name, e.description, e.event_date, e.event_end_date, e.doors_open,"
    " e.sales_start_date, e.sales_end_date, e.status, e.venue_id, o.currency,"
    " v.name AS venue_name, v.address, v.city, v.zip_code, v.sections::text AS sections"
)


async def organization(conn: asyncpg.Pool, organization_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT * FROM {_LIVE}.organizations WHERE id = $1", organization_id
    )


async def upcoming_events(
    conn: asyncpg.Pool, organization_id: int, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT e.*, v.name AS venue_name, v.city FROM {_LIVE}.events e"
        f" JOIN {_LIVE}.venues v ON v.id = e.venue_id"
        " WHERE e.organization_id = $1 AND e.status = 'published' AND e.event_date > now()"
        " ORDER BY e.event_date, e.id LIMIT $2",
        organization_id,
        limit,
    )


async def event(conn: asyncpg.Pool, organization_id: int, slug: str) -> asyncpg.Record | None:
    """A published or cancelled event of the organization; drafts are not visible."""
    return await conn.fetchrow(
        f"SELECT {_EVENT_COLUMNS} FROM {_LIVE}.events e"
        f" JOIN {_LIVE}.organizations o ON o.id = e.organization_id"
        f" JOIN {_LIVE}.venues v ON v.id = e.venue_id"
        " WHERE e.organization_id = $1 AND e.slug = $2 AND e.status <> 'draft'",
        organization_id,
        slug,
    )


async def event_by_id(
    conn: asyncpg.Pool, organization_id: int, event_id: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_EVENT_COLUMNS} FROM {_LIVE}.events e"
        f" JOIN {_LIVE}.organizations o ON o.id = e.organization_id"
        f" JOIN {_LIVE}.venues v ON v.id = e.venue_id"
        " WHERE e.organization_id = $1 AND e.id = $2 AND e.status <> 'draft'",
        organization_id,
        event_id,
    )


def sections_of(row: asyncpg.Record) -> list[Section]:
    return _sections.decode(row["sections"])


def _ticket_type_of(row: asyncpg.Record) -> catalog.TicketType:
    return catalog.TicketType(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        price_cents=row["price_cents"],
        early_bird_price_cents=row["early_bird_price_cents"],
        early_bird_end_date=row["early_bird_end_date"],
        category=row["category"],
        max_per_purchase=row["max_per_purchase"],
        section_ids=list(row["section_ids"]),
        capacity=row["capacity"],
    )


async def ticket_types(
    conn: asyncpg.Pool, *, event_id: int | None = None, attraction_id: int | None = None
) -> list[catalog.TicketType]:
    column, owner = (
        ("event_id", event_id) if event_id is not None else ("attraction_id", attraction_id)
    )
    rows = await conn.fetch(
        f"SELECT * FROM {_LIVE}.ticket_types WHERE {column} = $1 ORDER BY display_order", owner
    )
    return [_ticket_type_of(r) for r in rows]


async def venues(conn: asyncpg.Pool, organization_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT * FROM {_LIVE}.venues WHERE organization_id = $1 ORDER BY id", organization_id
    )


async def venue(conn: asyncpg.Pool, organization_id: int, venue_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT * FROM {_LIVE}.venues WHERE organization_id = $1 AND id = $2",
        organization_id,
        venue_id,
    )


async def event_ids_at_venue(conn: asyncpg.Pool, venue_id: int) -> list[int]:
    """The venue's events that are not cancelled (their seats may be held or sold)."""
    rows = await conn.fetch(
        f"SELECT id FROM {_LIVE}.events WHERE venue_id = $1 AND status <> 'cancelled'", venue_id
    )
    return [r["id"] for r in rows]


_ATTRACTION_COLUMNS = (
    "a.*, a.opening_hours::text AS hours, o.currency, v.name AS venue_name, v.address,"
    " v.city, v.zip_code"
)


async def attractions(conn: asyncpg.Pool, organization_id: int, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_ATTRACTION_COLUMNS} FROM {_LIVE}.attractions a"
        f" JOIN {_LIVE}.organizations o ON o.id = a.organization_id"
        f" JOIN {_LIVE}.venues v ON v.id = a.venue_id"
        " WHERE a.organization_id = $1 ORDER BY a.id LIMIT $2",
        organization_id,
        limit,
    )


async def attraction(conn: asyncpg.Pool, organization_id: int, slug: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_ATTRACTION_COLUMNS} FROM {_LIVE}.attractions a"
        f" JOIN {_LIVE}.organizations o ON o.id = a.organization_id"
        f" JOIN {_LIVE}.venues v ON v.id = a.venue_id"
        " WHERE a.organization_id = $1 AND a.slug = $2",
        organization_id,
        slug,
    )


async def discount_code(
    conn: asyncpg.Pool, organization_id: int, code: str
) -> discounts.DiscountCodeCreated | None:
    """The organization's code (as stored: trimmed, upper case), in the shape the pricing and
    the discount rules take; its uses are counted where they are decided (the code's stream)."""
    row = await conn.fetchrow(
        f"SELECT * FROM {_LIVE}.discount_codes WHERE organization_id = $1 AND code = $2",
        organization_id,
        code,
    )
    if row is None:
        return None
    return discounts.DiscountCodeCreated(
        discount_id=row["id"],
        organization_id=row["organization_id"],
        code=row["code"],
        percentage=row["percentage"],
        amount_cents=row["amount_cents"],
        applies_to_all=row["applies_to_all"],
        ticket_type_ids=list(row["ticket_type_ids"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        max_uses=row["max_uses"],
    )
