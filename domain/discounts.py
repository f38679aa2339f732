"""A discount code: its rules, fixed when it is created, and its uses: redeemed by a purchase in
the same append that holds its seats, and given back when that purchase is cancelled or
expires, so `max_uses` is never exceeded and an abandoned checkout does not burn a use."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import msgspec

from domain.errors import DomainError
from domain.events import Event
from domain.fields import Struct, aware, require

Reason = Literal["not_found", "not_yet_valid", "expired", "max_uses_reached", "invalid_code"]

DISCOUNT_CODE = re.compile(r"^[A-Z0-9_-]{3,40}\Z")


class DiscountCodeCreated(Event, frozen=True):
    discount_id: int
    organization_id: int
    code: str
    percentage: int | None
    amount_cents: int | None
    applies_to_all: bool
    ticket_type_ids: list[int]
    valid_from: datetime | None
    valid_until: datetime | None
    max_uses: int | None


class CreateDiscountCode(Struct):
    code: str
    percentage: int | None = None
    amount_cents: int | None = None
    applies_to_all: bool = True
    ticket_type_ids: list[int] = msgspec.field(default_factory=list)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    max_uses: int | None = None


def create_discount_code(
    cmd: CreateDiscountCode, organization_id: int, discount_id: int
) -> list[Event]:
    code = cmd.code.strip().upper()
    require(bool(DISCOUNT_CODE.match(code)), "code", "code is 3-40 letters, digits, - or _")
    require(
        (cmd.percentage is None) != (cmd.amount_cents is None),
        "percentage",
        "give exactly one of percentage and amount_cents",
    )
    require(
        cmd.percentage is None or 1 <= cmd.percentage <= 100, "percentage", "percentage is 1..100"
    )
    require(cmd.amount_cents is None or cmd.amount_cents > 0, "amount_cents", "amount must be > 0")
    require(
        cmd.applies_to_all or bool(cmd.ticket_type_ids),
        "ticket_type_ids",
        "name the ticket types or set applies_to_all",
    )
    require(cmd.max_uses is None or cmd.max_uses > 0, "max_uses", "max_uses must be positive")
    aware(cmd.valid_from, "valid_from")
    aware(cmd.valid_until, "valid_until")
    if cmd.valid_from is not None and cmd.valid_until is not None:
        require(cmd.valid_from < cmd.valid_until, "valid_until", "valid_until before valid_from")
    return [
        DiscountCodeCreated(
            discount_id=discount_id,
            organization_id=organization_id,
            code=code,
            percentage=cmd.percentage,
            amount_cents=cmd.amount_cents,
            applies_to_all=cmd.applies_to_all,
            ticket_type_ids=[] if cmd.applies_to_all else list(cmd.ticket_type_ids),
            valid_from=cmd.valid_from,
            valid_until=cmd.valid_until,
            max_uses=cmd.max_uses,
        )
    ]


class DiscountCodeRedeemed(Event, frozen=True):
    discount_id: int
    purchase_token: str


class DiscountCodeReleased(Event, frozen=True):
    discount_id: int
    purchase_token: str


class InvalidDiscountCode(DomainError):
    code = "invalid_discount_code"


class MaxUsesReached(DomainError):
    code = "max_uses_reached"


@dataclass
class DiscountState:
    created: DiscountCodeCreated
    redeemed_by: set[str] = field(default_factory=set)

    @property
    def uses(self) -> int:
        return len(self.redeemed_by)


def evolve_discount(state: DiscountState | None, event: Event) -> DiscountState | None:
    """Mutates and returns the state: a hot code sees many redemptions, copying would be O(n)."""
    match event:
        case DiscountCodeCreated():
            return DiscountState(created=event)
        case DiscountCodeRedeemed() if state is not None:
            state.redeemed_by.add(event.purchase_token)
        case DiscountCodeReleased() if state is not None:
            state.redeemed_by.discard(event.purchase_token)
    return state


def clone_discount(state: DiscountState | None) -> DiscountState | None:
    """A copy to decide on: the original only ever holds stored events."""
    if state is None:
        return None
    return DiscountState(created=state.created, redeemed_by=set(state.redeemed_by))


def uses_counted(types: Mapping[str, int]) -> int:
    """A code's uses from how many of each event its stream holds: a use is only ever given
    back once, after it was redeemed (`release`), so the uses are the difference."""
    redeemed = types.get(DiscountCodeRedeemed.__name__, 0)
    return redeemed - types.get(DiscountCodeReleased.__name__, 0)


def verdict(
    created: DiscountCodeCreated | None, uses: int, now: datetime, type_ids: set[int]
) -> Reason | None:
    """Why the code cannot be used for these ticket types now, or None when it can."""
    if created is None:
        return "not_found"
    if created.valid_from is not None and now < created.valid_from:
        return "not_yet_valid"
    if created.valid_until is not None and now >= created.valid_until:
        return "expired"
    if created.max_uses is not None and uses >= created.max_uses:
        return "max_uses_reached"
    if not created.applies_to_all and not type_ids & set(created.ticket_type_ids):
        return "invalid_code"
    return None


def redeem(state: DiscountState, token: str, now: datetime, type_ids: set[int]) -> list[Event]:
    reason = verdict(state.created, state.uses, now, type_ids)
    if reason == "max_uses_reached":
        raise MaxUsesReached(f"discount code {state.created.code} has no uses left")
    if reason is not None:
        raise InvalidDiscountCode(f"discount code {state.created.code}: {reason}", "discount_code")
    return [DiscountCodeRedeemed(discount_id=state.created.discount_id, purchase_token=token)]


def redeem_again(state: DiscountState, token: str) -> list[Event]:
    """A purchase that gave its use back and is paid after all (its payment came late) takes a
    use again: its price was the discounted one. Only the limit is asked: the code's dates and
    ticket types held when it was redeemed first."""
    if token in state.redeemed_by:
        return []
    if state.created.max_uses is not None and state.uses >= state.created.max_uses:
        raise MaxUsesReached(f"discount code {state.created.code} has no uses left")
    return [DiscountCodeRedeemed(discount_id=state.created.discount_id, purchase_token=token)]


def release(state: DiscountState, token: str) -> list[Event]:
    if token not in state.redeemed_by:
        return []
    return [DiscountCodeReleased(discount_id=state.created.discount_id, purchase_token=token)]
