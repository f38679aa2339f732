"""Transfers over HTTP: offered by the partner or by the buyer, the recipient's e-mail with the
token, accept (a new code that scans at once, the old one `resold`, the old attendee link
dead), decline and expiry leaving the ticket as it was, every refusal, the races (offers,
accepts, an accept and a scan at once) and the read models rebuilt equal to the live ones."""

from __future__ import annotations

import asyncio
import io
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pypdf import PdfReader

from domain import catalog as c
from domain import streams, venues
from domain.tickets import TicketRefunded
from infra.eventstore import PendingAppend, append
from infra.global_order import read_all
from projections.framework import apply_batch, live_schema, read_checkpoint
from projections.registry import all_projections
from services.api.context import DOCUMENTS
from services.dev.sample_event import put_on_sale
from services.usecases.ticketing import load_ticket
from services.usecases.transfers import load_transfer
from tests.e2e.conftest import (
    BUYER,
    TEST,
    bearer,
    claimed_by_a_killed_gateway,
    issue_key,
    new_organization,
    order,
    post,
    rebuild_read_models,
    venue_with,
)

RECIPIENT = {"name": "Bo Berg", "email": "bo@example.com"}


async def _bought(
    api, pool: asyncpg.Pool, terms: c.TicketTerms | None = None, n: int = 1
) -> tuple[str, dict]:
    """A free (so at once paid) purchase of `n` tickets of a fresh event under `terms`."""
    org = await new_organization(pool, stripe_account=None)
    row = venues.Row(identifier="A", start=1, end=n + 2)
    venue_id = await venue_with(
        pool, org, venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=0, max_per_purchase=20)
    _, type_id = await put_on_sale(pool, org, venue_id, plan, TEST, terms=terms)
    token = await issue_key(pool, org)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id, n), 201)
    return token, created["purchase"]


async def _offer(api, token: str, code: str, status: int = 201, **body: Any) -> dict:
    _, answer = await post(
        api, token, f"/api/v1/tickets/{code}/transfers", {"recipient": RECIPIENT, **body}, status
    )
    return answer


async def _answer(api, transfer_id: str, token: str, how: str = "accept") -> tuple[int, dict]:
    response = await api.post(f"/api/v1/transfers/{transfer_id}/{how}", json={"token": token})
    return response.status, await response.json()


async def _get(api, token: str, path: str, status: int = 200) -> dict:
    response = await api.get(path, headers=bearer(token))
    body = await response.json()
    assert response.status == status, body
    return body


async def _verify(api, token: str, code: str) -> dict:
    return await _get(api, token, f"/api/v1/tickets/{code}/verify")


async def _queued(pool: asyncpg.Pool, transfer_id: str, kind: str) -> bool:
    """Whether the projection queued one such e-mail, projecting until it has (at most ~5 s)."""
    for _ in range(50):
        await rebuild_read_models(pool)
        queued = await pool.fetchval(
            "SELECT count(*) FROM mail_outbox WHERE purchase_token = $1 AND kind = $2",
            transfer_id,
            kind,
        )
        if queued:
            return queued == 1
        await asyncio.sleep(0.1)
    return False


async def _mailed_token(api, pool: asyncpg.Pool, transfer_id: str) -> str:
    """The token in the offer e-mail the projection queued for the transfer (once the offer's
    transaction is settled: projections wait for every older one still in flight)."""
    assert await _queued(pool, transfer_id, "transfer_offer")
    message = await api.app[DOCUMENTS].compose(transfer_id, "transfer_offer")
    assert message is not None and message["To"] == RECIPIENT["email"]
    text = message.get_body(("plain",)).get_content()
    found = re.search(r"Din kode: (\S+)", text)
    assert found is not None and transfer_id in text, text
    return found.group(1)


