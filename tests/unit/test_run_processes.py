"""`linjerum run` serves the Stripe simulator from its own process: a simulator that stops by
itself (payments could no longer be taken) ends the run with a message saying so, and the
children are stopped."""

from __future__ import annotations

import asyncio
import sys

import pytest

from infra import supervise
from services import processes
from services.processes import Child, ChildFailed, alongside


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


async def test_a_child_whose_stop_is_cancelled_is_killed_not_left_running() -> None:
    """The stop of a child slow to end on SIGTERM cancelled during its grace (the run's own
    stop cancelling again): the child was left running after the run had exited."""
    deaf = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print(flush=True); time.sleep(60)",
        stdout=asyncio.subprocess.PIPE,
    )
    assert deaf.stdout is not None
    await deaf.stdout.readline()  # it ignores SIGTERM from here on
    stopping = asyncio.create_task(processes._stop(Child("relay", process=deaf)))
    await asyncio.sleep(0.2)
    stopping.cancel()
    await asyncio.gather(stopping, return_exceptions=True)
    try:
        async with asyncio.timeout(5):
            assert await deaf.wait() != 0
    finally:
        if deaf.returncode is None:
            deaf.kill()
            await deaf.wait()


async def test_the_children_have_their_grace_when_the_run_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop cancels a task again after STOP_AGAIN_SECONDS; the children's supervisor is
    given its children's grace first."""
    monkeypatch.setattr(supervise, "STOP_AGAIN_SECONDS", 0.1)
    monkeypatch.setattr(processes, "STOP_GRACE_SECONDS", 0.6)
    stopped_in_time = asyncio.Event()

    async def children() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.5)  # a child taking most of its grace to stop
            stopped_in_time.set()

    running = asyncio.create_task(alongside(children(), None))
    await asyncio.sleep(0.05)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert stopped_in_time.is_set()
