"""`linjerum run` on every core: this process starts (or reuses) the servers, migrates, seeds and
makes the data folder's secrets, then runs the components in child processes, one per group,
each a `linjerum run --child A+B` of this interpreter on the same servers. Their output is one
log stream (this process's stdout and stderr, whole lines); Ctrl-C stops them all, then the
embedded servers. A child that dies is restarted with growing delays; one that keeps dying right
after its start stops the run with a message saying which.

Children never outlive this process: the kernel sends them SIGTERM when it dies (Linux), and
each also stops when its stdin, a pipe from this process, reaches its end. Over that pipe this
process tells every child which of its siblings run, so the gateway's /healthz covers the run."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import structlog
from nats.aio.client import Client

from infra.bus import connect, ensure_stream, jetstream
from infra.embedded import child_setup
from infra.metrics import share_between_processes
from infra.settings import Settings
from infra.supervise import stop_task
from services.health import Readiness
from services.ports import check_ports
from services.runtime import (
    COMPONENTS,
    DEMO_KEY_FILE,
    make_secrets,
    seeded,
    simulator,
)
from services.runtime import run as run_components
from services.servers import connected, database

log = structlog.get_logger(__name__)

# The processes of a run, by the components each runs: the gateway (with the development pages)
# does most of the work of an on-sale and has a process to itself (the Stripe simulator, when
# the run uses one, is served by the run's own process);
# the relay and the projectors follow the same events; the rest wait on their outboxes and the
# clock. In an on-sale (bench/onsale.py --layout run) the other two use about a third of a core
# each: more processes would add start-up time and connections, not speed, on two cores.
GROUPS = ("gateway", "relay+projector", "sweeper+mailer+payments")
# Work that may wait a few seconds yields the cores to the sale: under load, the mailer's PDFs
# and e-mails, the sweeper's expiries and the Stripe refunds queue up and are carried out once
# the gateway and the read models leave the CPU idle (their PDF workers inherit the niceness).
NICENESS = {"sweeper+mailer+payments": 10}
STOP_GRACE_SECONDS = 10.0  # after SIGTERM, before SIGKILL
FIRST_RESTART_DELAY = 1.0  # doubled after each quick failure, up to the last
LAST_RESTART_DELAY = 30.0
STEADY_SECONDS = 60.0  # a child that ran this long starts over from the first delay
QUICK_FAILURES = 5  # quick failures in a row that stop the run
LINE_LIMIT = 1 << 20  # longer lines (a traceback in a JSON line) are passed on in pieces
DRAIN_SECONDS = 2.0  # for the rest of an exited child's output
PIPE_BYTES = 1 << 20  # Linux's largest pipe for an unprivileged process (fs.pipe-max-size)

Siblings = Callable[[Readiness], Coroutine[Any, Any, None]]


class ChildFailed(Exception):
    """A child kept dying right after its start; the message says which and how."""


async def run_processes(settings: Settings, *, seed: bool = True) -> int:
    """`linjerum run`: exit status 1 when a child kept failing, else the run ends by a signal."""
    check_ports(settings, COMPONENTS)
    share_between_processes(settings.data_dir / "metrics")
    structlog.contextvars.bind_contextvars(process="run")
    settings = replace(settings, data_dir=settings.data_dir.resolve())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with connected(settings) as live:
        await _prepare(live, seed=seed)
        try:
            async with _simulating(live) as simulating:
                await alongside(Supervisor(live, seed=seed).run(), simulating)
        except ChildFailed as exc:
            print(f"linjerum: {exc}; stopping", file=sys.stderr, flush=True)
            return 1
    return 0


async def _prepare(live: Settings, *, seed: bool) -> None:
    """What the children would otherwise race for: the schema, the stream, the demo data and
    key, and the secrets made into the data folder (embed, e-ticket links, wallet keys)."""
    async with database(live, waiting=True) as pool:
        nc: Client = await connect(live, "run")
        try:
            await ensure_stream(jetstream(nc), live)
        finally:
            await nc.close()
        if seed:
            await seeded(pool, live)
    make_secrets(live)


@contextlib.asynccontextmanager
async def _simulating(live: Settings) -> AsyncIterator[asyncio.Task[None] | None]:
    """The Stripe simulator, when the run uses one, served by this process and listening before
    the gateway starts: the gateway's process is the busiest of a sale, and this one idles."""
    if not live.starts_simulator:
        yield None
        return
    started = asyncio.Event()
    serving = asyncio.create_task(simulator(live, started))
    listening = asyncio.create_task(started.wait())
    try:
        await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()
        yield serving
    finally:
        await stop_task(listening)
        await stop_task(serving)


