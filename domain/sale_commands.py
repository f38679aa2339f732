"""The sales desk's commands, as data, and the Decision each one comes to. A command carries all
that was drawn for it beforehand (ids, codes, the clock, a prepaid PaymentIntent), so it is
decided alike at any desk: this gateway's, or the owning gateway's it was sent to over NATS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from domain import catalog, refunds, tickets, venues
from domain.events import Event
from domain.purchasing import PurchaseOpened, PurchaseRequest, PurchaseState

# What a command sees of the streams beside the inventory's: their states, by stream id.
Companions = Mapping[str, Any]


@dataclass
class Decision:
    """What one command decided: events per stream, the versions it expects of streams the desk
    does not keep (a purchase, a new ticket), and the result its caller gets."""

    events: dict[str, list[Event]]
    result: Any = None
    expected: dict[str, int] = field(default_factory=dict)


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    """What is drawn before the decision: randomness, ids and the clock are IO to the domain."""

    token: str
    ticket_ids: list[int]
    codes: list[str]
    attendee_tokens: list[str]
    access_code: str
    now: datetime
    expires_at: datetime
    api_key_id: int | None
    discount_id: int | None


class PrepaidIntent(msgspec.Struct, frozen=True, kw_only=True):
    """A PaymentIntent created for a purchase's forecast, before its decision: recorded in the
    purchase it opens, for exactly the amount it was created for."""

    intent_id: str
    client_secret: str | None
    amount_cents: int


class OpenEventPurchase(msgspec.Struct, frozen=True, kw_only=True):
    request: PurchaseRequest
    organization: catalog.OrganizationRegistered
    draft: Draft
    sections: list[venues.Section]
    intent: PrepaidIntent | None = None


class OpenAttractionPurchase(msgspec.Struct, frozen=True, kw_only=True):
    request: PurchaseRequest
    organization: catalog.OrganizationRegistered
    draft: Draft
    intent: PrepaidIntent | None = None


class ReleaseHolds(msgspec.Struct, frozen=True, kw_only=True):
    """End an unpaid purchase (`ending`: its cancellation or expiry) and give its holds and
    discount use back, expecting the purchase at the version `ending` was decided on."""

    opened: PurchaseOpened
    reason: str
    ending: list[Event]
    purchase_version: int


class HoldAgain(msgspec.Struct, frozen=True, kw_only=True):
    """A payment arrived for a purchase that had let go of its seats: hold the same seats again
    and pay the purchase with its tickets, if the seats are still free."""

    state: PurchaseState
    purchase_version: int
    intent_id: str
    now: datetime
    schedule: tickets.Schedule
    sections: list[venues.Section]  # the event's (its standing places); none for attractions


class RefundTickets(msgspec.Struct, frozen=True, kw_only=True):
    """A refund decided on the purchase and its tickets (domain/refunds.py): their seats or
    places go back to the inventory, and the discount use once no ticket is left, in the same
    append, which expects each of the refund's other streams at the version it was decided
    on (a scan or another refund meanwhile fails it)."""

    opened: PurchaseOpened
    refund: refunds.Refund
    expected: dict[str, int]


OpenPurchase = OpenEventPurchase | OpenAttractionPurchase
SaleCommand = OpenEventPurchase | OpenAttractionPurchase | ReleaseHolds | HoldAgain | RefundTickets


def with_intent(command: OpenPurchase, intent: PrepaidIntent) -> OpenPurchase:
    return msgspec.structs.replace(command, intent=intent)
