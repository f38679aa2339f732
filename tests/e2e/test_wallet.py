"""E-ticket links and wallet passes over HTTP: nothing is handed out before the event's
fulfillment starts; then the ticket resource links the e-ticket, which answers the PDF with no
API key, and the wallet routes answer a .pkpass and a Google save link that verify with the
gateway's keys. A transfer (a new code) revokes the link and makes new passes; a refund makes
the link answer 410 and the passes void. The read models rebuilt after it all equal the live
ones."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pypdf import PdfReader

from domain import catalog as c
from domain.tickets import Consumer, TicketRefunded, TicketTransferred
from infra.eventstore import PendingAppend, append, read_stream
from infra.global_order import read_all
from infra.signed_links import LinkClaims
from infra.wallet.apple import PKPASS
from projections.framework import apply_batch, live_schema, read_checkpoint
from projections.registry import all_projections
from services.api.context import HANDOUT
from tests.e2e.conftest import TEST, bearer, order, path_of, post, rebuild_read_models
from tests.e2e.test_ticket_resource import _event, _tables

WAIT_SECONDS = 10


async def _bought(api: TestClient, pool: asyncpg.Pool, terms: c.TicketTerms) -> tuple[str, dict]:
    """A fresh event under `terms` and a free (so at once paid) purchase of one ticket."""
    token, _, type_id = await _event(pool, terms)
    body = order(type_id, 1, attendees=[{"ticket_type_id": type_id, "index": 1, "name": "Ida Ø"}])
    _, created = await post(api, token, "/api/v1/purchases", body, 201)
    (ticket,) = created["purchase"]["tickets"]
    return token, ticket | {"purchase": created["purchase"]["token"]}


async def _get(api: TestClient, path: str, token: str | None, status: int) -> Any:
    headers = bearer(token) if token else {}
    response = await api.get(path, headers=headers)
    body = await response.read()
    assert response.status == status, body[:500]
    return response, body


async def _error(api: TestClient, path: str, token: str | None, status: int, code: str) -> None:
    _, body = await _get(api, path, token, status)
    assert json.loads(body)["error"] == code, body


async def _links(api: TestClient, token: str, uid: int) -> dict:
    _, body = await _get(api, f"/api/v1/tickets/uid/{uid}", token, 200)
    return json.loads(body)["_links"]


def _wallet(uid: int, kind: str) -> str:
    return f"/api/v1/tickets/uid/{uid}/wallet/{kind}"


async def _pdf_text(api: TestClient, href: str) -> str:
    response, body = await _get(api, path_of(href), None, 200)  # the holder has no API key
    assert response.content_type == "application/pdf"
    assert response.headers["Cache-Control"] == "no-store"
    return " ".join(PdfReader(io.BytesIO(body)).pages[0].extract_text().split())


async def _pass_json(api: TestClient, token: str, uid: int) -> dict:
    response, body = await _get(api, _wallet(uid, "apple"), token, 200)
    assert response.content_type == PKPASS
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = set(archive.namelist())
        assert {"pass.json", "manifest.json", "signature", "icon.png"} <= names
        return dict(json.loads(archive.read("pass.json")))


async def _google_object(api: TestClient, token: str, uid: int) -> dict:
    _, body = await _get(api, _wallet(uid, "google"), token, 200)
    answer = json.loads(body)
    jwt = answer["jwt"]
    assert answer["url"] == f"https://pay.google.com/gp/v/save/{jwt}"
    header, claims, signature = jwt.split(".")
    key = api.app[HANDOUT].google().key.public_key()
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    key.verify(raw, f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert decoded["aud"] == "google" and decoded["typ"] == "savetowallet"
    (found,) = decoded["payload"]["eventTicketObjects"]
    return dict(found)


async def test_nothing_is_handed_out_before_fulfillment_starts(api, pool) -> None:
    starts = datetime.now(UTC) + timedelta(seconds=3)
    token, ticket = await _bought(api, pool, c.TicketTerms(fulfillment_starts_at=starts))
    uid, code = ticket["id"], ticket["ticket_code"]
    links = await _links(api, token, uid)
    assert links["shop:eticket"] is None and links["apple_wallet_pass"] is None
    for kind in ("apple", "google"):
        await _error(api, _wallet(uid, kind), token, 409, "not_yet_fulfilled")
    # A link made anyway (the same one the resource shows later) opens nothing yet.
    early = api.app[HANDOUT].links.sign(LinkClaims(uid, 0), code)
    await _error(api, f"/eticket/{early}", None, 409, "not_yet_fulfilled")
    # Nor is its PDF, whoever asks; the purchase names no e-ticket for it yet.
    pdf = f"/api/v1/purchases/{ticket['purchase']}/tickets/pdf"
    await _error(api, pdf, token, 409, "not_yet_fulfilled")
    _, polled = await _get(api, f"/api/v1/purchases/{ticket['purchase']}", token, 200)
    assert json.loads(polled)["purchase"]["tickets"][0]["eticket_url"] is None
    for _ in range(WAIT_SECONDS * 10):
        if datetime.now(UTC) >= starts:
            break
        await asyncio.sleep(0.1)
    links = await _links(api, token, uid)
    text = await _pdf_text(api, links["shop:eticket"]["href"])
    assert code in text and "Ida Ø" in text
    _, polled = await _get(api, f"/api/v1/purchases/{ticket['purchase']}", token, 200)
    assert (
        json.loads(polled)["purchase"]["tickets"][0]["eticket_url"]
        == (links["shop:eticket"]["href"])
    )
    assert (await _pass_json(api, token, uid))["barcodes"][0]["message"] == code
    assert (await _google_object(api, token, uid))["state"] == "ACTIVE"


async def test_the_eticket_link_and_passes_of_a_handed_out_ticket(api, pool) -> None:
    token, ticket = await _bought(api, pool, c.TicketTerms())
    uid, code = ticket["id"], ticket["ticket_code"]
    links = await _links(api, token, uid)
    assert path_of(links["apple_wallet_pass"]["href"]) == _wallet(uid, "apple")
    assert path_of(links["google_wallet_token"]["href"]) == _wallet(uid, "google")
    assert code in await _pdf_text(api, links["shop:eticket"]["href"])
    document = await _pass_json(api, token, uid)
    assert document["serialNumber"] == f"{uid}-0"
    assert document["barcodes"][0] == {
        "format": "PKBarcodeFormatQR",
        "message": code,
        "messageEncoding": "iso-8859-1",
        "altText": code,
    }
    assert document["organizationName"] and "voided" not in document
    seat = {f["key"]: f["value"] for f in document["eventTicket"]["auxiliaryFields"]}
    assert seat["row"] == "A" and seat["seat"].isdigit()
    found = await _google_object(api, token, uid)
    assert found["id"].endswith(f".{uid}-0") and found["barcode"]["value"] == code
    assert found["ticketHolderName"] == "Ida Ø"


async def test_wallet_routes_answer_only_the_keys_organization(api, pool, aarhus_token) -> None:
    token, ticket = await _bought(api, pool, c.TicketTerms())
    uid = ticket["id"]
    for kind in ("apple", "google"):
        await _error(api, _wallet(uid, kind), aarhus_token, 404, "not_found")
        await _error(api, _wallet(uid, kind), None, 401, "unauthorized")
        for other in ("abc", "0", "99999999999999999999", "²", str(uid) + "0"):
            await _error(api, _wallet(other, kind), token, 404, "not_found")  # type: ignore[arg-type]


async def test_an_unpaid_or_cancelled_orders_ticket_has_no_passes(api, pool) -> None:
    """Its resource answers; its passes are `409 not_yet_paid` while it may still be paid, and
    `409 order_inactive` once the order was cancelled (the ticket was never issued)."""
    token, _, type_id = await _event(pool, c.TicketTerms(), price=5000)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id), 201)
    (ticket,) = created["purchase"]["tickets"]
    for kind in ("apple", "google"):
        await _error(api, _wallet(ticket["id"], kind), token, 409, "not_yet_paid")
    await post(api, token, f"/api/v1/purchases/{created['purchase']['token']}/cancel", {}, 200)
    await _links(api, token, ticket["id"])
    for kind in ("apple", "google"):
        await _error(api, _wallet(ticket["id"], kind), token, 409, "order_inactive")


async def test_links_that_open_nothing_are_404(api, pool) -> None:
    token, ticket = await _bought(api, pool, c.TicketTerms())
    href = (await _links(api, token, ticket["id"]))["shop:eticket"]["href"]
    good = path_of(href).removeprefix("/eticket/")
    near_miss = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    for bad in (near_miss, "A" * 48, "short", good + "A"):
        await _error(api, f"/eticket/{bad}", None, 404, "not_found")


async def _transfer(pool: asyncpg.Pool, uid: int) -> str:
    """The ticket handed to someone else, as an accepted transfer leaves it: a new code."""
    new_code = secrets.token_hex(6).upper()
    moved = TicketTransferred(
        ticket_id=uid,
        transfer_id=f"tr_{secrets.token_hex(8)}",
        new_code=new_code,
        new_attendee_token="tok_" + secrets.token_hex(16),
        consumer=Consumer.named("Bo Ny", "bo@example.com"),
    )
    version = len(await read_stream(pool, f"ticket-{uid}"))
    await append(pool, [PendingAppend(f"ticket-{uid}", version, [moved])], TEST)
    return new_code


async def test_a_transfer_revokes_the_link_and_makes_new_passes(api, pool) -> None:
    token, ticket = await _bought(api, pool, c.TicketTerms())
    uid, old_code = ticket["id"], ticket["ticket_code"]
    old_href = (await _links(api, token, uid))["shop:eticket"]["href"]
    await _pdf_text(api, old_href)
    new_code = await _transfer(pool, uid)
    await _error(api, path_of(old_href), None, 410, "link_revoked")
    new_href = (await _links(api, token, uid))["shop:eticket"]["href"]
    assert new_href != old_href
    text = await _pdf_text(api, new_href)
    assert new_code in text and old_code not in text and "Bo Ny" in text
    document = await _pass_json(api, token, uid)
    assert document["serialNumber"] == f"{uid}-1"
    assert document["barcodes"][0]["message"] == new_code != old_code
    found = await _google_object(api, token, uid)
    assert found["id"].endswith(f".{uid}-1") and found["barcode"]["value"] == new_code
    assert found["ticketHolderName"] == "Bo Ny"
    # An old link re-signed for the new generation without the secret is still refused.
    forged = api.app[HANDOUT].links.sign(LinkClaims(uid, 1), old_code)
    await _error(api, f"/eticket/{forged}", None, 404, "not_found")


async def test_a_refund_voids_the_passes_and_the_link(api, pool) -> None:
    token, ticket = await _bought(api, pool, c.TicketTerms())
    uid = ticket["id"]
    href = (await _links(api, token, uid))["shop:eticket"]["href"]
    refund = TicketRefunded(ticket_id=uid, refund_id="re_wallet", reason="cancelled")
    await append(pool, [PendingAppend(f"ticket-{uid}", 1, [refund])], TEST)
    await _error(api, path_of(href), None, 410, "ticket_refunded")
    assert (await _pass_json(api, token, uid))["voided"] is True
    assert (await _google_object(api, token, uid))["state"] == "INACTIVE"


async def test_read_models_rebuilt_after_transfers_and_refunds_equal_the_live_ones(
    api, pool
) -> None:
    await rebuild_read_models(pool)
    token, moved = await _bought(api, pool, c.TicketTerms())
    _, refunded = await _bought(api, pool, c.TicketTerms())
    await _transfer(pool, moved["id"])
    refund = TicketRefunded(ticket_id=refunded["id"], refund_id="re_rebuild")
    await append(pool, [PendingAppend(f"ticket-{refunded['id']}", 1, [refund])], TEST)
    await _pass_json(api, token, moved["id"])
    for _ in range(5):
        # A late webhook of an earlier test may append meanwhile: compare at one event count.
        appended = await pool.fetchval("SELECT count(*) FROM events")
        await _settled(pool)
        live = await _live_read_models(pool)
        await rebuild_read_models(pool)
        rebuilt = {p.name: await _tables(pool, live_schema(p)) for p in all_projections().values()}
        if await pool.fetchval("SELECT count(*) FROM events") == appended:
            break
    for name, tables in live.items():
        assert set(rebuilt[name]) == set(tables), name
        for table, rows in tables.items():
            differing = sorted(set(rebuilt[name][table]) ^ set(rows))
            assert not differing, (name, table, differing[:4])


async def _settled(pool: asyncpg.Pool) -> None:
    """Until no event waits behind a transaction still in flight (read_all's gate): else the
    live pass stops short of events the rebuild, a moment later, replays."""
    for _ in range(100):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())"
        )
        if not waiting:
            return
        await asyncio.sleep(0.05)


async def _live_read_models(pool: asyncpg.Pool) -> dict[str, dict[str, list[str]]]:
    """Every read model brought up to the event store event by event, as the projectors do."""
    live = {}
    for projection in all_projections().values():
        schema = live_schema(projection)
        async with pool.acquire() as conn:
            for _ in range(100):
                events = await read_all(
                    conn, await read_checkpoint(conn, schema), 500, projection.categories
                )
                await apply_batch(conn, projection, events)
                if len(events) < 500:
                    break
        live[projection.name] = await _tables(pool, schema)
    return live