async def test_the_partner_offers_and_the_recipient_accepts(api, pool, aarhus_token) -> None:
    token, purchase = await _bought(api, pool)
    ticket = purchase["tickets"][0]
    before, _ = await load_ticket(pool, ticket["id"])
    assert before is not None
    old_code, old_token = ticket["ticket_code"], before.attendee_token
    assert (await api.get(f"/attendee/{old_token}")).status == 200
    offered = (await _offer(api, token, old_code))["transfer"]
    assert (offered["status"], offered["offered_by"], offered["ticket_uid"]) == (
        "offered",
        "partner",
        str(ticket["id"]),
    )
    assert offered["recipient"] == RECIPIENT
    secret = await _mailed_token(api, pool, offered["id"])

    wrong = await _answer(api, offered["id"], secret + "x")
    unknown = await _answer(api, "no-such-transfer", secret)
    assert wrong == unknown and wrong[0] == 404

    status, accepted = await _answer(api, offered["id"], secret)
    assert status == 200, accepted
    assert accepted["transfer"]["status"] == "accepted"
    new_code = accepted["ticket"]["code"]
    new_token = accepted["ticket"]["attendee_token"]
    assert new_code != old_code and new_token != old_token

    fresh = await _verify(api, token, new_code)
    assert (fresh["valid"], fresh["reason"], fresh["ticket"]["code"]) == (True, "ok", new_code)
    assert fresh["ticket"]["holder_name"] == RECIPIENT["name"]
    resold = await _verify(api, token, old_code)
    assert (resold["valid"], resold["reason"]) == (False, "resold")
    # The old code's block describes that code: not the new holder, nor the new code's scans.
    described = resold["ticket"]
    assert (described["code"], described["status"], described["holder_name"]) == (
        old_code,
        "resold",
        None,
    )
    state, _ = await load_ticket(pool, ticket["id"])
    assert state is not None and state.consumer.email == RECIPIENT["email"]
    assert state.holder_name == RECIPIENT["name"]

    assert (await api.get(f"/attendee/{old_token}")).status == 404
    assert (await api.get(f"/attendee/{old_token}/ticket.pdf")).status == 404
    await _get(api, token, f"/api/v1/tickets/attendee/{old_token}", 404)
    page = await api.get(f"/attendee/{new_token}")
    assert page.status == 200 and new_code in await page.text()
    view = await _get(api, token, f"/api/v1/tickets/attendee/{new_token}")
    assert view["token"] == new_token and view["attendee"]["name"] == RECIPIENT["name"]

    assert await _queued(pool, offered["id"], "transfer_completed")
    message = await api.app[DOCUMENTS].compose(offered["id"], "transfer_completed")
    assert message is not None and message["To"] == RECIPIENT["email"]
    assert new_token in message.get_body(("plain",)).get_content()
    assert [p.get_filename() for p in message.iter_attachments()] == ["billet.pdf"]
    assert await api.app[DOCUMENTS].compose(offered["id"], "transfer_offer") is None

    access = f"/api/v1/tickets/{purchase['access_code']}"
    bundle = await _get(api, token, f"{access}?email={BUYER['email']}")
    seat = bundle["lines"][0]["seats"][0]
    assert (seat["ticket_code"], seat["status"], seat["name"]) == (old_code, "transferred", None)
    edit = {"email": BUYER["email"], "seats": [{"token": old_token, "name": "X", "email": None}]}
    response = await api.patch(access, json=edit, headers=bearer(token))
    assert response.status == 200, await response.text()
    state, _ = await load_ticket(pool, ticket["id"])
    assert state is not None and state.holder_name == RECIPIENT["name"]

    scanned = await post(api, token, f"/api/v1/tickets/{new_code}/scan", {}, 200)
    assert scanned[1]["reason"] == "ok"
    shown = await _get(api, token, f"/api/v1/transfers/{offered['id']}")
    assert shown["transfer"]["status"] == "accepted"
    await _get(api, aarhus_token, f"/api/v1/transfers/{offered['id']}", 404)
    listed = await _get(api, token, f"/api/v1/tickets/uid/{ticket['id']}/transfers")
    assert [t["id"] for t in listed["transfers"]] == [offered["id"]]
    await _get(api, aarhus_token, f"/api/v1/tickets/uid/{ticket['id']}/transfers", 404)
    again = await _answer(api, offered["id"], secret)
    assert again[0] == 409 and again[1]["error"] == "transfer_not_open"


