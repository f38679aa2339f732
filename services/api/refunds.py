"""Refund endpoints: the partner refunds a paid purchase's tickets (with Idempotency-Key), lists
its refunds and disputes, and answers buyers' refund requests; the buyer asks with the ticket's
code and the purchase e-mail. Decisions and reads are services/usecases/refunds.py's."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import asyncpg
import msgspec
from aiohttp import web
from msgspec import Meta

from domain.purchasing import PurchaseState, RefundDecided, RefundReported, late_payment_refund_id
from domain.refunds import REASON_MAX, RefundRequestState
from infra.idempotency import Claim
from services.api import idempotent
from services.api.context import PURCHASES, REFUNDS, api_key_of, metadata_of, organization_of
from services.api.http import decode_body, json_response, parse_query
from services.api.routes import Route
from services.api.schemas import Payload, Query
from services.usecases.refunds import Refunds, refund_id_for

Reason = Annotated[str, Meta(max_length=REASON_MAX)]
RequestStatus = Literal["pending", "approved", "declined"]


class RefundOrder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Leave `ticket_ids` out to refund every ticket not refunded yet; `force` refunds scanned
    tickets too."""

    ticket_ids: list[int] | None = None
    reason: Reason | None = None
    force: bool = False


class RefundView(Payload):
    id: str
    purchase_token: str
    ticket_ids: list[int]
    amount_cents: int
    currency: str
    reason: str | None
    by: Annotated[
        str,
        Meta(
            description="`partner`, `buyer` (a request approved), `stripe` (its dashboard) or"
            " `linjerum` (a payment that arrived after its purchase ended, given back whole)"
        ),
    ]
    # pending until Stripe made it (or for a refund without money: succeeded at once).
    status: Literal["pending", "succeeded"]
    stripe_refund_id: str | None


class RefundResponse(Payload):
    refund: RefundView


class RefundList(Payload):
    refunds: list[RefundView]
    refunded_cents: int


class DisputeView(Payload):
    id: str
    purchase_token: str
    payment_intent_id: str
    amount_cents: int
    currency: str
    reason: str
    status: str
    disputed_at: datetime


class DisputeList(Payload):
    disputes: list[DisputeView]


class ListQuery(Query):
    limit: Annotated[int, Meta(ge=1, le=100)] = 50


