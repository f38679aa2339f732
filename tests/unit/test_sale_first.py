"""Selling before browsing: while a purchase or a payment confirmation is under way, browsing
requests run a few at a time, in order of arrival; with nothing being sold they run freely; none
is ever refused or left waiting for good."""

from __future__ import annotations

import asyncio

import pytest

from services.api.gateway import partner_routes
from services.api.sale_first import BROWSING_WHILE_SELLING, Lane, SaleFirst


class _Requests:
    """Requests in lanes, each running until its `done` event is set."""

    def __init__(self, gate: SaleFirst) -> None:
        self.gate = gate
        self.started: list[str] = []
        self.done: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def arrive(self, name: str, lane: Lane) -> None:
        self.done[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._run(name, lane))

    async def _run(self, name: str, lane: Lane) -> None:
        async with self.gate.lane(lane):
            self.started.append(name)
            await self.done[name].wait()

    async def finish(self, name: str) -> None:
        self.done[name].set()
        await self.tasks[name]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_browsing_runs_freely_while_nothing_is_sold() -> None:
    requests = _Requests(SaleFirst())
    for i in range(10):
        requests.arrive(f"browse{i}", "browsing")
    await _settle()
    assert len(requests.started) == 10


async def test_browsing_waits_its_turn_while_a_purchase_is_under_way() -> None:
    requests = _Requests(SaleFirst(browsing_while_selling=2))
    requests.arrive("purchase", "selling")
    await _settle()
    for i in range(5):
        requests.arrive(f"browse{i}", "browsing")
    requests.arrive("poll", "free")
    requests.arrive("second purchase", "selling")
    await _settle()
    assert requests.started == ["purchase", "browse0", "browse1", "poll", "second purchase"]
    await requests.finish("browse1")
    await _settle()
    assert requests.started[-1] == "browse2"  # in order of arrival
    await requests.finish("purchase")
    await requests.finish("second purchase")
    await _settle()
    # Nothing sold any more: every one still waiting runs.
    assert requests.started[-2:] == ["browse3", "browse4"]
    for name in requests.tasks:
        requests.done[name].set()
    await asyncio.gather(*requests.tasks.values())


async def test_a_gateway_lets_a_few_browse_beside_its_sales() -> None:
    requests = _Requests(SaleFirst())
    requests.arrive("purchase", "selling")
    for i in range(BROWSING_WHILE_SELLING + 3):
        requests.arrive(f"browse{i}", "browsing")
    await _settle()
    assert len(requests.started) == 1 + BROWSING_WHILE_SELLING
    await requests.finish("purchase")
    await _settle()
    assert len(requests.started) == 1 + BROWSING_WHILE_SELLING + 3
    for name in requests.tasks:
        requests.done[name].set()
    await asyncio.gather(*requests.tasks.values())


async def test_a_browsing_request_cancelled_while_it_waits_takes_no_turn() -> None:
    requests = _Requests(SaleFirst(browsing_while_selling=1))
    requests.arrive("purchase", "selling")
    requests.arrive("browse0", "browsing")
    await _settle()
    requests.arrive("gone", "browsing")
    requests.arrive("browse1", "browsing")
    await _settle()
    requests.tasks["gone"].cancel()
    with pytest.raises(asyncio.CancelledError):
        await requests.tasks["gone"]
    await requests.finish("browse0")
    await _settle()
    assert requests.started == ["purchase", "browse0", "browse1"]
    await requests.finish("browse1")
    requests.arrive("browse2", "browsing")  # the turns add up: one runs, no slot is lost
    await _settle()
    assert requests.started[-1] == "browse2"
    await requests.finish("browse2")
    await requests.finish("purchase")


async def test_a_turn_given_as_its_request_is_cancelled_goes_to_the_next() -> None:
    gate = SaleFirst(browsing_while_selling=1)
    requests = _Requests(gate)
    requests.arrive("purchase", "selling")
    await _settle()
    browsing = gate.lane("browsing")
    await browsing.__aenter__()
    requests.arrive("gone", "browsing")
    requests.arrive("browse1", "browsing")
    await _settle()
    assert requests.started == ["purchase"]
    await browsing.__aexit__(None, None, None)  # gives "gone" the turn, which does not run...
    requests.tasks["gone"].cancel()  # ...before it is cancelled
    with pytest.raises(asyncio.CancelledError):
        await requests.tasks["gone"]
    await _settle()
    assert requests.started == ["purchase", "browse1"]
    await requests.finish("browse1")
    await requests.finish("purchase")


def test_purchases_and_payments_sell_and_the_seat_planners_reads_browse() -> None:
    lanes = {(r.method, r.path): r.lane for r in partner_routes()}
    assert lanes[("POST", "/api/v1/purchases")] == "selling"
    assert lanes[("POST", "/api/v1/webhooks/stripe")] == "selling"
    for path in (
        "/api/v1/events/{slug}/seats/auto-select",
        "/api/v1/events/{slug}/seats/validate",
    ):
        assert lanes[("POST", path)] == "browsing"
    for path in (
        "/api/v1/events/{slug}/availability",
        "/api/v1/venues/{id}/seat-plan",
        "/api/v1/attractions/{slug}/availability",
    ):
        assert lanes[("GET", path)] == "browsing"
    # A buyer's poll for its own purchase neither waits nor makes anyone wait.
    assert lanes[("GET", "/api/v1/purchases/{token}")] == "free"