async def test_a_ticket_passed_on_and_then_refunded_shows_refunded_to_its_buyer(api, pool) -> None:
    """The money came back to the purchase it was bought in, whose payload said `transferred`
    while the ticket resource and the new holder's view said `refunded`."""
    token, purchase = await _bought(api, pool, n=2)
    ticket = purchase["tickets"][0]
    offered = (await _offer(api, token, ticket["ticket_code"]))["transfer"]
    secret = await _mailed_token(api, pool, offered["id"])
    assert (await _answer(api, offered["id"], secret))[0] == 200
    refund = {"ticket_ids": [ticket["id"]]}
    await post(api, token, f"/api/v1/purchases/{purchase['token']}/refund", refund, 201)
    shown = await _get(api, token, f"/api/v1/purchases/{purchase['token']}")
    statuses = [t["ticket_status"] for t in shown["purchase"]["tickets"]]
    assert statuses == ["refunded", "valid"]
    resource = await _get(api, token, f"/api/v1/tickets/uid/{ticket['id']}")
    assert resource["status"] == "refunded"
    access = f"/api/v1/tickets/{purchase['access_code']}?email={BUYER['email']}"
    seats = (await _get(api, token, access))["lines"][0]["seats"]
    assert [seat["status"] for seat in seats] == ["refunded", "valid"]


async def test_the_buyer_offers_with_the_purchase_email(api, pool, demo_token) -> None:
    token, purchase = await _bought(api, pool)
    code = purchase["tickets"][0]["ticket_code"]
    misses = [
        await _offer(api, token, code, 404, email="someone@else.dk"),
        await _offer(api, token, "NOSUCHCODE12", 404, email=BUYER["email"]),
        await _offer(api, demo_token, code, 404, email=BUYER["email"]),
    ]
    assert len({str(m) for m in misses}) == 1
    offered = (await _offer(api, token, code, email=BUYER["email"].upper()))["transfer"]
    assert offered["offered_by"] == "buyer"

    secret = await _mailed_token(api, pool, offered["id"])
    status, declined = await _answer(api, offered["id"], secret, "decline")
    assert status == 200 and declined["transfer"]["status"] == "declined"
    assert declined["ticket"] is None
    assert (await _verify(api, token, code))["reason"] == "ok"
    assert await api.app[DOCUMENTS].compose(offered["id"], "transfer_offer") is None
    late = await _answer(api, offered["id"], secret)
    assert late[0] == 409 and late[1]["error"] == "transfer_not_open"
    offers = f"/api/v1/tickets/uid/{purchase['tickets'][0]['id']}/transfers"
    _, second = await post(api, token, offers, {"recipient": RECIPIENT, "email": BUYER["email"]})
    assert second["transfer"]["offered_by"] == "buyer"
    listed = await _get(api, token, offers)
    assert [(t["id"], t["status"]) for t in listed["transfers"]] == [
        (offered["id"], "declined"),
        (second["transfer"]["id"], "offered"),
    ]


async def test_the_resources_transfer_approvals_link_takes_an_offer(api, pool, demo_token) -> None:
    token, purchase = await _bought(api, pool)
    ticket = purchase["tickets"][0]
    resource = await _get(api, token, f"/api/v1/tickets/uid/{ticket['id']}")
    link = resource["_links"]["shop:ticket_transfer_approvals"]["href"]
    path = link[link.index("/api/") :]
    await post(api, demo_token, path, {"recipient": RECIPIENT}, 404)  # another organization's
    # With an e-mail that is not the purchase's, the offer is nobody's: it was taken as the
    # partner's.
    stranger = {"recipient": RECIPIENT, "email": "someone@else.dk"}
    _, missed = await post(api, token, path, stranger, 404)
    assert missed["error"] == "not_found"
    _, offered = await post(api, token, path, {"recipient": RECIPIENT}, 201)
    assert offered["transfer"]["offered_by"] == "partner"
    assert offered["transfer"]["status"] == "offered"
    again = await _offer(api, token, ticket["ticket_code"], 409)
    assert again["error"] == "transfer_pending"


