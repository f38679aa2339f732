"""A purchase is paid or refunded, never both: the decisions about a payment that came late,
without IO."""

from __future__ import annotations

from domain import purchasing
from tests.unit.builders import NOW, purchase_opened

OPENED = purchase_opened()
CREATED = purchasing.PaymentIntentCreated(token="tok", intent_id="pi_1", client_secret="s")


def _state(*events: purchasing.Event) -> purchasing.PurchaseState:
    state = purchasing.replay_purchase([OPENED, CREATED, *events])
    assert state is not None
    return state


def test_a_refund_is_decided_once_and_never_for_a_paid_or_open_purchase() -> None:
    expired = _state(purchasing.PurchaseExpired(token="tok"))
    [decided] = purchasing.decide_late_refund(expired, "pi_1", "seats_taken")
    assert isinstance(decided, purchasing.LatePaymentRefundDecided)
    assert (
        purchasing.decide_late_refund(
            _state(purchasing.PurchaseExpired(token="tok"), decided), "pi_1", "seats_taken"
        )
        == []
    )
    paid = _state(purchasing.PurchasePaid(token="tok", paid_at=NOW, intent_id="pi_1"))
    assert purchasing.decide_late_refund(paid, "pi_1", "seats_taken") == []
    assert purchasing.decide_late_refund(_state(), "pi_1", "seats_taken") == []


def test_a_purchase_whose_refund_is_decided_is_never_paid() -> None:
    decided = purchasing.LatePaymentRefundDecided(token="tok", intent_id="pi_1", reason="x")
    state = _state(purchasing.PurchaseExpired(token="tok"), decided)
    assert state.refunded and state.refund_id is None
    assert purchasing.pay(state, "pi_1", NOW, late=True) == []


def test_the_refund_made_is_recorded_once() -> None:
    decided = purchasing.LatePaymentRefundDecided(token="tok", intent_id="pi_1", reason="x")
    state = _state(purchasing.PurchaseCancelled(token="tok", reason="cancelled"), decided)
    [made] = purchasing.record_refund(state, "re_1")
    assert made == purchasing.LatePaymentRefunded(
        token="tok", intent_id="pi_1", refund_id="re_1", reason="x"
    )
    after = _state(purchasing.PurchaseCancelled(token="tok", reason="cancelled"), decided, made)
    assert after.stripe_status == "refunded" and after.refund_id == "re_1"
    assert purchasing.record_refund(after, "re_1") == []
    assert purchasing.record_refund(_state(), "re_1") == []


def test_a_stream_from_before_refund_decisions_still_reads_as_refunded() -> None:
    legacy = purchasing.LatePaymentRefunded(
        token="tok", intent_id="pi_1", refund_id="re_1", reason="seats_taken"
    )
    state = _state(purchasing.PurchaseExpired(token="tok"), legacy)
    assert state.refunded and state.refund_id == "re_1" and state.stripe_status == "refunded"
    assert purchasing.pay(state, "pi_1", NOW, late=True) == []
    assert purchasing.decide_late_refund(state, "pi_1", "seats_taken") == []
