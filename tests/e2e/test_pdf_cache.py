"""A purchase's ticket PDF is rendered once for everyone who asks for it at the same moment,
kept for the next download, and rendered anew when what it prints changes: a holder named by
the buyer, a ticket refunded (its page left out)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import asyncpg
import pytest
from pypdf import PdfReader

from services.api.context import PURCHASES
from services.usecases.ticket_documents import Documents
from services.usecases.ticketing import load_purchase
from tests.e2e.conftest import ATTENDEE_LINK, BUYER, bearer, order, post, small_event

TICKETS = 20
REQUESTS = 64


class CountingRenderer(ThreadPoolExecutor):
    """A real renderer (threads of this process) that counts the renders handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.renders = 0

    def submit(self, fn: Callable[..., object], /, *args: object, **kwargs: object) -> Future:
        self.renders += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def renderer() -> Iterator[CountingRenderer]:
    executor = CountingRenderer()
    yield executor
    executor.shutdown()


def _texts(pdf: bytes) -> list[str]:
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf)).pages]


async def test_concurrent_downloads_render_once_and_a_change_renders_anew(
    api, pool: asyncpg.Pool, renderer: CountingRenderer
) -> None:
    token, _, type_id = await small_event(pool, TICKETS, price=0, stripe_account=None)
    _, created = await post(api, token, "/api/v1/purchases", order(type_id, TICKETS), 201)
    bought = created["purchase"]
    documents = Documents(
        pool, api.app[PURCHASES].catalog, "tickets@example.com", ATTENDEE_LINK, renderer
    )
    purchase = await load_purchase(pool, bought["token"])
    assert purchase is not None and purchase.status == "paid"

    answers = await asyncio.gather(*(documents.pdf(purchase) for _ in range(REQUESTS)))
    assert len(set(answers)) == 1 and renderer.renders == 1
    first = _texts(answers[0])
    assert len(first) == TICKETS
    codes = [ticket["ticket_code"] for ticket in bought["tickets"]]
    assert all(code in text for code, text in zip(codes, first, strict=True))
    assert await documents.pdf(purchase) == answers[0] and renderer.renders == 1

    seats = await _seats(api, token, bought["access_code"])
    edit = {"email": BUYER["email"], "seats": [{"token": seats[0], "name": "Maja Holm"}]}
    edit["seats"][0]["email"] = None
    response = await api.patch(
        f"/api/v1/tickets/{bought['access_code']}", json=edit, headers=bearer(token)
    )
    assert response.status == 200, await response.json()
    renamed = await documents.pdf(purchase)
    assert renderer.renders == 2
    assert sum("Name: Maja Holm" in text for text in _texts(renamed)) == 1

    refunded = bought["tickets"][0]
    await post(
        api, token, f"/api/v1/purchases/{bought['token']}/refund", {"ticket_ids": [refunded["id"]]}
    )
    after_refund = _texts(await documents.pdf(await load_purchase(pool, bought["token"])))
    assert renderer.renders == 3 and len(after_refund) == TICKETS - 1
    assert not any(refunded["ticket_code"] in text for text in after_refund)


async def _seats(api, token: str, access_code: str) -> list[str]:
    """The attendee tokens of a purchase's seats, as the buyer's lookup shows them."""
    response = await api.get(
        f"/api/v1/tickets/{access_code}", params={"email": BUYER["email"]}, headers=bearer(token)
    )
    body = await response.json()
    assert response.status == 200, body
    return [seat["token"] for seat in body["lines"][0]["seats"]]
