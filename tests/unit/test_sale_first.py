"""Selling before browsing: while a purchase is under way and the event loop is saturated,
browsing requests run a few at a time, in order of arrival; with nothing being sold, or a loop
that keeps up, they run freely; none is ever refused or left waiting for good."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.api.gateway import partner_routes
from services.api.sale_first import BROWSING_WHILE_SELLING, Lane, LoopLag, SaleFirst


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


def _saturated() -> LoopLag:
    """A loop lag that says saturated until the test says otherwise."""
    lag = LoopLag()
    lag.saturated = True
    return lag


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_browsing_runs_freely_while_nothing_is_sold() -> None:
    requests = _Requests(SaleFirst(lag=_saturated()))
    for i in range(10):
        requests.arrive(f"browse{i}", "browsing")
    await _settle()
    assert len(requests.started) == 10


async def test_browsing_waits_its_turn_while_a_purchase_is_under_way() -> None:
    requests = _Requests(SaleFirst(2, _saturated()))
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


async def test_a_saturated_gateway_lets_a_few_browse_beside_its_sales() -> None:
    requests = _Requests(SaleFirst(lag=_saturated()))
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


async def test_browsing_runs_freely_beside_a_sale_while_the_loop_keeps_up() -> None:
    lag = _saturated()
    requests = _Requests(SaleFirst(1, lag))
    requests.arrive("purchase", "selling")
    for i in range(4):
        requests.arrive(f"browse{i}", "browsing")
    await _settle()
    assert len(requests.started) == 2
    lag.saturated = False  # as the loop's watcher finds it keeping up again
    lag.on_change()
    await _settle()
    assert requests.started[-3:] == ["browse1", "browse2", "browse3"]
    requests.arrive("browse4", "browsing")  # a purchase waiting for a slow Stripe, say
    await _settle()
    assert requests.started[-1] == "browse4"
    for name in requests.tasks:
        requests.done[name].set()
    await asyncio.gather(*requests.tasks.values())


async def test_the_loop_lag_sees_a_blocked_loop_and_its_recovery() -> None:
    lag = LoopLag()
    flips: list[bool] = []
    lag.on_change = lambda: flips.append(lag.saturated)
    lag.start()
    lag.watch()  # as a sale begins
    try:
        await asyncio.sleep(0.05)
        # The loop blocked on purpose: the watcher's timer fires 40 ms late or more.
        time.sleep(0.05)  # noqa: ASYNC251
        for _ in range(300):  # bounded: 3 s for a busy machine's loop to be seen idle again
            await asyncio.sleep(0.01)
            if True in flips and not lag.saturated:
                break
        assert True in flips, "a loop blocked for 50 ms was not seen saturated"
        assert not lag.saturated, "an idle loop was still seen saturated"
        lag.rest()  # the sale is over: no timers, the loop counts as keeping up
        time.sleep(0.05)  # noqa: ASYNC251
        await asyncio.sleep(0.03)
        assert not lag.saturated
    finally:
        await lag.stop()


async def test_a_browsing_request_cancelled_while_it_waits_takes_no_turn() -> None:
    requests = _Requests(SaleFirst(1, _saturated()))
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
    gate = SaleFirst(1, _saturated())
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


def test_purchases_sell_and_the_seat_planners_reads_browse() -> None:
    lanes = {(r.method, r.path): r.lane for r in partner_routes()}
    assert lanes[("POST", "/api/v1/purchases")] == "selling"
    for path in (
        "/api/v1/events/{slug}/seats/auto-select",
        "/api/v1/events/{slug}/seats/validate",
    ):
        assert lanes[("POST", path)] == "browsing"
    # Polled reads are answered from memory, built once per change whoever asks: in no lane.
    for path in (
        "/api/v1/events/{slug}/availability",
        "/api/v1/venues/{id}/seat-plan",
        "/api/v1/attractions/{slug}/availability",
    ):
        assert lanes[("GET", path)] == "free"
    # A buyer's poll for its own purchase and Stripe's webhooks neither wait nor make anyone wait.
    assert lanes[("GET", "/api/v1/purchases/{token}")] == "free"
    assert lanes[("POST", "/api/v1/webhooks/stripe")] == "free"
