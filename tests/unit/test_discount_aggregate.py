"""The discount code aggregate without IO: a use is redeemed by a purchase inside the code's
validity window and limits, and given back once when that purchase ends unpaid."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain import discounts
from domain.discounts import (
    DiscountCodeRedeemed,
    DiscountCodeReleased,
    DiscountState,
    InvalidDiscountCode,
    MaxUsesReached,
)
from domain.events import Event
from tests.unit.builders import NOW, VOKSEN, apply, discount_code, refused, replayed


def _then(state: DiscountState | None, events: list[Event]) -> DiscountState:
    return replayed(discounts.evolve_discount, state, events)


def _code(*events: Event, **changes: object) -> DiscountState:
    return _then(None, [discount_code(**changes), *events])


def test_no_code_before_it_is_created() -> None:
    redeemed = DiscountCodeRedeemed(discount_id=9, purchase_token="p1")
    assert apply(discounts.evolve_discount, None, [redeemed]) is None
    assert discounts.clone_discount(None) is None


def test_a_purchase_redeems_one_use() -> None:
    state = _code()
    redeemed = discounts.redeem(state, "p1", NOW, {VOKSEN})
    assert redeemed == [DiscountCodeRedeemed(discount_id=9, purchase_token="p1")]
    state = _then(state, redeemed)
    assert (state.uses, state.redeemed_by) == (1, {"p1"})


def test_the_last_use_is_redeemed_and_then_the_code_is_used_up() -> None:
    state = _code(DiscountCodeRedeemed(discount_id=9, purchase_token="p1"), max_uses=2)
    state = _then(state, discounts.redeem(state, "p2", NOW, {VOKSEN}))
    with refused(MaxUsesReached, "max_uses_reached"):
        discounts.redeem(state, "p3", NOW, {VOKSEN})


def test_a_use_given_back_can_be_redeemed_again() -> None:
    state = _code(DiscountCodeRedeemed(discount_id=9, purchase_token="p1"), max_uses=1)
    released = discounts.release(state, "p1")
    assert released == [DiscountCodeReleased(discount_id=9, purchase_token="p1")]
    state = _then(state, released)
    assert state.uses == 0
    assert discounts.release(state, "p1") == []
    assert discounts.redeem(state, "p2", NOW, {VOKSEN})


def test_a_purchase_that_redeemed_nothing_gives_nothing_back() -> None:
    state = _code(DiscountCodeRedeemed(discount_id=9, purchase_token="p1"))
    assert discounts.release(state, "p2") == []


@pytest.mark.parametrize(
    "changes",
    [
        {"valid_from": NOW + timedelta(microseconds=1)},
        {"valid_until": NOW},
        {"applies_to_all": False, "ticket_type_ids": [99]},
    ],
)
def test_a_code_outside_its_window_or_types_is_refused_naming_the_code(changes: dict) -> None:
    with refused(InvalidDiscountCode, "invalid_discount_code", "discount_code"):
        discounts.redeem(_code(**changes), "p1", NOW, {VOKSEN})


def test_a_code_is_valid_from_its_first_instant_to_just_before_its_end() -> None:
    state = _code(valid_from=NOW, valid_until=NOW + timedelta(microseconds=1))
    assert discounts.redeem(state, "p1", NOW, {VOKSEN})
    limited = _code(applies_to_all=False, ticket_type_ids=[VOKSEN])
    assert discounts.redeem(limited, "p1", NOW, {VOKSEN, 99})


def test_a_batch_decides_on_a_clone_and_the_stored_code_keeps_its_uses() -> None:
    state = _code(max_uses=1)
    batch = discounts.clone_discount(state)
    assert batch is not None
    _then(batch, discounts.redeem(batch, "p1", NOW, {VOKSEN}))
    assert (batch.uses, state.uses) == (1, 0)
    assert discounts.redeem(state, "p2", NOW, {VOKSEN})
