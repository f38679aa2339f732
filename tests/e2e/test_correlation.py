"""Every chain traceable from the HTTP call that started it: what a partner's request stores
carries its request id as correlation id, and what the webhook, the sweeper and the payments
worker store in reaction carries the same correlation id and names its cause (a stored event,
or the Stripe event), so `linjerum audit --correlation <request id>` lists the whole chain."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import nats
import pytest
import structlog
from aiohttp.test_utils import TestClient

from infra.bus import ensure_stream
from infra.event_history import AuditedEvent, audit
from infra.eventstore import (
    ANY_VERSION,
    Metadata,
    PendingAppend,
    RecordedEvent,
    append,
    read_stream,
)
from infra.payments import (
    SIMULATOR_API_KEY,
    SIMULATOR_PUBLISHABLE_KEY,
    SIMULATOR_WEBHOOK_SECRET,
    Payments,
)
from infra.settings import Settings
from services.api.context import PURCHASES
from services.usecases.purchases import Purchases
from services.workers.payment_effects import PaymentEffects
from services.workers.projector import Projector
from services.workers.relay import Relay
from services.workers.sweeper import sweep_once
from tests.e2e.conftest import bearer, order, post, rebuild_read_models, small_event
from tests.e2e.test_audit_cli import _lines, _linjerum
from tests.e2e.test_late_payments import _carry_out
from tests.integration.sample_projection import TallyCounted, TallyProjection
from tests.integration.test_projector import running

WAIT_SECONDS = 10


@pytest.fixture
async def effects(pool: asyncpg.Pool, stripe_sim: TestClient) -> AsyncIterator[PaymentEffects]:
    """The payments worker, on the simulator that delivers Stripe's webhooks to the gateway."""
    payments = Payments(
        SIMULATOR_API_KEY,
        api_base=str(stripe_sim.make_url("")).rstrip("/"),
        publishable_key=SIMULATOR_PUBLISHABLE_KEY,
        webhook_secret=SIMULATOR_WEBHOOK_SECRET,
    )
    yield PaymentEffects(pool, payments)
    await payments.close()


async def _buy(gateway: TestClient, token: str, type_id: int) -> tuple[str, dict]:
    """A purchase over HTTP under a request id of the test's own: (request id, the answer)."""
    request_id = f"chain-{uuid.uuid4().hex}"
    response = await gateway.post(
        "/api/v1/purchases",
        json=order(type_id),
        headers={**bearer(token), "X-Request-ID": request_id},
    )
    assert response.status == 201, await response.text()
    return request_id, await response.json()


async def _chain(pool: asyncpg.Pool, request_id: str, *types: str) -> list[RecordedEvent]:
    """The chain `request_id` started, once it holds events of all `types`, oldest first."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found: list[AuditedEvent] = await audit(pool, correlation_id=request_id, limit=1000)
        chain = [a.event for a in reversed(found)]
        if set(types) <= {e.type for e in chain}:
            return chain
        assert time.monotonic() < deadline, f"{types} never in {[e.type for e in chain]}"
        await asyncio.sleep(0.05)


async def _stripe_event_ids(stripe_sim: TestClient, intent: str) -> set[str]:
    response = await stripe_sim.get(f"/_sim/events?payment_intent={intent}")
    return {e["id"] for e in (await response.json())["data"]}


async def _stored(pool: asyncpg.Pool, ids: set[str]) -> set[str]:
    rows = await pool.fetch("SELECT event_id::text FROM events WHERE event_id::text = ANY($1)", ids)
    return {r["event_id"] for r in rows}


async def _expired_by_the_sweeper(pool: asyncpg.Pool, purchases: Purchases, token: str) -> None:
    """Sweeps until the purchase is expired: the sweeper finds it due once the purchases read
    model has it, and a rebuild reads only what no open transaction (of any database on the
    server) can still overtake."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        await rebuild_read_models(pool)
        await sweep_once(purchases.endings)
        stored = await read_stream(pool, f"purchase-{token}")
        if "PurchaseExpired" in {e.type for e in stored}:
            return
        assert time.monotonic() < deadline, "the sweeper never expired the purchase"
        await asyncio.sleep(0.1)


async def _causes_exist(pool: asyncpg.Pool, chain: list[RecordedEvent], stripe: set[str]) -> None:
    """Every link the partner's request did not store itself names a cause that exists."""
    reactions = [e for e in chain if e.metadata.actor != "partner-api"]
    causes = {e.metadata.causation_id for e in reactions}
    assert None not in causes, [(e.type, e.metadata) for e in reactions]
    assert causes - stripe <= await _stored(pool, causes - stripe), causes