async def alongside(
    supervising: Coroutine[Any, Any, None], simulating: asyncio.Task[None] | None
) -> None:
    """The children until the run ends; a simulator that stops by itself ends the run too
    (payments could no longer be taken)."""
    children = asyncio.create_task(supervising)
    watched = {children} if simulating is None else {children, simulating}
    try:
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if children.done() or simulating is None:
            children.result()
            return
        failure = None if simulating.cancelled() else simulating.exception()
        raise ChildFailed(f"the Stripe simulator stopped ({failure!r})")
    finally:
        # The children have their grace before SIGKILL: cancelling the supervisor again
        # sooner (stop_task's default) would cut it short.
        await stop_task(children, again_after=STOP_GRACE_SECONDS + DRAIN_SECONDS)


@dataclass
class Child:
    """One group's process, while it runs, and its quick failures in a row."""

    group: str
    process: asyncio.subprocess.Process | None = None
    failures: int = 0
    forwarding: list[asyncio.Task[None]] = field(default_factory=list)


class Supervisor:
    """Starts, watches, restarts and stops the children of one run."""

    def __init__(self, live: Settings, *, seed: bool) -> None:
        self._live = live
        self._seed = seed
        self._children = [Child(group) for group in GROUPS]
        # Every forwarding task still running: one whose pipe a grandchild of a dead child
        # still holds open ends with the run.
        self._forwarders: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Until cancelled (Ctrl-C, SIGTERM) or a child keeps failing; the children are stopped
        either way."""
        keepers = [asyncio.create_task(self._keep(c), name=c.group) for c in self._children]
        try:
            await asyncio.gather(*keepers)
        finally:
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            for forwarder in self._forwarders:
                forwarder.cancel()

    async def _keep(self, child: Child) -> None:
        """Runs the child's process, again after each unexpected exit, until cancelled."""
        try:
            while True:
                started = time.monotonic()
                await self._start(child)
                assert child.process is not None
                code = await child.process.wait()
                await _let_go(child)
                self._announce()
                ran = time.monotonic() - started
                child.failures = 0 if ran >= STEADY_SECONDS else child.failures + 1
                if child.failures >= QUICK_FAILURES:
                    raise ChildFailed(
                        f"the {child.group} process exited (status {code})"
                        f" {child.failures} times in a row within {STEADY_SECONDS:g} s of starting"
                    )
                delay = min(
                    FIRST_RESTART_DELAY * 2 ** max(child.failures - 1, 0), LAST_RESTART_DELAY
                )
                log.error(
                    "process_exited", child=child.group, status=code, restart_in_seconds=delay
                )
                await asyncio.sleep(delay)
        finally:
            await _stop(child)

    async def _start(self, child: Child) -> None:
        live = self._live
        argv = [sys.executable, "-m", "services", "--data-dir", str(live.data_dir), "run"]
        argv += ["--child", child.group, "--host", live.http_host, "--port", str(live.http_port)]
        if not self._seed:
            argv.append("--no-seed")
        env = os.environ | {
            "DATABASE_URL": live.database_url,
            "NATS_URL": live.nats_url,
            # A run's health and metrics are the gateway's: workers of one run would all
            # want the same port.
            "LINJERUM_HEALTH_PORT": "0",
            "LINJERUM_METRICS_PORT": "0",
        }
        (out, out_end), (err, err_end) = _pipe(), _pipe()
        try:
            child.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=out_end,
                stderr=err_end,
                env=env,
                start_new_session=True,
                preexec_fn=_niced(child_setup(signal.SIGTERM), NICENESS.get(child.group, 0)),
            )
        finally:
            os.close(out_end)
            os.close(err_end)
        child.forwarding = [
            asyncio.create_task(_forward(out, sys.stdout.buffer)),
            asyncio.create_task(_forward(err, sys.stderr.buffer, structured=child.group)),
        ]
        for forwarder in child.forwarding:
            self._forwarders.add(forwarder)
            forwarder.add_done_callback(self._forwarders.discard)
        log.info("process_started", child=child.group, pid=child.process.pid)
        self._announce()

    def _announce(self) -> None:
        """Tells every running child which groups have a process now (one JSON line)."""
        running = {c.group: "running" if c.process else "stopped" for c in self._children}
        line = msgspec.json.encode(running) + b"\n"
        for child in self._children:
            if child.process is not None and child.process.stdin is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    child.process.stdin.write(line)


