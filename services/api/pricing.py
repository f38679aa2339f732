"""The checkout summary before the buyer commits: a pricing preview and an explicit discount-code
check. Both read the code's terms from the catalog read model and its uses as the event store
holds them (the read model follows a moment after a purchase redeems or gives one back), so
they lock no seat and count no use; the price
comes from `price_basket`, the function POST /purchases charges with, so the preview and the
charge agree (the purchase decides the code and the stock again against the streams)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from domain import streams
from domain.catalog import FeeRule, TicketType
from domain.discounts import DISCOUNT_CODE, DiscountCodeCreated, Reason, uses_counted, verdict
from domain.fields import SLUG
from domain.pricing import Pricing, price_basket
from domain.purchasing import MAX_TICKETS
from infra.eventstore import count_types
from projections import catalog
from services.api.context import now, organization_of, pool_of
from services.api.errors import invalid_request, not_found
from services.api.http import CANONICAL_ID, json_response, parse_body
from services.api.routes import Route
from services.api.schemas import Payload, Request


class PricingPreviewRequest(Request):
    """Exactly one of `event_slug` and `attraction_slug`."""

    quantities: Annotated[
        dict[str, int],
        Meta(
            description="Quantity by ticket type id (as a string); 1 to 20 tickets in all",
            examples=[{"45": 2}],
        ),
    ]
    event_slug: str | None = None
    attraction_slug: str | None = None
    discount_code: Annotated[
        str | None, Meta(description="Applied if valid; an invalid one is silently left out")
    ] = None
    visit_date: Annotated[
        date | None,
        Meta(description="An attraction's visit, as the purchase takes it: prices do not vary"),
    ] = None
    # A shop may send its purchase's body as it is: what prices do not depend on is ignored.
    buyer: Annotated[Any, Meta(description="Ignored: the purchase's")] = None
    attendees: Annotated[Any, Meta(description="Ignored: the purchase's")] = None
    selected_seats: Annotated[Any, Meta(description="Ignored: prices do not vary by seat")] = None
    comment: Annotated[Any, Meta(description="Ignored: the purchase's")] = None


class PricingPreview(Payload):
    pricing: Pricing


class DiscountValidationRequest(Request):
    """Exactly one of `event_slug` and `attraction_slug`."""

    code: Annotated[str, Meta(description="As the buyer typed it: trimmed, case-insensitive")]
    event_slug: str | None = None
    attraction_slug: str | None = None


class DiscountTerms(Payload):
    code: str
    percentage: int | None
    amount_cents: int | None
    applies_to_all: bool
    ticket_type_ids: list[int]
    valid_from: datetime | None
    valid_until: datetime | None
    max_uses: int | None
    current_uses: int


class DiscountValidation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Either `valid: true` with the code's terms, or `valid: false` with the reason."""

    valid: bool
    discount: DiscountTerms | None = None
    reason: Reason | None = None


async def _ticket_types(
    pool: asyncpg.Pool, organization_id: int, event_slug: str | None, attraction_slug: str | None
) -> dict[int, TicketType]:
    """The ticket types of the caller's event or attraction. A slug that cannot exist is a 404
    without a query, so no odd text (a NUL byte, say) ever reaches the database."""
    if (event_slug is None) == (attraction_slug is None):
        raise invalid_request("event_slug", "give exactly one of event_slug and attraction_slug")
    row = None
    if event_slug is not None:
        if SLUG.fullmatch(event_slug):
            row = await catalog.event(pool, organization_id, event_slug)
        if row is None:
            raise not_found("event")
        if row["status"] == "cancelled":  # as a purchase is refused: nothing is sold for it
            raise invalid_request("event_slug", "the event is cancelled")
        types = await catalog.ticket_types(pool, event_id=row["id"])
    else:
        if attraction_slug is not None and SLUG.fullmatch(attraction_slug):
            row = await catalog.attraction(pool, organization_id, attraction_slug)
        if row is None:
            raise not_found("attraction")
        types = await catalog.ticket_types(pool, attraction_id=row["id"])
    return {t.id: t for t in types}