class RefundAsk(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    email: Annotated[str, Meta(max_length=254)]
    reason: Reason | None = None


class DeclineBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: Reason | None = None


class RefundRequestView(Payload):
    id: str
    status: RequestStatus
    ticket_id: int
    ticket_code: str
    purchase_token: str
    reason: str | None
    decline_reason: str | None
    refund_id: str | None
    requested_at: datetime
    decided_at: datetime | None


class RefundRequestResponse(Payload):
    refund_request: RefundRequestView


class ApprovedResponse(Payload):
    refund_request: RefundRequestView
    refund: RefundView


class RefundRequestList(Payload):
    refund_requests: list[RefundRequestView]


class RequestsQuery(ListQuery, frozen=True, kw_only=True):
    status: RequestStatus | None = None
    ticket: Annotated[str, Meta(max_length=64)] | None = None


def _refunds(request: web.Request) -> Refunds:
    return request.app[REFUNDS]


def _refund_view(state: PurchaseState, refund: RefundDecided | RefundReported) -> RefundView:
    """A decided refund is pending until Stripe made it (one moving no money: at once); one
    made in Stripe's dashboard has happened already."""
    status: Literal["pending", "succeeded"] = "succeeded"
    if isinstance(refund, RefundReported):
        made, reason, by = None, "refunded at Stripe", "stripe"
    else:
        made, reason, by = state.refunds_made.get(refund.refund_id), refund.reason, refund.by
        if made is None and refund.intent_id is not None and refund.amount_cents > 0:
            status = "pending"
    return RefundView(
        id=refund.refund_id,
        purchase_token=refund.token,
        ticket_ids=refund.ticket_ids,
        amount_cents=refund.amount_cents,
        currency=state.opened.pricing.currency,
        reason=reason,
        by=by,
        status=status,
        stripe_refund_id=made,
    )


def _late_payment_view(state: PurchaseState) -> RefundView:
    """A payment that arrived after its purchase ended, with its seats gone: the service gives
    it back whole (pending until Stripe made the refund)."""
    opened = state.opened
    reason = state.refund_decision.reason if state.refund_decision else "late payment"
    return RefundView(
        id=late_payment_refund_id(opened.token),
        purchase_token=opened.token,
        ticket_ids=[t.id for t in opened.tickets],
        amount_cents=opened.pricing.total_cents,
        currency=opened.pricing.currency,
        reason=reason,
        by="linjerum",
        status="succeeded" if state.refund_id else "pending",
        stripe_refund_id=state.refund_id,
    )


def _request_view(state: RefundRequestState) -> RefundRequestView:
    asked = state.requested
    return RefundRequestView(
        id=asked.request_id,
        status=state.status,
        ticket_id=asked.ticket_id,
        ticket_code=asked.ticket_code,
        purchase_token=asked.purchase_token,
        reason=asked.reason,
        decline_reason=state.decline_reason,
        refund_id=state.refund_id,
        requested_at=asked.requested_at,
        decided_at=state.decided_at,
    )


def _listed_request(row: asyncpg.Record) -> RefundRequestView:
    return RefundRequestView(
        id=row["request_id"],
        status=row["status"],
        ticket_id=row["ticket_id"],
        ticket_code=row["ticket_code"],
        purchase_token=row["purchase_token"],
        reason=row["reason"],
        decline_reason=row["decline_reason"],
        refund_id=row["refund_id"],
        requested_at=row["requested_at"],
        decided_at=row["decided_at"],
    )


async def _refund(request: web.Request, raw: bytes, claim: Claim | None) -> web.Response:
    order = decode_body(raw, RefundOrder) if raw else RefundOrder()
    token = request.match_info["token"]
    organization = organization_of(request)
    decided = await _refunds(request).refund(
        token,
        organization,
        order.ticket_ids,
        order.reason,
        order.force,
        metadata_of(request),
        refund_id_for(claim.reserved) if claim is not None else None,
    )
    state, _ = await request.app[PURCHASES].find(token, organization)
    return json_response(RefundResponse(refund=_refund_view(state, decided)), 201)


async def refund_purchase(request: web.Request) -> web.Response:
    raw = await request.read()
    return await idempotent.once(request, raw, lambda claim: _refund(request, raw, claim))


async def list_refunds(request: web.Request) -> web.Response:
    state, _ = await request.app[PURCHASES].find(
        request.match_info["token"], organization_of(request)
    )
    refunds = [*state.ticket_refunds.values(), *state.reported_refunds.values()]
    views = [_refund_view(state, refund) for refund in refunds]
    if state.refunded:
        views.append(_late_payment_view(state))
    return json_response(RefundList(refunds=views, refunded_cents=state.refunded_cents))


async def list_disputes(request: web.Request) -> web.Response:
    query = parse_query(request, ListQuery)
    rows = await _refunds(request).disputes(organization_of(request), query.limit)
    return json_response(
        DisputeList(
            disputes=[
                DisputeView(
                    id=r["dispute_id"],
                    purchase_token=r["purchase_token"],
                    payment_intent_id=r["intent_id"],
                    amount_cents=r["amount_cents"],
                    currency=r["currency"],
                    reason=r["reason"],
                    status=r["status"],
                    disputed_at=r["disputed_at"],
                )
                for r in rows
            ]
        )
    )


async def ask_refund(request: web.Request) -> web.Response:
    ask = decode_body(await request.read(), RefundAsk)
    key = api_key_of(request)
    state = await _refunds(request).request(
        request.match_info["code"], ask.email, ask.reason, key.organization_id, metadata_of(request)
    )
    return json_response(RefundRequestResponse(refund_request=_request_view(state)), 201)


async def list_refund_requests(request: web.Request) -> web.Response:
    query = parse_query(request, RequestsQuery)
    rows = await _refunds(request).requests(
        organization_of(request), query.status, query.ticket, query.limit
    )
    return json_response(RefundRequestList(refund_requests=[_listed_request(r) for r in rows]))


async def get_refund_request(request: web.Request) -> web.Response:
    state = await _refunds(request).find_request(
        request.match_info["request_id"], organization_of(request)
    )
    return json_response(RefundRequestResponse(refund_request=_request_view(state)))


async def approve_refund_request(request: web.Request) -> web.Response:
    organization = organization_of(request)
    state, decided = await _refunds(request).approve(
        request.match_info["request_id"], organization, metadata_of(request)
    )
    purchase, _ = await request.app[PURCHASES].find(decided.token, organization)
    return json_response(
        ApprovedResponse(
            refund_request=_request_view(state), refund=_refund_view(purchase, decided)
        )
    )


async def decline_refund_request(request: web.Request) -> web.Response:
    raw = await request.read()
    body = decode_body(raw, DeclineBody) if raw else DeclineBody()
    state = await _refunds(request).decline(
        request.match_info["request_id"],
        organization_of(request),
        body.reason,
        metadata_of(request),
    )
    return json_response(RefundRequestResponse(refund_request=_request_view(state)))


ROUTES = [
    Route(
        "POST",
        "/api/v1/purchases/{token}/refund",
        refund_purchase,
        "Refund a paid purchase, or some of its tickets",
        "Refunds",
        RefundResponse,
        status=201,
        body=RefundOrder,
        errors=(401, 404, 409, 422, 429),
        path_params={"token": str},
        idempotent=True,
    ),
    Route(
        "GET",
        "/api/v1/purchases/{token}/refunds",
        list_refunds,
        "The refunds of a purchase",
        "Refunds",
        RefundList,
        errors=(401, 404, 429),
        path_params={"token": str},
    ),
    Route(
        "GET",
        "/api/v1/disputes",
        list_disputes,
        "Disputed payments (chargebacks)",
        "Refunds",
        DisputeList,
        query=ListQuery,
        errors=(401, 422, 429),
    ),
    Route(
        "POST",
        "/api/v1/tickets/{code}/refund-requests",
        ask_refund,
        "A buyer asks for a ticket's refund (ticket code and purchase e-mail)",
        "Buyer self-service",
        RefundRequestResponse,
        status=201,
        body=RefundAsk,
        errors=(401, 404, 409, 422, 429),
        path_params={"code": str},
    ),
    Route(
        "GET",
        "/api/v1/refund-requests",
        list_refund_requests,
        "Buyers' refund requests",
        "Refunds",
        RefundRequestList,
        query=RequestsQuery,
        errors=(401, 422, 429),
    ),
    Route(
        "GET",
        "/api/v1/refund-requests/{request_id}",
        get_refund_request,
        "One refund request",
        "Refunds",
        RefundRequestResponse,
        errors=(401, 404, 429),
        path_params={"request_id": str},
    ),
    Route(
        "POST",
        "/api/v1/refund-requests/{request_id}/approve",
        approve_refund_request,
        "Approve a refund request: its ticket is refunded",
        "Refunds",
        ApprovedResponse,
        errors=(401, 404, 409, 429),
        path_params={"request_id": str},
    ),
    Route(
        "POST",
        "/api/v1/refund-requests/{request_id}/decline",
        decline_refund_request,
        "Decline a refund request",
        "Refunds",
        RefundRequestResponse,
        body=DeclineBody,
        errors=(401, 404, 409, 422, 429),
        path_params={"request_id": str},
    ),
]
