"""`linjerum run` serves the Stripe simulator from its own process: a simulator that stops by
itself (payments could no longer be taken) ends the run with a message saying so, and the
children are stopped."""

from __future__ import annotations

import asyncio

import pytest

from services.processes import ChildFailed, alongside


async def test_a_simulator_that_stops_by_itself_ends_the_run_saying_so() -> None:
    stopped = asyncio.Event()

    async def children() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def simulator() -> None:
        raise OSError("the simulator's socket went away")

    with pytest.raises(ChildFailed, match=r"the Stripe simulator stopped .*socket went away"):
        await alongside(children(), asyncio.create_task(simulator()))
    assert stopped.is_set()


async def test_children_that_fail_end_the_run_with_their_own_message() -> None:
    async def children() -> None:
        raise ChildFailed("the gateway process exited 5 times")

    async def simulator() -> None:
        await asyncio.Event().wait()

    serving = asyncio.create_task(simulator())
    with pytest.raises(ChildFailed, match="gateway process exited"):
        await alongside(children(), serving)
    assert not serving.done()
    serving.cancel()
