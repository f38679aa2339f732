"""The processes a benchmark starts: the service's (`linjerum ...`, or the script itself in a
serving mode), py-spy on one of them, and their logs, kept only when something went wrong."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
from aiohttp import web

from harness.report import cpu_seconds
from infra.settings import Settings

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
READY = "linjerum is running on"  # what `linjerum gateway` and `linjerum run` print once serving


async def stop_process(
    process: asyncio.subprocess.Process, sig: signal.Signals = signal.SIGTERM
) -> None:
    """Asks with `sig`, and kills the process if it has not ended 30 s later."""
    if process.returncode is not None:
        return
    process.send_signal(sig)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()


@dataclass
class Component:
    """A process started by the benchmark; its stdout and stderr are kept in files."""

    name: str
    process: asyncio.subprocess.Process
    out: Path
    err: Path

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        env: dict[str, str],
        logs: Path,
        *,
        ready: str | None = None,
        timeout: float = 60.0,
    ) -> Component:
        """Starts `argv`; with `ready`, waits (at most `timeout` s) for that text on stdout."""
        logs.mkdir(parents=True, exist_ok=True)
        out, err = logs / f"{name}.out", logs / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=stdout, stderr=stderr, env=env, cwd=REPO
            )
        component = cls(name, process, out, err)
        deadline = time.monotonic() + timeout
        while ready is not None and ready not in out.read_text(errors="replace"):
            if process.returncode is not None or time.monotonic() > deadline:
                await component.stop()
                tail = err.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} did not start:\n{tail}")
            await asyncio.sleep(0.05)
        return component

    @property
    def pid(self) -> int:
        return self.process.pid

    def count_in_log(self, needle: str) -> int:
        """Lines of stderr (the structlog output) that contain `needle`."""
        with self.err.open(errors="replace") as lines:
            return sum(needle in line for line in lines)

    @property
    def errors(self) -> int:
        """Errors the process logged (structlog's JSON lines)."""
        return self.count_in_log('"level":"error"')

    async def stop(self) -> None:
        await stop_process(self.process)


def process_tree(components: Sequence[Component]) -> dict[str, int]:
    """The pids whose CPU a benchmark counts, by name: each component's, and the processes a
    `linjerum run` started for its groups of components (named `NAME GROUP`)."""
    pids = {c.name: c.pid for c in components}
    for component in components:
        for child in psutil.Process(component.pid).children():
            with contextlib.suppress(psutil.Error):
                argv = child.cmdline()
                if "--child" in argv:
                    pids[f"{component.name} {argv[argv.index('--child') + 1]}"] = child.pid
    return pids


async def settled(
    components: Sequence[Component], *, quiet: float = 0.1, within: float = 20.0
) -> None:
    """Until the components and every process they started (PDF workers, a fork server) use
    under `quiet` of a core together over half a second, at most `within` s: what a service
    does once at its start (its workers' imports) is not measured as part of the sale."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        tree = []
        for component in components:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(component.pid)
                tree += [root, *root.children(recursive=True)]
        before = cpu_seconds(tree)
        await asyncio.sleep(0.5)
        if cpu_seconds(tree) - before < quiet * 0.5:
            return


def linjerum(data_dir: Path, *command: str) -> list[str]:
    """The argv of a `linjerum` command (the console script, run from this interpreter)."""
    return [sys.executable, "-m", "services", "--data-dir", str(data_dir), *command]


async def start_gateway(name: str, port: int, env: dict[str, str], logs: Path) -> Component:
    """`linjerum gateway` on `port` of 127.0.0.1, once it serves."""
    command = linjerum(logs / "data", "gateway", "--host", HOST, "--port", str(port))
    return await Component.start(name, command, env, logs, ready=READY)


def this_script(*options: str) -> list[str]:
    """The argv of the running benchmark script again, in a serving mode its `options` name."""
    return [sys.executable, str(Path(sys.argv[0]).resolve()), *options]


def service_env(settings: Settings, *, log_level: str, pool_size: int) -> dict[str, str]:
    """The environment of a `linjerum` process pointed at the scratch database and stream."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "NATS_URL": settings.nats_url,
        "LINJERUM_NATS_STREAM": settings.nats_stream,
        "LINJERUM_SUBJECT_PREFIX": settings.subject_prefix,
        "LINJERUM_LOG_LEVEL": log_level,
        "LINJERUM_DB_POOL_SIZE": str(pool_size),
    }


def tidy_logs(logs: Path, components: Sequence[Component], *, keep: bool, whose: str) -> None:
    """Removes the logs, unless asked to keep them or a component logged an error."""
    errors = sum(component.errors for component in components)
    if errors or keep:
        print(f"{whose} logs are kept in {logs} ({errors} errors logged)")
    else:
        shutil.rmtree(logs, ignore_errors=True)


@dataclass
class Profiler:
    """py-spy sampling one process (pausing it for each sample, so every stack is whole),
    stopped with SIGINT so it writes its collapsed stacks."""

    process: asyncio.subprocess.Process | None
    path: Path

    @classmethod
    async def attach(cls, pid: int, path: Path) -> Profiler:
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            print(f"py-spy is not installed next to {sys.executable}: no profile", flush=True)
            return cls(None, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(spy), "record", "--pid", str(pid), "--rate", "100"]
        argv += ["--format", "raw", "--output", str(path)]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # py-spy attaches before the phase starts
        return cls(process, path)

    async def stop(self) -> None:
        if self.process is not None:
            await stop_process(self.process, signal.SIGINT)


def stop_signal() -> asyncio.Event:
    """Set on SIGTERM or SIGINT: how a serving mode learns that the benchmark is done."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int, banner: str) -> AsyncIterator[None]:
    """`app` on `port` of 127.0.0.1; `banner` is printed once it listens (what Component.start
    waits for)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port).start()
        print(banner, flush=True)
        yield
    finally:
        await runner.cleanup()


async def wait_until_served(session: aiohttp.ClientSession, url: str, timeout: float) -> None:
    """Polls `url` until it answers 200 (the read models have the event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")
