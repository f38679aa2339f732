"""Stopping a worker's tasks: SIGTERM ends a process only if every task it cancels ends, and a
task on Python 3.11 can lose its cancellation inside asyncio.wait_for (python/cpython#86296),
which nats-py and asyncpg use; a relay ran on 30 s after SIGTERM in CI that way."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from infra import supervise
from infra.supervise import detached, honour_cancellation, stop_task, stop_tasks


async def _loses_its_first_cancellation(stopped: asyncio.Event) -> None:
    """A worker loop whose first cancellation is lost, as asyncio.wait_for loses one that
    arrives as the future it waits for completes: the loop goes on as if nothing happened."""
    lost = False
    try:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost = True
    finally:
        stopped.set()


async def test_a_task_that_loses_its_cancellation_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervise, "STOP_AGAIN_SECONDS", 0.2)
    stopped = asyncio.Event()
    task = asyncio.create_task(_loses_its_first_cancellation(stopped))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(5):
        await stop_tasks([task])
    assert stopped.is_set() and task.cancelled()


async def test_a_task_that_ends_on_its_cancellation_is_cancelled_once() -> None:
    cancellations = 0

    async def worker() -> None:
        nonlocal cancellations
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancellations += 1
            await asyncio.sleep(0.3)  # its cleanup, which a second cancellation would cut short
            raise

    task = asyncio.create_task(worker())
    await asyncio.sleep(0.01)
    await stop_tasks([task])
    assert cancellations == 1 and task.cancelled()


async def test_stop_task_raises_what_the_task_failed_with() -> None:
    async def fails_on_its_way_out() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(fails_on_its_way_out())
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await stop_task(task)


async def test_a_caller_cancelled_while_it_stops_a_task_is_cancelled() -> None:
    """The caller's own cancellation is not taken for the stopped task's: awaiting the task
    under suppress(CancelledError) swallowed it, and the caller went on."""

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.shield(asyncio.sleep(0.5))

    went_on = False

    async def caller() -> None:
        nonlocal went_on
        task = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0.01)
        await stop_task(task)
        went_on = True

    calling = asyncio.create_task(caller())
    await asyncio.sleep(0.1)
    calling.cancel()
    await asyncio.gather(calling, return_exceptions=True)
    assert calling.cancelled() and not went_on


async def test_the_wait_before_cancelling_again_is_the_callers_to_choose() -> None:
    """The process's own stop (services/cli.py) waits longer than its components' (which it
    must not cut short) before cancelling again."""
    stopped = asyncio.Event()
    task = asyncio.create_task(_loses_its_first_cancellation(stopped))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(supervise.STOP_AGAIN_SECONDS / 2):
        await stop_tasks([task], again_after=0.2)
    assert stopped.is_set() and task.cancelled()


async def test_a_loop_that_honours_its_cancellation_stops_on_the_first() -> None:
    """asyncio.wait_for on Python 3.11 returns the result of a future that completes in the same
    turn as the cancellation, and the cancellation is lost; the projector and the relay wait
    like that in nats-py's fetch and publish, and stop_tasks would wait STOP_AGAIN_SECONDS."""
    waits: list[asyncio.Future[None]] = []

    async def fetching() -> None:
        while True:
            waits.append(asyncio.get_running_loop().create_future())
            await asyncio.wait_for(waits[-1], timeout=60)
            honour_cancellation()

    task = asyncio.create_task(fetching())
    await asyncio.sleep(0.01)
    waits[-1].set_result(None)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=supervise.STOP_AGAIN_SECONDS / 5)
    assert task in done and task.cancelled()


async def test_a_detached_task_names_no_request() -> None:
    """A sales desk's worker is started by the first request that needs it and serves every
    later one: its log lines must not carry that first request's id."""

    async def fields() -> dict[str, object]:
        return structlog.contextvars.get_contextvars()

    with structlog.contextvars.bound_contextvars(process="gateway"):
        with structlog.contextvars.bound_contextvars(request_id="first-request"):
            worker = detached(fields())
            attached = asyncio.create_task(fields())
        assert await worker == {"process": "gateway"}
        assert (await attached)["request_id"] == "first-request"