async def test_the_new_holder_is_told_when_a_ticket_handed_out_later_comes(api, pool) -> None:
    """Before the event's fulfillment starts there is no PDF to attach: the new holder's e-mail
    says when the ticket is handed out (as the buyer's confirmation does) instead of failing
    to render it for good; a ticket refunded since it was accepted is not mailed."""
    later = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    token, purchase = await _bought(api, pool, c.TicketTerms(fulfillment_starts_at=later), 2)
    accepted = []
    for ticket in purchase["tickets"]:
        offered = (await _offer(api, token, ticket["ticket_code"]))["transfer"]
        stored, _ = await load_transfer(pool, offered["id"])
        assert stored is not None
        status, answer = await _answer(api, offered["id"], stored.offered.token)
        assert status == 200, answer
        accepted.append(offered["id"])
    message = await api.app[DOCUMENTS].compose(accepted[0], "transfer_completed")
    assert message is not None and list(message.iter_attachments()) == []
    assert f"udleveres fra {later:%Y-%m-%d %H:%M} UTC" in message.get_body(("plain",)).get_content()

    refund = {"ticket_ids": [purchase["tickets"][1]["id"]]}
    await post(api, token, f"/api/v1/purchases/{purchase['token']}/refund", refund, 201)
    assert await api.app[DOCUMENTS].compose(accepted[1], "transfer_completed") is None


async def test_an_offer_whose_answer_was_lost_is_answered_again_under_its_key(api, pool) -> None:
    """The gateway was killed after storing the offer, before keeping its answer: the retry
    under the same Idempotency-Key answers that offer instead of `transfer_pending`."""
    token, purchase = await _bought(api, pool)
    code = purchase["tickets"][0]["ticket_code"]
    key = {"Idempotency-Key": f"offer-{code}"}
    _, first = await post(
        api, token, f"/api/v1/tickets/{code}/transfers", {"recipient": RECIPIENT}, 201, **key
    )
    await claimed_by_a_killed_gateway(pool, key["Idempotency-Key"])
    _, again = await post(
        api, token, f"/api/v1/tickets/{code}/transfers", {"recipient": RECIPIENT}, 201, **key
    )
    assert again == first
    replay = await api.post(
        f"/api/v1/tickets/{code}/transfers",
        json={"recipient": RECIPIENT},
        headers={**bearer(token), **key},
    )
    assert (replay.status, replay.headers.get("Idempotent-Replay")) == (201, "true")
    listed = await _get(api, token, f"/api/v1/tickets/uid/{purchase['tickets'][0]['id']}/transfers")
    assert [t["id"] for t in listed["transfers"]] == [first["transfer"]["id"]]
    await _offer(api, token, code, 409)  # a new offer, without the key: one is pending


async def test_an_unanswered_offer_expires_and_leaves_the_ticket(api, pool) -> None:
    token, purchase = await _bought(api, pool)
    code = purchase["tickets"][0]["ticket_code"]
    deadline = datetime.now(UTC) + timedelta(seconds=1)
    offered = (await _offer(api, token, code, deadline=deadline.isoformat()))["transfer"]
    assert datetime.fromisoformat(offered["deadline"]) == deadline
    stored, _ = await load_transfer(pool, offered["id"])
    assert stored is not None
    secret = stored.offered.token  # the e-mail's, read from the event (no time to project it)
    await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)
    status, expired = await _answer(api, offered["id"], secret)
    assert status == 409 and expired["error"] == "transfer_expired"
    shown = await _get(api, token, f"/api/v1/transfers/{offered['id']}")
    assert shown["transfer"]["status"] == "expired"
    assert await api.app[DOCUMENTS].compose(offered["id"], "transfer_offer") is None
    assert (await _verify(api, token, code))["reason"] == "ok"
    await _offer(api, token, code)


async def test_an_offer_whose_ticket_was_scanned_or_refunded_since_is_withdrawn(api, pool) -> None:
    """Its answer would be refused (the ticket went through the gate, or its money back): the
    partner and the ticket's list of transfers no longer show it open."""
    token, purchase = await _bought(api, pool, n=2)
    (scanned, scanned_id), (refunded, refunded_id) = (
        (t["ticket_code"], t["id"]) for t in purchase["tickets"]
    )
    offers = {code: (await _offer(api, token, code))["transfer"] for code in (scanned, refunded)}
    assert {o["status"] for o in offers.values()} == {"offered"}
    await post(api, token, f"/api/v1/tickets/{scanned}/scan", {}, 200)
    _, version = await load_ticket(pool, refunded_id)
    refund = TicketRefunded(ticket_id=refunded_id, refund_id="re_test")
    await append(pool, [PendingAppend(streams.ticket(refunded_id), version, [refund])], TEST)
    for code, ticket_id in ((scanned, scanned_id), (refunded, refunded_id)):
        shown = await _get(api, token, f"/api/v1/transfers/{offers[code]['id']}")
        assert shown["transfer"]["status"] == "withdrawn"
        listed = await _get(api, token, f"/api/v1/tickets/uid/{ticket_id}/transfers")
        assert [t["status"] for t in listed["transfers"]] == ["withdrawn"]


