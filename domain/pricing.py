"""What a basket costs: early-bird prices while active, the discount on the lines it applies
to, and the organization's fee. Shared by the pricing preview and the purchase itself, so the
amount charged is always the amount previewed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec

from domain.catalog import FeeRule, TicketType
from domain.discounts import DiscountCodeCreated
from domain.inventory.stock import early_bird_active


class LineItem(msgspec.Struct, frozen=True, kw_only=True):
    ticket_type_id: int
    ticket_type_name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    is_early_bird: bool


class AppliedDiscount(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    percentage: int | None
    amount_cents: int | None


class Pricing(msgspec.Struct, frozen=True, kw_only=True):
    subtotal_cents: int
    discount_cents: int
    fee_cents: int
    total_cents: int
    currency: str
    line_items: list[LineItem]
    discount: AppliedDiscount | None


def unit_price(ticket_type: TicketType, now: datetime) -> tuple[int, bool]:
    if early_bird_active(ticket_type, now):
        assert ticket_type.early_bird_price_cents is not None
        return ticket_type.early_bird_price_cents, True
    return ticket_type.price_cents, False


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def discount_applies(discount: DiscountCodeCreated, ticket_type_id: int) -> bool:
    return discount.applies_to_all or ticket_type_id in discount.ticket_type_ids


def price_basket(
    types: Mapping[int, TicketType],
    quantities: Mapping[int, int],
    fee: FeeRule,
    currency: str,
    now: datetime,
    discount: DiscountCodeCreated | None = None,
) -> Pricing:
    """Line items in ticket-type order. A percentage discount applies to the eligible lines,
    rounded half up; a fixed discount never exceeds them. A discount that matches no line is
    left out (discount null), as an invalid code is."""
    lines = []
    for tid in sorted(quantities):
        if quantities[tid] <= 0:
            continue
        price, early = unit_price(types[tid], now)
        lines.append(
            LineItem(
                ticket_type_id=tid,
                ticket_type_name=types[tid].name,
                quantity=quantities[tid],
                unit_price_cents=price,
                line_total_cents=price * quantities[tid],
                is_early_bird=early,
            )
        )
    subtotal = sum(line.line_total_cents for line in lines)
    eligible = sum(
        line.line_total_cents
        for line in lines
        if discount is not None and discount_applies(discount, line.ticket_type_id)
    )
    discount_cents = 0
    applied = None
    if discount is not None and any(
        discount_applies(discount, line.ticket_type_id) for line in lines
    ):
        if discount.percentage is not None:
            discount_cents = _round_half_up(eligible * discount.percentage, 100)
        else:
            discount_cents = min(discount.amount_cents or 0, eligible)
        applied = AppliedDiscount(
            code=discount.code, percentage=discount.percentage, amount_cents=discount.amount_cents
        )
    tickets = sum(line.quantity for line in lines)
    fee_cents = 0
    if subtotal > 0:
        fee_cents = _round_half_up(subtotal * fee.percent_bps, 10_000)
        fee_cents += fee.per_ticket_cents * tickets
    return Pricing(
        subtotal_cents=subtotal,
        discount_cents=discount_cents,
        fee_cents=fee_cents,
        total_cents=subtotal - discount_cents + fee_cents,
        currency=currency,
        line_items=lines,
        discount=applied,
    )


def spread(total_of: int, weights: Sequence[int], part: int) -> list[int]:
    """`part` of `total_of` spread over the weights in proportion, rounded so the running sums
    round half up: whole cents that add up to `part` exactly."""
    shares, before, running = [], 0, 0
    for weight in weights:
        running += weight
        upto = _round_half_up(part * running, total_of) if total_of else 0
        shares.append(upto - before)
        before = upto
    return shares


def ticket_shares(
    prices: Sequence[tuple[int, int]],
    pricing: Pricing,
    fee: FeeRule,
    discount: DiscountCodeCreated | None,
) -> list[tuple[int, int]]:
    """Each ticket's (discount, fee) for (ticket type, price) in the purchase's order: the
    discount over the tickets it applies to alone, the fee by the rule on the ticket's own
    price, so a refund of some tickets gives back what those tickets cost."""
    eligible = [
        price if discount is not None and discount_applies(discount, tid) else 0
        for tid, price in prices
    ]
    discounts = spread(sum(eligible), eligible, pricing.discount_cents)
    per_ticket = fee.per_ticket_cents if pricing.fee_cents else 0  # free baskets carry none
    weights = [price for _, price in prices]
    percent_part = pricing.fee_cents - per_ticket * len(prices)
    fees = [share + per_ticket for share in spread(sum(weights), weights, percent_part)]
    return list(zip(discounts, fees, strict=True))
