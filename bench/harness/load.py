"""Driving load, bounded in count and in time: loops of one operation, requests taken from a
list, and load spread over processes that all start at one moment."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import asyncpg

from harness.report import Cpu, Step

MAX_OPS = 2_000_000

T = TypeVar("T")


async def bounded(seconds: float, workers: int, op: Callable[[int], Awaitable[None]]) -> float:
    """Runs `op` in `workers` loops (each passing its number) for `seconds` and at most MAX_OPS
    times in all; returns operations per second."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def loop(worker: int) -> None:
        nonlocal done
        while time.perf_counter() < deadline and done < MAX_OPS:
            await op(worker)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(workers)))
    return done / (time.perf_counter() - start)


async def insert_ceiling(pool: asyncpg.Pool, seconds: float, workers: int) -> float:
    """Plain single-row INSERT commits per second from `workers` connections: what this
    database can commit, one row at a time."""
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_plain (id bigserial, v text)")

    async def op(_: int) -> None:
        await pool.execute("INSERT INTO bench_plain (v) VALUES ($1)", "x")

    try:
        return await bounded(seconds, workers, op)
    finally:
        await pool.execute("DROP TABLE bench_plain")


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    headers: Mapping[str, str] | None = None


Check = Callable[[bytes], str | None]


@dataclass
class Phase:
    """One measured phase: its requests' latencies, what was left unsent when time ran out, and
    the CPU each side used."""

    step: Step
    seconds: float = 0.0
    body_bytes: int = 0
    not_sent: int = 0
    cpu: Cpu | None = None

    @property
    def rate(self) -> float:
        return len(self.step.latencies) / self.seconds if self.seconds else 0.0

    def cpu_us_per_request(self, name: str) -> float:
        """Microseconds of `name`'s CPU per request answered."""
        assert self.cpu is not None
        return self.cpu.of(name) / self.rate * 1e6 if self.rate else float("nan")


async def drive(
    session: aiohttp.ClientSession,
    phase: Phase,
    calls: Sequence[Call],
    *,
    connections: int,
    seconds: float,
    check: Check | None = None,
) -> None:
    """`connections` workers, one request at a time each, through `calls` in order until all
    are sent or `seconds` have passed; a 200 that passes `check` counts, with its latency, and
    anything else is an error."""
    deadline = time.perf_counter() + seconds
    sent = 0
    step = phase.step

    async def loop() -> None:
        nonlocal sent
        while sent < len(calls) and (started := time.perf_counter()) < deadline:
            call = calls[sent]
            sent += 1
            try:
                async with session.request(call.method, call.url, headers=call.headers) as r:
                    body = await r.read()
                    status = r.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                step.errors[type(exc).__name__] += 1
                continue
            problem = f"HTTP {status}" if status != 200 else check and check(body)
            if problem:
                step.errors[problem] += 1
                continue
            step.latencies.append(time.perf_counter() - started)
            phase.body_bytes = len(body)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    phase.seconds = time.perf_counter() - start
    phase.not_sent = len(calls) - sent


async def measure(
    session: aiohttp.ClientSession,
    name: str,
    calls: Sequence[Call],
    cpu: Cpu,
    *,
    connections: int,
    seconds: float,
    check: Check | None = None,
) -> Phase:
    """`drive`, with the CPU each side used while it ran."""
    phase = Phase(Step(name), cpu=cpu)
    cpu.start()
    try:
        await drive(session, phase, calls, connections=connections, seconds=seconds, check=check)
    finally:
        cpu.stop()
    return phase


@dataclass(frozen=True)
class Share:
    """One load process's part: every `of`-th connection and unit of work from `index`, starting
    at `started` (time.perf_counter, the system-wide monotonic clock on Linux, so every process
    measures from the same moment)."""

    index: int = 0
    of: int = 1
    started: float = 0.0


def _in_process(work: Callable[[Share], Awaitable[T]], share: Share) -> tuple[T, float]:
    cpu = time.process_time()
    result = asyncio.run(work(share))
    return result, time.process_time() - cpu


class LoadProcesses:
    """Load split over several processes: one Python event loop driving hundreds of connections
    queues the answers that arrive together behind each other (for up to a hundred milliseconds
    in an on-sale's first second), and that wait would be counted as the service's."""

    def __init__(self, pool: ProcessPoolExecutor | None, count: int) -> None:
        self._pool = pool
        self._count = count

    @classmethod
    async def start(cls, count: int) -> LoadProcesses:
        """Spawns the processes before the load begins (each waits until all have started)."""
        if count == 1:
            return cls(None, 1)
        pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, time.sleep, 0.5) for _ in range(count)))
        return cls(pool, count)

    async def run(self, work: Callable[[Share], Awaitable[T]]) -> tuple[list[T], float]:
        """Each share's result of `work` (picklable), and the CPU seconds the load processes
        spent on it: none when this process drove the load alone, as its own CPU is measured
        with the rest."""
        started = time.perf_counter() + (0.2 if self._pool else 0.0)
        shares = [Share(i, self._count, started) for i in range(self._count)]
        if self._pool is None:
            return [await work(shares[0])], 0.0
        loop = asyncio.get_running_loop()
        try:
            parts = await asyncio.gather(
                *(loop.run_in_executor(self._pool, _in_process, work, s) for s in shares)
            )
        finally:
            self._pool.shutdown()
        return [result for result, _ in parts], sum(cpu for _, cpu in parts)