async def test_what_cannot_be_transferred(api, pool) -> None:
    token, purchase = await _bought(api, pool, n=3)
    scanned, refunded, pending = (t["ticket_code"] for t in purchase["tickets"])
    await post(api, token, f"/api/v1/tickets/{scanned}/scan", {}, 200)
    assert (await _offer(api, token, scanned, 409))["error"] == "ticket_scanned"

    ticket_id = purchase["tickets"][1]["id"]
    _, version = await load_ticket(pool, ticket_id)
    refund = TicketRefunded(ticket_id=ticket_id, refund_id="re_test")
    await append(pool, [PendingAppend(streams.ticket(ticket_id), version, [refund])], TEST)
    assert (await _offer(api, token, refunded, 409))["error"] == "ticket_refunded"

    offered = await _offer(api, token, pending)
    again = await _offer(api, token, pending, 409)
    assert again["error"] == "transfer_pending"
    until = datetime.fromisoformat(again["detail"].rpartition(" ")[2])  # as every time is written
    assert until == datetime.fromisoformat(offered["transfer"]["deadline"].replace("Z", "+00:00"))

    past = datetime.now(UTC) - timedelta(minutes=1)
    too_soon = await _offer(api, token, scanned, 422, deadline=past.isoformat())
    assert too_soon["detail"].startswith("deadline"), too_soon

    forbidden = c.TicketTerms(transfers=c.TransferPolicy(allowed=False))
    token, purchase = await _bought(api, pool, forbidden)
    code = purchase["tickets"][0]["ticket_code"]
    assert (await _offer(api, token, code, 409))["error"] == "transfers_not_allowed"

    closed = c.TicketTerms(transfers=c.TransferPolicy(closes_at=past))
    token, purchase = await _bought(api, pool, closed)
    code = purchase["tickets"][0]["ticket_code"]
    assert (await _offer(api, token, code, 409))["error"] == "transfers_closed"


async def _unpaid(api, pool) -> tuple[str, dict]:
    """A key and a purchase of one ticket, not paid."""
    org = await new_organization(pool)
    row = venues.Row(identifier="A", start=1, end=2)
    venue_id = await venue_with(
        pool, org, venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])
    )
    plan = c.TicketTypePlan(name="Alm", price_cents=10000, max_per_purchase=20)
    _, type_id = await put_on_sale(pool, org, venue_id, plan, TEST)
    token = await issue_key(pool, org)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    return token, created["purchase"]


async def test_an_unpaid_ticket_cannot_be_offered(api, pool) -> None:
    token, purchase = await _unpaid(api, pool)
    code = purchase["tickets"][0]["ticket_code"]
    assert (await _offer(api, token, code, 409))["error"] == "not_yet_paid"


async def test_a_cancelled_orders_ticket_is_not_offered_as_if_it_may_yet_be_paid(api, pool) -> None:
    token, purchase = await _unpaid(api, pool)
    await post(api, token, f"/api/v1/purchases/{purchase['token']}/cancel", None, 200)
    code = purchase["tickets"][0]["ticket_code"]
    assert (await _offer(api, token, code, 409))["error"] == "order_inactive"


async def test_a_refund_request_speaks_only_for_a_ticket_not_passed_on(api, pool) -> None:
    """Asked with the code the buyer passed on, a refund request is a 409 (it was a 404, where
    the new code answered the 409); one asked before the ticket was passed on refunds nothing
    when approved after, and stays open to be declined."""
    token, purchase = await _bought(api, pool, n=2)
    first, second = (t["ticket_code"] for t in purchase["tickets"])
    buyer = {"email": BUYER["email"]}
    _, asked = await post(api, token, f"/api/v1/tickets/{second}/refund-requests", buyer, 201)
    new_codes = []
    for code in (first, second):
        offered = (await _offer(api, token, code))["transfer"]
        status, accepted = await _answer(
            api, offered["id"], await _mailed_token(api, pool, offered["id"])
        )
        assert status == 200, accepted
        new_codes.append(accepted["ticket"]["code"])
    _, refused = await post(api, token, f"/api/v1/tickets/{first}/refund-requests", buyer, 409)
    assert refused["error"] == "ticket_already_transferred"
    request = f"/api/v1/refund-requests/{asked['refund_request']['id']}"
    _, approved = await post(api, token, f"{request}/approve", None, 409)
    assert approved["error"] == "ticket_already_transferred"
    assert (await _verify(api, token, new_codes[1]))["reason"] == "ok"
    await post(api, token, f"{request}/decline", {}, 200)


