"""Pricing beyond tests/unit/test_selling.py: the lines a basket shows, how a discount and the fee
are rounded and to which lines they apply, and when an early-bird price ends."""

from __future__ import annotations

from datetime import timedelta

from domain.catalog import FeeRule
from domain.inventory.stock import early_bird_active
from domain.pricing import AppliedDiscount, LineItem, price_basket, ticket_shares
from tests.unit.builders import NOW, STAAENDE, VOKSEN, discount_code, ticket_type

TYPES = {
    VOKSEN: ticket_type(VOKSEN, name="Voksen", price_cents=1010),
    STAAENDE: ticket_type(STAAENDE, name="Ståplads", price_cents=500),
}


def test_lines_come_in_ticket_type_order_and_empty_ones_are_left_out() -> None:
    pricing = price_basket(TYPES, {STAAENDE: 1, VOKSEN: 2, 99: 0}, FeeRule(), "DKK", NOW)
    assert pricing.line_items == [
        LineItem(
            ticket_type_id=VOKSEN,
            ticket_type_name="Voksen",
            quantity=2,
            unit_price_cents=1010,
            line_total_cents=2020,
            is_early_bird=False,
        ),
        LineItem(
            ticket_type_id=STAAENDE,
            ticket_type_name="Ståplads",
            quantity=1,
            unit_price_cents=500,
            line_total_cents=500,
            is_early_bird=False,
        ),
    ]
    assert (pricing.subtotal_cents, pricing.total_cents, pricing.discount) == (2520, 2520, None)


def test_a_percentage_applies_to_its_types_lines_only_rounded_half_up() -> None:
    code = discount_code(applies_to_all=False, ticket_type_ids=[VOKSEN])
    half = price_basket(TYPES, {VOKSEN: 1, STAAENDE: 1}, FeeRule(), "DKK", NOW, code)
    assert half.discount_cents == 253  # 25 % of 1010 is 252.5
    assert half.discount == AppliedDiscount(code="SPRING25", percentage=25, amount_cents=None)
    cheaper = {VOKSEN: ticket_type(VOKSEN, price_cents=1009)}
    assert price_basket(cheaper, {VOKSEN: 1}, FeeRule(), "DKK", NOW, code).discount_cents == 252


def test_a_code_for_types_not_in_the_basket_is_left_out() -> None:
    code = discount_code(applies_to_all=False, ticket_type_ids=[VOKSEN])
    pricing = price_basket(TYPES, {STAAENDE: 2}, FeeRule(), "DKK", NOW, code)
    assert (pricing.discount_cents, pricing.discount, pricing.total_cents) == (0, None, 1000)


def test_the_fee_is_on_the_subtotal_before_the_discount_plus_a_fixed_part_per_ticket() -> None:
    fee = FeeRule(percent_bps=250, per_ticket_cents=100)
    pricing = price_basket(TYPES, {VOKSEN: 1}, fee, "DKK", NOW, discount_code(percentage=100))
    # 2.5 % of 1010 is 25.25: 25, and one ticket's 100.
    assert (pricing.discount_cents, pricing.fee_cents, pricing.total_cents) == (1010, 125, 125)


def test_free_tickets_carry_no_fee() -> None:
    free = {VOKSEN: ticket_type(VOKSEN, price_cents=0)}
    fee = FeeRule(percent_bps=500, per_ticket_cents=100)
    pricing = price_basket(free, {VOKSEN: 3}, fee, "EUR", NOW)
    assert (pricing.fee_cents, pricing.total_cents, pricing.currency) == (0, 0, "EUR")


def test_an_early_bird_price_ends_at_its_end_date() -> None:
    early = ticket_type(
        VOKSEN, price_cents=1000, early_bird_price_cents=800, early_bird_end_date=NOW
    )
    before = price_basket(
        {VOKSEN: early}, {VOKSEN: 1}, FeeRule(), "DKK", NOW - timedelta(seconds=1)
    )
    assert (before.line_items[0].unit_price_cents, before.line_items[0].is_early_bird) == (
        800,
        True,
    )
    at_end = price_basket({VOKSEN: early}, {VOKSEN: 1}, FeeRule(), "DKK", NOW)
    assert (at_end.line_items[0].unit_price_cents, at_end.line_items[0].is_early_bird) == (
        1000,
        False,
    )
    assert not early_bird_active(ticket_type(VOKSEN, early_bird_price_cents=800), NOW)


def test_a_discount_on_some_types_is_shared_by_their_tickets_alone() -> None:
    """A refund of the Ståplads ticket gave back part of a discount only the Voksen tickets
    had, and the Voksen tickets too little."""
    code = discount_code(applies_to_all=False, ticket_type_ids=[VOKSEN])
    basket = {VOKSEN: 2, STAAENDE: 1}
    pricing = price_basket(TYPES, basket, FeeRule(), "DKK", NOW, code)
    bought = [(VOKSEN, 1010), (VOKSEN, 1010), (STAAENDE, 500)]
    shares = ticket_shares(bought, pricing, FeeRule(), code)
    assert [off for off, _ in shares] == [253, 252, 0]  # 25 % of 2020 is 505
    assert sum(off for off, _ in shares) == pricing.discount_cents


def test_each_tickets_fee_follows_the_rule_on_its_own_price() -> None:
    """The fee was split in equal parts: a cheap ticket carried as much of a percentage as a
    dear one."""
    fee = FeeRule(percent_bps=500, per_ticket_cents=25)
    pricing = price_basket(TYPES, {VOKSEN: 1, STAAENDE: 1}, fee, "DKK", NOW)
    shares = ticket_shares([(VOKSEN, 1010), (STAAENDE, 500)], pricing, fee, None)
    # 5 % of 1010 is 50.5 and of 500 is 25, 76 in all (5 % of 1510, 75.5, rounded half up).
    assert shares == [(0, 51 + 25), (0, 25 + 25)]
    assert sum(part for _, part in shares) == pricing.fee_cents


def test_free_tickets_share_no_fee() -> None:
    free = {VOKSEN: ticket_type(VOKSEN, price_cents=0)}
    fee = FeeRule(percent_bps=500, per_ticket_cents=100)
    pricing = price_basket(free, {VOKSEN: 2}, fee, "DKK", NOW)
    assert ticket_shares([(VOKSEN, 0), (VOKSEN, 0)], pricing, fee, None) == [(0, 0), (0, 0)]
