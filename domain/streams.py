"""Every stream name, built and parsed in one place. A stream is `<category>-<id>`: the category
is what the relay's subjects and the projectors' subscriptions are keyed by, the id is the
aggregate's own (a number, or a purchase's token)."""

from __future__ import annotations

ORGANIZATION = "organization"
VENUE = "venue"
EVENT = "event"
ATTRACTION = "attraction"
DISCOUNT = "discount"
PURCHASE = "purchase"
TICKET = "ticket"
TRANSFER = "transfer"
# One word: a category is what comes before the first dash.
REFUND_REQUEST = "refundrequest"
API_KEY = "apikey"


def category(stream_id: str) -> str:
    """`event-123` → `event`."""
    return stream_id.split("-", 1)[0]


def organization(organization_id: int) -> str:
    return f"{ORGANIZATION}-{organization_id}"


def venue(venue_id: int) -> str:
    return f"{VENUE}-{venue_id}"


def event(event_id: int) -> str:
    return f"{EVENT}-{event_id}"


def attraction(attraction_id: int) -> str:
    return f"{ATTRACTION}-{attraction_id}"


def discount(discount_id: int) -> str:
    return f"{DISCOUNT}-{discount_id}"


def purchase(token: str) -> str:
    return f"{PURCHASE}-{token}"


def ticket(ticket_id: int) -> str:
    return f"{TICKET}-{ticket_id}"


def transfer(transfer_id: str) -> str:
    return f"{TRANSFER}-{transfer_id}"


def refund_request(request_id: str) -> str:
    return f"{REFUND_REQUEST}-{request_id}"


def purchase_token(stream_id: str) -> str:
    """The token of a purchase's stream."""
    return stream_id.removeprefix(f"{PURCHASE}-")


def transfer_id(stream_id: str) -> str:
    """The id of a transfer's stream."""
    return stream_id.removeprefix(f"{TRANSFER}-")


def discount_id(stream_id: str) -> int | None:
    """The discount code's id of its stream; None for a stream of another category."""
    if category(stream_id) != DISCOUNT:
        return None
    return int(stream_id.removeprefix(f"{DISCOUNT}-"))


# The version of a stream before its first event: what a decision expects of a stream it starts.
NEW = 0