async def test_of_offers_at_once_one_is_made(serve, pool) -> None:
    gateways = [await serve(), await serve()]
    token, purchase = await _bought(gateways[0], pool)
    code = purchase["tickets"][0]["ticket_code"]

    async def offer(i: int) -> tuple[int, str | None]:
        response = await gateways[i % 2].post(
            f"/api/v1/tickets/{code}/transfers",
            json={"recipient": RECIPIENT},
            headers=bearer(token),
        )
        return response.status, (await response.json()).get("error")

    results = Counter(await asyncio.gather(*(offer(i) for i in range(8))))
    assert results == {(201, None): 1, (409, "transfer_pending"): 7}


async def test_of_accepts_at_once_one_wins(serve, pool) -> None:
    gateways = [await serve(), await serve()]
    token, purchase = await _bought(gateways[0], pool)
    ticket = purchase["tickets"][0]
    offered = (await _offer(gateways[0], token, ticket["ticket_code"]))["transfer"]
    secret = await _mailed_token(gateways[0], pool, offered["id"])

    async def accept(i: int) -> tuple[int, str | None]:
        status, body = await _answer(gateways[i % 2], offered["id"], secret)
        return status, body.get("error")

    results = Counter(await asyncio.gather(*(accept(i) for i in range(8))))
    assert results == {(200, None): 1, (409, "transfer_not_open"): 7}
    moved = await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'TicketTransferred'",
        streams.ticket(ticket["id"]),
    )
    assert moved == 1


async def test_of_an_accept_and_a_scan_at_once_one_wins(serve, pool) -> None:
    gateways = [await serve(), await serve()]
    token, purchase = await _bought(gateways[0], pool, n=6)
    offers = []
    for ticket in purchase["tickets"]:
        offered = (await _offer(gateways[0], token, ticket["ticket_code"]))["transfer"]
        offers.append((ticket, offered["id"]))
    await rebuild_read_models(pool)
    for ticket, transfer_id in offers:
        secret = await _mailed_token(gateways[0], pool, transfer_id)
        (status, answer), scan = await asyncio.gather(
            _answer(gateways[0], transfer_id, secret),
            gateways[1].post(
                f"/api/v1/tickets/{ticket['ticket_code']}/scan", headers=bearer(token)
            ),
        )
        scanned = await scan.json()
        assert (status == 200) != scanned["valid"], (answer, scanned)
        if status == 200:
            assert scanned["reason"] == "resold"
        else:
            assert answer["error"] == "ticket_scanned"
        types = await pool.fetch(
            "SELECT type FROM events WHERE stream_id = $1 AND type IN"
            " ('TicketScanned', 'TicketTransferred')",
            streams.ticket(ticket["id"]),
        )
        assert len(types) == 1


async def _settled(pool: asyncpg.Pool) -> None:
    """Waits (at most ~5 s) until every stored event's transaction is older than any still in
    flight, so the live catch-up and the rebuild both read them all."""
    last = await pool.fetchval("SELECT max(tx_id)::text::bigint FROM events")
    for _ in range(100):
        horizon = await pool.fetchval(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
        )
        if horizon > last:
            return
        await asyncio.sleep(0.05)


async def _catch_up_live(pool: asyncpg.Pool) -> None:
    """Every read model brought up to the event store one event at a time, as the live
    projectors apply what NATS delivers."""
    async with pool.acquire() as conn:
        for projection in all_projections().values():
            for _ in range(5000):
                after = await read_checkpoint(conn, live_schema(projection))
                events = await read_all(conn, after, 1)
                if not events:
                    break
                await apply_batch(conn, projection, events)


