"""What a worker records of the event it reacts to: the chain's correlation id (the request id
of the HTTP call that started it) and the event itself as the causation id."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from infra.eventstore import Metadata, RecordedEvent

SWEEPER = Metadata(actor="sweeper")


def _recorded(metadata: Metadata) -> RecordedEvent:
    return RecordedEvent(
        event_id="e-1",
        stream_id="purchase-abc",
        version=1,
        type="PurchaseOpened",
        data=msgspec.Raw(b"{}"),
        metadata=metadata,
        recorded_at=datetime.now(UTC),
        tx_id=1,
        position=1,
    )


def test_a_reaction_carries_the_chain_and_names_its_cause() -> None:
    opening = _recorded(Metadata(request_id="req-1", api_key_id=7, correlation_id="req-1"))
    caused = SWEEPER.caused_by(opening)
    assert caused == Metadata(actor="sweeper", causation_id="e-1", correlation_id="req-1")


def test_the_chain_outlives_a_link_that_was_itself_a_reaction() -> None:
    webhook = _recorded(Metadata(request_id="whk-9", causation_id="evt_1", correlation_id="req-1"))
    assert SWEEPER.caused_by(webhook).correlation_id == "req-1"


def test_an_event_stored_before_correlation_ids_chains_on_its_request_id() -> None:
    old = _recorded(Metadata(request_id="req-old", actor="partner-api"))
    assert SWEEPER.caused_by(old).correlation_id == "req-old"


def test_joining_a_chain_keeps_who_acts_and_why() -> None:
    stripe = Metadata(request_id="whk-2", actor="stripe", causation_id="evt_2")
    chained = stripe.in_chain_of(_recorded(Metadata(request_id="req-3", correlation_id="req-3")))
    assert chained == Metadata(
        request_id="whk-2", actor="stripe", causation_id="evt_2", correlation_id="req-3"
    )
