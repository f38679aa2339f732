"""The loop every long-running worker shares: PostgreSQL and NATS come and go, so a worker that
fails is started again, with a growing pause, until it is cancelled.

An outage of PostgreSQL or NATS is told once when it starts and once when it ends (with its
length), by one tracker the whole process shares: every worker of `linjerum run` fails together
in an outage, and an operator wants two lines, not a warning per worker and retry."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import asyncpg
import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")


def detached(work: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
    """A task of the process rather than of the request that happened to start it (a sales
    desk's worker, a batcher's): it runs in the current context without the request's id, so
    its log lines for later batches do not name a request answered long before."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.unbind_contextvars, "request_id")
    return asyncio.create_task(work, name=name, context=context)


Probe = Callable[[], Awaitable[object]]
PROBE_EVERY = 0.5
PROBE_TIMEOUT = 2.0


# What says PostgreSQL is unreachable, going down or out of resources (connection errors are
# its: see below); its other errors are about the statement (a bad row, a bug), not an outage.
_POSTGRES_DOWN = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.PostgresSystemError,
    asyncpg.exceptions.InternalClientError,  # a connection left mid-exchange by a server going down
)


def dependency_of(exc: BaseException) -> str | None:
    """Which server an error says is unreachable: "postgresql", "nats", or None for anything
    else (a bug or a row the database refuses, which is worth a warning each time). Connection
    errors reaching a worker come from PostgreSQL: the NATS client reconnects by itself and
    raises its own errors."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__
        if module.startswith("nats"):
            return "nats"
        if isinstance(current, _POSTGRES_DOWN):
            return "postgresql"
        current = current.__cause__ or current.__context__
    return None


class Outages:
    """Which servers are unreachable, since when. The first failure starts an outage (one
    warning); it ends (one warning, with its length) when a worker reports the server answered
    or, for a server with a registered probe, when the probe gets an answer."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}
        self._probes: dict[str, Probe] = {}
        self._probing: dict[str, asyncio.Task[None]] = {}

    def is_down(self, dependency: str) -> bool:
        return dependency in self._since

    def watch(self, dependency: str, probe: Probe) -> None:
        """How to tell that `dependency` answers again (raises while it does not)."""
        self._probes[dependency] = probe

    def down(self, dependency: str, error: object, **context: Any) -> bool:
        """Note a failure; True if it started an outage (and was logged as such)."""
        if dependency in self._since:
            return False
        self._since[dependency] = time.monotonic()
        log.warning("outage_started", dependency=dependency, error=_text(error), **context)
        probe = self._probes.get(dependency)
        if probe is not None:
            self._probing[dependency] = asyncio.get_running_loop().create_task(
                self._probe(dependency, probe)
            )
        return True

    def up(self, dependency: str) -> None:
        """`dependency` answered: end its outage, if there is one."""
        since = self._since.pop(dependency, None)
        if since is None:
            return
        log.warning(
            "outage_ended", dependency=dependency, seconds=round(time.monotonic() - since, 1)
        )
        probing = self._probing.pop(dependency, None)
        if probing is not None and probing is not asyncio.current_task():
            probing.cancel()

    def close(self) -> None:
        """Forget the probes (their clients are being closed) and stop probing."""
        self._probes.clear()
        for task in self._probing.values():
            task.cancel()
        self._probing.clear()

    async def _probe(self, dependency: str, probe: Probe) -> None:
        while dependency in self._since:
            await asyncio.sleep(PROBE_EVERY)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await probe()
            except Exception:
                continue
            self._probing.pop(dependency, None)
            self.up(dependency)


def _text(error: object) -> str:
    return repr(error) if isinstance(error, BaseException) else str(error)


OUTAGES = Outages()


async def serve_forever(
    serve: Callable[[], Awaitable[None]],
    name: str,
    *,
    first_pause: float = 0.05,
    longest_pause: float = 2.0,
    **context: Any,
) -> None:
    """Run `serve` again after every failure, pausing twice as long each time up to
    `longest_pause`; only cancellation ends it. A failure of an unreachable server is part of
    its outage (logged once by OUTAGES, each retry only at debug level); any other failure is
    a `<name>_retrying` warning."""
    pause = first_pause
    while True:
        try:
            await serve()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            dependency = dependency_of(exc)
            if dependency is None:
                log.warning(f"{name}_retrying", error=repr(exc), in_seconds=pause, **context)
            else:
                OUTAGES.down(dependency, exc, worker=name, **context)
                log.debug(f"{name}_retrying", error=repr(exc), in_seconds=pause, **context)
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest_pause)


STOP_AGAIN_SECONDS = 5.0  # a task still running this long after its cancellation is cancelled again


def honour_cancellation() -> None:
    """Raise a cancellation the current task was sent but did not see. On Python 3.11
    asyncio.wait_for (inside nats-py's fetch and publish) loses one that arrives as what it
    waits for completes (python/cpython#86296); the task still counts it. A loop that calls
    this after each such wait stops at once, where `stop_tasks` would wait STOP_AGAIN_SECONDS
    before cancelling it again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], again_after: float | None = None) -> None:
    """Cancel the tasks and wait until each has finished its cleanup. One still running
    `again_after` seconds later (default STOP_AGAIN_SECONDS) is cancelled again: on Python 3.11
    asyncio.wait_for (which nats-py and asyncpg use) loses a cancellation that arrives as what
    it waits for completes (python/cpython#86296), and the task ran on, so a relay never
    stopped on SIGTERM. Waiting with asyncio.wait leaves a cancellation of the caller to the
    caller. A failure a task ended with is read (no warning when it is collected); the caller
    raises it with `raise_failure` if it is the caller's to raise."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=again_after or STOP_AGAIN_SECONDS)
        for task in pending:
            task.cancel()
    for task in tasks:
        if not task.cancelled():
            task.exception()


async def stop_task(task: asyncio.Task[Any] | None, again_after: float | None = None) -> None:
    """Cancel a worker's task and wait until it has finished its cleanup (`stop_tasks`); a
    failure it ended with is raised here."""
    if task is None:
        return
    await stop_tasks([task], again_after)
    raise_failure([task])


def raise_failure(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Raise what the first of the ended `tasks` that failed ended with."""
    for task in tasks:
        if task.done() and not task.cancelled() and (failure := task.exception()) is not None:
            raise failure