def _niced(setup: Callable[[], None], niceness: int) -> Callable[[], None]:
    """preexec_fn: `setup`, then the child's scheduling priority lowered by `niceness`. A child
    has a session of its own, and with Linux's autogroups a session's niceness is what counts
    against other sessions: both are set."""

    def niced() -> None:
        setup()
        if niceness:
            os.nice(niceness)
            with contextlib.suppress(OSError):
                Path("/proc/self/autogroup").write_text(str(niceness))

    return niced


def _pipe() -> tuple[BinaryIO, int]:
    """A pipe (read end, write end) for a child's output, as large as the system allows: a
    child whose pipe is full blocks in its next log write, its event loop with it, until this
    process reads."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return os.fdopen(read_end, "rb", buffering=0), write_end


async def _forward(pipe: BinaryIO, out: BinaryIO, *, structured: str | None = None) -> None:
    """Copies a child's output to ours a whole line at a time, so lines of different children
    never mix. `structured`: the output is the log of that group, and a line that is not JSON
    (a warning Python prints, a traceback of a crash before logging was set up) is logged as
    the `text` of an `unstructured_output` line, so the log stays JSON lines throughout."""
    stream = asyncio.StreamReader(limit=LINE_LIMIT)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), pipe)
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            line = end.partial
        except asyncio.LimitOverrunError as long:
            line = await stream.readexactly(long.consumed)
        if not line:
            return
        if structured is not None and not line.startswith(b"{"):
            text = line.decode(errors="replace").rstrip("\n")
            log.warning("unstructured_output", process=structured, text=text)
            continue
        out.write(line)
        out.flush()


async def _stop(child: Child) -> None:
    """SIGTERM, then SIGKILL after the grace period; its output is passed on to the end. A stop
    that is itself cancelled during the grace kills the child at once: no child outlives the
    run."""
    process = child.process
    if process is None:
        return
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                await process.wait()
        except TimeoutError:
            log.warning("process_killed", child=child.group, grace_seconds=STOP_GRACE_SECONDS)
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await process.wait()
    await _let_go(child)


async def _let_go(child: Child) -> None:
    """After an exited child: waits (briefly) for the rest of its output, and closes its stdin
    here. A process it started (a PDF worker) holds its pipes until it notices that the child
    is gone; left open, the stdin pipe outlived the run's event loop and its collection printed
    a traceback, not a JSON line, into the run's log."""
    assert child.process is not None
    await asyncio.wait(child.forwarding, timeout=DRAIN_SECONDS)
    if child.process.stdin is not None:
        child.process.stdin.close()
    child.process = None


async def run_child(settings: Settings, group: str, *, seed: bool) -> None:
    """`linjerum run --child A+B`: the components A and B of a run, on the run's servers
    (DATABASE_URL and NATS_URL, set by the parent), with the demo key when the run seeded."""
    components = tuple(group.split("+"))
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise SystemExit(f"linjerum run --child: unknown components {sorted(unknown)}")
    structlog.contextvars.bind_contextvars(process=group)
    token = None
    if seed and "gateway" in components:
        token = (settings.data_dir / DEMO_KEY_FILE).read_text().strip()
    await run_components(
        settings,
        seed=False,
        components=components,
        token=token,
        siblings=_follow_parent(group),
        simulates=False,
    )


def _follow_parent(own: str) -> Siblings:
    """The task that reads the parent's announcements from stdin: each sibling group shows in
    /healthz as `process:GROUP`, running or stopped. At the end of stdin the parent is gone, and
    this process stops as on SIGTERM."""

    async def follow(readiness: Readiness) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            for group, state in msgspec.json.decode(line, type=dict[str, str]).items():
                if group != own:
                    _mark(readiness, f"process:{group}", running=state == "running")
        # Nobody is left to SIGKILL this process if its shutdown hangs: it does so itself.
        watchdog = threading.Timer(STOP_GRACE_SECONDS, os._exit, args=(1,))
        watchdog.daemon = True
        watchdog.start()
        os.kill(os.getpid(), signal.SIGTERM)

    return follow


def _mark(readiness: Readiness, name: str, *, running: bool) -> None:
    """A stand-in task for a sibling process: pending while it runs, cancelled while not."""
    task = readiness.components.get(name)
    if running and (task is None or task.done()):
        readiness.components[name] = asyncio.create_task(asyncio.Event().wait(), name=name)
    elif not running and task is not None:
        task.cancel()