async def _discount(
    pool: asyncpg.Pool, organization_id: int, code: str
) -> tuple[DiscountCodeCreated | None, int]:
    """The code as a purchase would find it (trimmed, upper case) and its uses so far, counted
    in its stream: the last use taken a moment ago is a `max_uses_reached` now, as the next
    purchase would be told. A code that cannot exist is not looked up."""
    normalized = code.strip().upper()
    if not DISCOUNT_CODE.fullmatch(normalized):
        return None, 0
    terms = await catalog.discount_code(pool, organization_id, normalized)
    if terms is None:
        return None, 0
    return terms, uses_counted(await count_types(pool, streams.discount(terms.discount_id)))


def _quantities(given: dict[str, int]) -> dict[int, int]:
    """What can be checked without the catalog, in the order POST /purchases checks it."""
    for key, n in given.items():
        if not CANONICAL_ID.fullmatch(key):
            raise invalid_request(f"quantities.{key}", "keys are ticket type ids")
        if n < 0:
            raise invalid_request(f"quantities.{key}", "quantities must not be negative")
    if not 1 <= sum(given.values()) <= MAX_TICKETS:
        raise invalid_request("quantities", f"total quantity must be 1..{MAX_TICKETS}")
    return {int(key): n for key, n in given.items()}


def _check_ticket_types(quantities: dict[int, int], types: dict[int, TicketType]) -> None:
    """Each type must be the product's and within its per-purchase cap, as a purchase's must:
    a preview of a basket that cannot be bought would be a promise the checkout breaks."""
    for tid, n in quantities.items():
        if tid not in types:
            raise invalid_request(f"quantities.{tid}", f"ticket type {tid} is not sold here")
        cap = types[tid].max_per_purchase
        if n > cap:
            raise invalid_request(f"quantities.{tid}", f"at most {cap} per purchase")


async def preview_pricing(request: web.Request) -> web.Response:
    """An unusable code is left out rather than refused, as the spec says: the buyer still
    sees a price, and POST /discount-codes/validate says why."""
    body = await parse_body(request, PricingPreviewRequest)
    quantities = _quantities(body.quantities)
    pool = pool_of(request)
    organization_id = organization_of(request)
    types = await _ticket_types(pool, organization_id, body.event_slug, body.attraction_slug)
    _check_ticket_types(quantities, types)
    organization = await catalog.organization(pool, organization_id)
    if organization is None:
        raise not_found("organization")
    at = now()
    discount = None
    if body.discount_code is not None:
        terms, uses = await _discount(pool, organization_id, body.discount_code)
        bought = {tid for tid, n in quantities.items() if n > 0}
        if verdict(terms, uses, at, bought) is None:
            discount = terms
    fee = FeeRule(
        percent_bps=organization["fee_percent_bps"],
        per_ticket_cents=organization["fee_per_ticket_cents"],
    )
    pricing = price_basket(types, quantities, fee, organization["currency"], at, discount)
    return json_response(PricingPreview(pricing=pricing))


async def validate_discount_code(request: web.Request) -> web.Response:
    """`invalid_code` when the code exists but applies to none of the product's ticket types."""
    body = await parse_body(request, DiscountValidationRequest)
    pool = pool_of(request)
    organization_id = organization_of(request)
    types = await _ticket_types(pool, organization_id, body.event_slug, body.attraction_slug)
    terms, uses = await _discount(pool, organization_id, body.code)
    reason = verdict(terms, uses, now(), set(types))
    if reason is not None:
        return json_response(DiscountValidation(valid=False, reason=reason))
    assert terms is not None
    return json_response(
        DiscountValidation(
            valid=True,
            discount=DiscountTerms(
                code=terms.code,
                percentage=terms.percentage,
                amount_cents=terms.amount_cents,
                applies_to_all=terms.applies_to_all,
                ticket_type_ids=terms.ticket_type_ids,
                valid_from=terms.valid_from,
                valid_until=terms.valid_until,
                max_uses=terms.max_uses,
                current_uses=uses,
            ),
        )
    )


ROUTES = [
    Route(
        "POST",
        "/api/v1/pricing/preview",
        preview_pricing,
        "Preview the cost of a purchase (locks nothing, counts no discount use)",
        "Pricing",
        PricingPreview,
        body=PricingPreviewRequest,
        errors=(401, 404, 422, 429),
    ),
    Route(
        "POST",
        "/api/v1/discount-codes/validate",
        validate_discount_code,
        "Check a discount code against an event or attraction (counts no use)",
        "Discount codes",
        DiscountValidation,
        body=DiscountValidationRequest,
        errors=(401, 404, 422, 429),
        bucket="discount_validate",
    ),
]
