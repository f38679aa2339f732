"""Which errors the document promises for a route: the spec's Errors table, cut down to the
statuses and codes that route can really answer with."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from services.api.docs.spec import REF_TEMPLATE
from services.api.errors import ErrorBody
from services.api.routes import Route

# The spec's Errors table: per status, its description and the codes it may carry.
ERRORS: dict[int, tuple[str, tuple[tuple[str, str], ...]]] = {
    401: ("Unauthorized", (("unauthorized", "Missing, invalid, or revoked API key"),)),
    404: ("Not found", (("not_found", "Resource missing, draft, or not in your organization"),)),
    409: (
        "Conflict with the current state",
        (
            ("insufficient_availability", "Ticket types sold out mid-request"),
            ("seats_taken", "One or more requested seats are now taken"),
            ("max_uses_reached", "Discount code exhausted"),
            ("not_yet_paid", "Purchase not confirmed; cannot download PDFs"),
            ("daily_capacity_exceeded", "Attraction ran out of capacity on visit_date"),
            ("idempotency_in_flight", "Retry while the original request still running"),
            ("already_paid", "Tried to cancel a purchase that is already paid"),
            ("ticket_scanned", "Scanned: no transfer, no refund unless forced (`force`)"),
            ("ticket_refunded", "The ticket is refunded: no transfer, PDF, e-ticket or pass"),
            ("already_refunded", "The ticket (or every ticket of the purchase) is refunded"),
            ("order_inactive", "The purchase was cancelled or expired: nothing to refund or issue"),
            ("refund_request_closed", "The refund request was approved or declined already"),
            ("ticket_already_transferred", "The ticket was transferred once already"),
            ("transfer_pending", "The ticket is offered to someone already; wait for the answer"),
            ("transfers_not_allowed", "The event does not allow transfers"),
            ("transfers_closed", "Transfers closed (the event's closing time, or its start)"),
            ("transfer_expired", "The transfer's deadline passed before it was answered"),
            ("transfer_not_open", "The transfer was accepted or declined already"),
            ("not_yet_fulfilled", "Before the event's fulfillment_starts_at: no e-ticket or pass"),
            ("personalization_not_open", "The ticket's personalization window has not opened"),
            ("personalization_closed", "Window over, or ticket scanned, refunded or order ended"),
        ),
    ),
    422: (
        "Invalid request",
        (
            ("invalid_request", "Malformed payload or parameter (see detail)"),
            ("invalid_discount_code", "Discount code invalid or expired"),
            ("idempotency_key_reuse", "Same key sent with a different request body"),
        ),
    ),
    408: ("Request timeout", (("request_timeout", "The body did not arrive within 30 s"),)),
    413: ("Payload too large", (("payload_too_large", "The body is over 1 MiB"),)),
    415: (
        "Unsupported media type",
        (("unsupported_media_type", "The body is declared as another type than application/json"),),
    ),
    429: (
        "Too many requests",
        (
            ("rate_limited", "Over the per-minute limit for this endpoint"),
            ("too_many_auth_failures", "IP blocked after repeated bad tokens"),
        ),
    ),
    500: ("Internal error", (("internal_error", "Unexpected server-side failure"),)),
    502: ("Bad gateway", (("stripe_error", "Stripe PaymentIntent creation failed"),)),
    503: (
        "Service unavailable",
        (
            ("payment_processing_unavailable", "Event's Stripe account not onboarded"),
            ("service_unavailable", "Database or message bus out of reach; see Retry-After"),
        ),
    ),
}

# Codes that only a request body can cause, only an authenticated route can answer, or only a
# route taking an Idempotency-Key.
_BODY_CODES = {"invalid_discount_code"}
_AUTH_CODES = {"unauthorized", "too_many_auth_failures"}
_KEY_CODES = {"idempotency_key_reuse", "idempotency_in_flight"}


def error_statuses(route: Route) -> list[int]:
    """The route's declared errors plus those the gateway itself produces for it: 401/429 from
    authentication and rate limits, 422 from decoding its query, body or path, 408, 413 and 415
    from reading a body, 503 while the database or NATS is out of reach."""
    statuses = set(route.errors) | {503}
    if route.authenticated:
        statuses |= {401, 429}
    if route.bucket:
        statuses.add(429)
    if route.query is not None or route.body is not None or route.path_params:
        statuses.add(422)
    if route.body is not None:
        statuses |= {408, 413, 415}
    if route.idempotent:
        statuses |= {409, 422}
    return sorted(statuses)


def error_codes(status: int, route: Route) -> list[tuple[str, str]]:
    """(code, meaning) of the spec's Errors table that this route can answer with."""
    _, codes = ERRORS.get(status, ("Error", ()))
    return [
        (code, meaning)
        for code, meaning in codes
        if (route.body is not None or code not in _BODY_CODES)
        and (route.authenticated or code not in _AUTH_CODES)
        and (route.idempotent or code not in _KEY_CODES)
    ]


def error_schema(status: int, route: Route) -> dict[str, Any]:
    """The error envelope, with `error` narrowed to the codes this status of this route has."""
    codes = [code for code, _ in error_codes(status, route)]
    schema: dict[str, Any] = {"$ref": REF_TEMPLATE.format(name=ErrorBody.__name__)}
    if not codes:
        return schema
    return {"allOf": [schema, {"properties": {"error": {"enum": codes}}}]}


def error_description(status: int, route: Route) -> str:
    """The spec's title and codes for the status; a status outside its Errors table (say, a
    webhook's 400) is described by its HTTP phrase and may carry any code."""
    codes = error_codes(status, route)
    if not codes:
        return HTTPStatus(status).phrase
    title = ERRORS[status][0]
    return title + ": " + "; ".join(f"`{code}`: {meaning}" for code, meaning in codes)
