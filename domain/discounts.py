"""A discount code's uses: redeemed by a purchase in the same append that holds its seats, and
given back when that purchase is cancelled or expires, so `max_uses` is never exceeded and an
abandoned checkout does not burn a use."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from domain.catalog import DiscountCodeCreated
from domain.errors import DomainError
from domain.events import Event

Reason = Literal["not_found", "not_yet_valid", "expired", "max_uses_reached", "invalid_code"]


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


def release(state: DiscountState, token: str) -> list[Event]:
    if token not in state.redeemed_by:
        return []
    return [DiscountCodeReleased(discount_id=state.created.discount_id, purchase_token=token)]