async def _read_models(pool: asyncpg.Pool) -> dict[str, list[str]]:
    """Every row of every read model's tables (checkpoints aside), in a stable order."""
    tables = await pool.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_schema = ANY($1::text[]) AND table_name <> 'checkpoint'",
        [live_schema(p) for p in all_projections().values()],
    )
    return {
        f"{t['table_schema']}.{t['table_name']}": sorted(
            repr(tuple(r))
            for r in await pool.fetch(f"SELECT * FROM {t['table_schema']}.{t['table_name']}")
        )
        for t in tables
    }


async def test_rebuilding_after_transfers_equals_the_live_read_models(api, pool) -> None:
    token, purchase = await _bought(api, pool, n=3)
    await rebuild_read_models(pool)
    accepted, declined, open_ = purchase["tickets"]
    for ticket, how in ((accepted, "accept"), (declined, "decline")):
        offered = (await _offer(api, token, ticket["ticket_code"]))["transfer"]
        secret = await _mailed_token(api, pool, offered["id"])
        assert (await _answer(api, offered["id"], secret, how))[0] == 200
    await _offer(api, token, open_["ticket_code"])
    for _ in range(3):
        before = await pool.fetchval("SELECT count(*) FROM events")
        await _settled(pool)
        await _catch_up_live(pool)
        live = await _read_models(pool)
        await rebuild_read_models(pool)
        if await pool.fetchval("SELECT count(*) FROM events") == before:
            break
    assert await _read_models(pool) == live
    codes = await pool.fetch(
        "SELECT ticket_id, code FROM rm_tickets.tickets WHERE purchase_token = $1",
        purchase["token"],
    )
    moved = {r["ticket_id"]: r["code"] for r in codes}
    assert moved[accepted["id"]] != accepted["ticket_code"]
    assert moved[declined["id"]] == declined["ticket_code"]


async def test_the_purchases_pdf_leaves_out_a_ticket_passed_on(api, pool) -> None:
    """The purchase's PDF is its buyer's: the ticket they passed on is the new holder's, under
    a new code the buyer must not hold."""
    token, purchase = await _bought(api, pool, n=2)
    given, kept = purchase["tickets"]
    offered = (await _offer(api, token, given["ticket_code"]))["transfer"]
    status, accepted = await _answer(
        api, offered["id"], await _mailed_token(api, pool, offered["id"])
    )
    assert status == 200, accepted
    pdf = await api.get(f"/api/v1/purchases/{purchase['token']}/tickets/pdf", headers=bearer(token))
    assert pdf.status == 200
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(await pdf.read())).pages)
    assert kept["ticket_code"] in text and accepted["ticket"]["code"] not in text
    alone = f"/api/v1/purchases/{purchase['token']}/tickets/{given['id']}/pdf"
    refused = await api.get(alone, headers=bearer(token))
    assert (refused.status, (await refused.json())["error"]) == (409, "ticket_already_transferred")
    # The partner's purchase payload shows the seat as its buyer does: passed on.
    payload = await _get(api, token, f"/api/v1/purchases/{purchase['token']}")
    shown = {t["id"]: t for t in payload["purchase"]["tickets"]}[given["id"]]
    bundle = await _get(
        api, token, f"/api/v1/tickets/{purchase['access_code']}?email={BUYER['email']}"
    )
    [seat] = [s for s in bundle["lines"][0]["seats"] if s["ticket_code"] == given["ticket_code"]]
    assert (
        (shown["ticket_code"], shown["ticket_status"], shown["name"])
        == (
            seat["ticket_code"],
            seat["status"],
            seat["name"],
        )
        == (given["ticket_code"], "transferred", None)
    )
    assert shown["eticket_url"] is None
    # Nor does the purchase's e-mail ask for the new holder's ticket to be refunded.
    ask = {"email": BUYER["email"]}
    new_code = accepted["ticket"]["code"]
    _, refused = await post(api, token, f"/api/v1/tickets/{new_code}/refund-requests", ask, 409)
    assert refused["error"] == "ticket_already_transferred"

    alone_token, alone = await _bought(api, pool, n=1)
    code = alone["tickets"][0]["ticket_code"]
    offered = (await _offer(api, alone_token, code))["transfer"]
    await _answer(api, offered["id"], await _mailed_token(api, pool, offered["id"]))
    nothing = await api.get(
        f"/api/v1/purchases/{alone['token']}/tickets/pdf", headers=bearer(alone_token)
    )
    assert nothing.status == 409
    assert (await nothing.json())["error"] == "ticket_already_transferred"