async def test_a_paid_purchase_is_one_chain_from_the_request_to_its_tickets(
    api, pool: asyncpg.Pool, stripe_sim: TestClient, settings: Settings
) -> None:
    token, event_id, type_id = await small_event(pool, 3)
    request_id, created = await _buy(api, token, type_id)
    purchase = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    paid = await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")
    assert paid.status == 200, await paid.text()

    chain = await _chain(pool, request_id, "PurchasePaid", "TicketIssued")
    assert {e.metadata.correlation_id for e in chain} == {request_id}
    assert {"SeatsHeld", "PurchaseOpened"} <= {e.type for e in chain}
    ticket_streams = {e.stream_id for e in chain if e.type == "TicketIssued"}
    assert len(ticket_streams) == 1
    # Nothing of the purchase, its ticket or its hold is missing from the chain.
    whole = await pool.fetch(
        "SELECT event_id::text FROM events WHERE stream_id = ANY($1)"
        " OR (stream_id = $2 AND type = 'SeatsHeld')",
        [f"purchase-{purchase}", *ticket_streams],
        f"event-{event_id}",
    )
    assert {r["event_id"] for r in whole} == {e.event_id for e in chain}
    stripe = await _stripe_event_ids(stripe_sim, intent)
    by_stripe = [e for e in chain if e.metadata.actor == "stripe"]
    assert {"PurchasePaid", "TicketIssued"} <= {e.type for e in by_stripe}
    assert {e.metadata.causation_id for e in by_stripe} <= stripe
    await _causes_exist(pool, chain, stripe)

    listed = _lines(_linjerum(settings, "audit", "--correlation", request_id, "--limit", "1000"))
    assert {(e["stream_id"], e["version"]) for e in listed} == {
        (e.stream_id, e.version) for e in chain
    }


async def test_an_expiry_and_a_late_payment_refunded_by_the_worker_stay_in_the_chain(
    serve, pool: asyncpg.Pool, catalog, stripe_sim: TestClient, effects: PaymentEffects
) -> None:
    """The sweeper's expiry (a timer) is caused by the purchase's opening, whose deadline
    passed; the late payment's refund decision by the Stripe event; the refund the payments
    worker records by that decision. All in the chain of the purchase's request."""
    token, _, type_id = await small_event(pool, 1)
    gateway = await serve(hold_minutes=0.001)
    request_id, created = await _buy(gateway, token, type_id)
    purchase = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    await _expired_by_the_sweeper(pool, gateway.app[PURCHASES], purchase)
    other_request, _ = await _buy(gateway, token, type_id)
    paid = await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")
    assert paid.status == 200, await paid.text()
    await _chain(pool, request_id, "LatePaymentRefundDecided")
    await _carry_out(pool, effects, purchase, {"refund"})

    chain = await _chain(pool, request_id, "LatePaymentRefunded")
    assert {e.metadata.correlation_id for e in chain} == {request_id}
    first = {e.type: e for e in reversed(chain)}
    opened = first["PurchaseOpened"]
    for expiry in ("PurchaseExpired", "SeatsReleased"):
        assert first[expiry].metadata.actor == "sweeper"
        assert first[expiry].metadata.causation_id == opened.event_id
    stripe = await _stripe_event_ids(stripe_sim, intent)
    assert first["LatePaymentRefundDecided"].metadata.causation_id in stripe
    refunded = first["LatePaymentRefunded"].metadata
    assert refunded.actor == "payments"
    assert refunded.causation_id == first["LatePaymentRefundDecided"].event_id
    await _causes_exist(pool, chain, stripe)
    assert not await audit(pool, correlation_id=other_request, type_name="PurchaseExpired")


async def test_a_refund_the_worker_makes_is_in_the_chain_of_the_request_that_decided_it(
    api, pool: asyncpg.Pool, stripe_sim: TestClient, effects: PaymentEffects
) -> None:
    token, _, type_id = await small_event(pool, 2)
    request_id, created = await _buy(api, token, type_id)
    purchase = created["purchase"]["token"]
    intent = created["payment"]["stripe_payment_intent_id"]
    assert (await stripe_sim.post(f"/_sim/payment_intents/{intent}/succeed")).status == 200
    await _chain(pool, request_id, "PurchasePaid")
    refund_request = f"refund-{uuid.uuid4().hex}"
    await post(
        api,
        token,
        f"/api/v1/purchases/{purchase}/refund",
        {},
        201,
        **{"X-Request-ID": refund_request},
    )
    await _carry_out(pool, effects, purchase, {"ticket_refund"})

    chain = await _chain(pool, refund_request, "RefundDecided", "RefundMade")
    assert {e.metadata.correlation_id for e in chain} == {refund_request}
    decided = next(e for e in chain if e.type == "RefundDecided")
    made = next(e for e in chain if e.type == "RefundMade")
    assert decided.metadata.request_id == refund_request
    assert made.metadata.actor == "payments" and made.metadata.causation_id == decided.event_id


async def test_the_projector_tells_which_chain_each_row_it_committed_came_from(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """At debug, `projection_applied` names the event and its correlation id once the row is
    committed: the last step from a request id to the read-model rows it produced."""
    run = uuid.uuid4().hex[:8]
    stream, request_id = f"tally-{run}", f"chain-{run}"
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    meta = Metadata(request_id=request_id, correlation_id=request_id)
    try:
        with structlog.testing.capture_logs() as logs:
            async with (
                running(Relay(pool, js, settings, name=f"chain-{run}").run()),
                running(Projector(pool, js, settings, TallyProjection()).run()),
            ):
                await append(
                    pool, [PendingAppend(stream, ANY_VERSION, [TallyCounted(amount=3)])], meta
                )
                deadline = time.monotonic() + 30
                while not [line for line in logs if line.get("correlation_id") == request_id]:
                    assert time.monotonic() < deadline, "no projection_applied line"
                    await asyncio.sleep(0.05)
    finally:
        await nc.close()
    [told] = [line for line in logs if line.get("correlation_id") == request_id]
    [stored] = await read_stream(pool, stream)
    assert told["event"] == "projection_applied" and told["log_level"] == "debug"
    assert told["projection"] == "tally" and told["event_id"] == stored.event_id
    assert told["stream_id"] == stream
    total = await pool.fetchval("SELECT total FROM rm_tally.tallies WHERE stream_id = $1", stream)
    assert total == 3
