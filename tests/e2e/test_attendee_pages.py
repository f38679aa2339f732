"""The confirmation e-mail's attendee links, opened the way the attendee opens them: with no
API key. Each one shows that seat's ticket and links to its PDF; a token that opens nothing is
one plain 404 page."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import asyncpg
from pypdf import PdfReader

from domain import catalog as c
from domain import venues
from services.api.attendee_pages import attendee_link
from services.api.context import PURCHASES
from services.dev.sample_event import put_on_sale
from services.usecases.ticket_documents import Documents
from tests.e2e.conftest import (
    TEST,
    buyer_bundle,
    issue_key,
    new_organization,
    order,
    post,
    rebuild_read_models,
    small_event,
    venue_with,
)

LINK = re.compile(r"https?://[^/\s]+(/attendee/tok_[0-9a-f]{32})")


async def _confirmation_links(api, pool: asyncpg.Pool, names: list[str]) -> tuple[dict, list]:
    """A paid (free) purchase, its confirmation composed as the mailer composes it, with the
    link template the service uses, and the paths of the links in its text, in seat order."""
    token, _, type_id = await small_event(pool, len(names) + 1, price=0, stripe_account=None)
    body = order(
        type_id,
        len(names),
        attendees=[
            {"ticket_type_id": type_id, "index": i, "name": n} for i, n in enumerate(names, 1)
        ],
    )
    _, created = await post(api, token, "/api/v1/purchases", body, 201)
    purchase = created["purchase"]
    await rebuild_read_models(pool)
    link = attendee_link(str(api.make_url("")))
    documents = Documents(pool, api.app[PURCHASES].catalog, "tickets@example.com", link)
    message = await documents.confirmation(purchase["token"], "confirmation")
    assert message is not None
    return purchase, LINK.findall(message.get_body(("plain",)).get_content())


async def test_the_emails_attendee_links_open_without_an_api_key(api, pool: asyncpg.Pool) -> None:
    names = ["Ελένη <b>Παπαδοπούλου</b>", "Søren & Co"]
    escaped = ["Ελένη &lt;b&gt;Παπαδοπούλου&lt;/b&gt;", "Søren &amp; Co"]
    purchase, paths = await _confirmation_links(api, pool, names)
    assert len(paths) == 2
    codes = {t["ticket_code"] for t in purchase["tickets"]}
    shown = set()
    for path, name, html_name in zip(paths, names, escaped, strict=True):
        page = await api.get(path)  # no Authorization header: what the attendee has
        html = await page.text()
        assert page.status == 200, html
        assert page.content_type == "text/html"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert f"Name: {html_name}" in html and "<b>" not in html
        assert purchase["access_code"] not in html  # one seat, never the buyer's order
        assert "<svg" in html  # the QR code to show at the gate
        (code,) = [c for c in codes if c in html]
        shown.add(code)
        pdf = await api.get(f"{path}/ticket.pdf")
        assert pdf.status == 200 and pdf.content_type == "application/pdf"
        text = " ".join(PdfReader(io.BytesIO(await pdf.read())).pages[0].extract_text().split())
        assert code in text and name in text
    assert shown == codes


async def test_a_token_that_opens_nothing_is_a_404_page(api, pool: asyncpg.Pool) -> None:
    _, paths = await _confirmation_links(api, pool, ["Anna"])
    good = paths[0].removeprefix("/attendee/")
    near_miss = good[:-1] + ("0" if good[-1] != "0" else "1")
    for bad in (near_miss, "tok_" + "0" * 32, "tok_short", "<script>"):
        for path in (f"/attendee/{bad}", f"/attendee/{bad}/ticket.pdf"):
            response = await api.get(path)
            body = await response.text()
            assert response.status == 404, (path, body)
            assert response.content_type == "text/html"
            assert "Ticket not found" in body and "<script>" not in body


async def test_a_link_opened_before_the_tickets_are_handed_out_says_when(api, pool) -> None:
    later = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    org = await new_organization(pool, stripe_account=None)
    row = venues.Row(identifier="A", start=1, end=3)
    hall = venues.SectionPlan(name="Sal", width=10.0, height=10.0, rows=[row])
    venue_id = await venue_with(pool, org, hall)
    plan = c.TicketTypePlan(name="Alm", price_cents=0)
    terms = c.TicketTerms(fulfillment_starts_at=later)
    _, type_id = await put_on_sale(pool, org, venue_id, plan, TEST, terms=terms)
    token = await issue_key(pool, org)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id, 1), 201)
    [seat] = (await buyer_bundle(api, token, created["purchase"]))["lines"][0]["seats"]
    for path in (f"/attendee/{seat['token']}", f"/attendee/{seat['token']}/ticket.pdf"):
        page = await api.get(path)
        html = await page.text()
        assert (page.status, page.content_type) == (409, "text/html"), html
        assert f"handed out from {later:%Y-%m-%d %H:%M} UTC" in html
