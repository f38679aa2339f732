"""Running a server as a child process the same way for PostgreSQL and NATS: its own session,
death with this process, a free port taken again when someone grabs it first, and a stop that
always finishes, so each server's module only says what is particular to that server."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import structlog

log = structlog.get_logger(__name__)

START_TIMEOUT = 30.0  # seconds for a server to accept connections
_PORT_ATTEMPTS = 3  # a free port can be grabbed by someone else before the server binds it
_PR_SET_PDEATHSIG = 1

T = TypeVar("T")


class EmbeddedUnavailable(RuntimeError):
    """A server URL is unset and the wheel that would stand in for it is not installed: the
    production image leaves the `embedded` extra out, so it must be told where its servers are."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process this process started and therefore must stop."""

    name: str  # "postgres" | "nats"
    proc: subprocess.Popen[bytes]
    port: int
    stop_signal: int
    stop_timeout: float


def create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def alive(pid: Any, started: Any = None) -> bool:
    """The process runs (zombies do not count) and, if known, is the same one that was recorded
    (create time guards against pid reuse)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not isinstance(started, int | float) or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def child_setup(deathsig: int) -> Callable[[], None]:
    """preexec_fn: ask the kernel to send `deathsig` to the child when this process dies (even by
    SIGKILL). Runs after the uid switch (which would clear the setting) and in the forking
    thread's child, so everything it needs is prepared here in the parent."""
    parent = os.getpid()
    prctl = _libc_prctl()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(deathsig), 0, 0, 0)
            if os.getppid() != parent:  # parent died before the setting took effect
                os._exit(1)

    return setup


def spawn(
    argv: list[str],
    *,
    log_path: Path,
    deathsig: int,
    cwd: Path,
    account: Any = None,
) -> subprocess.Popen[bytes]:
    """Start a server child: output appended to `log_path`, own session (a terminal Ctrl-C goes
    to Python, which stops servers in order), dies with this process, optionally as `account`.

    Called on the event loop's thread on purpose: the parent-death signal fires when the *thread*
    that forked exits, so a short-lived worker thread must not do it."""
    kwargs: dict[str, Any] = {}
    if account is not None:
        kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    with open(log_path, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=child_setup(deathsig),
            **kwargs,
        )


async def run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """Await cleanup to completion even if the waiting task is cancelled meanwhile (the
    cancellation is re-raised afterwards), so servers are never left half-stopped."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                break
            cancelled = True
    result = task.result()
    if cancelled:
        raise asyncio.CancelledError
    return result


async def stop_owned(servers: Iterable[Server]) -> None:
    """Signal all servers at once (postgres: SIGINT = fast shutdown; nats: SIGTERM), wait for
    them, SIGKILL whatever is still up after its timeout. If interrupted while waiting, finish
    the wait synchronously rather than leave servers behind."""
    servers = [s for s in servers if s.proc.poll() is None]
    start = time.monotonic()
    for s in servers:
        with contextlib.suppress(ProcessLookupError):
            s.proc.send_signal(s.stop_signal)

    def overdue(s: Server) -> bool:
        return time.monotonic() - start > s.stop_timeout

    try:
        while any(s.proc.poll() is None and not overdue(s) for s in servers):
            await asyncio.sleep(0.05)
    except BaseException:
        for s in servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(max(0.0, s.stop_timeout - (time.monotonic() - start)))
        raise
    finally:
        for s in servers:
            if s.proc.poll() is None:
                log.warning("embedded server did not stop in time, killing", server=s.name)
                with contextlib.suppress(ProcessLookupError):
                    s.proc.kill()
            s.proc.wait()


async def stop_foreign(pid: int, sig: int, timeout: float) -> None:
    """Stop a process that is not our child (left over from a crashed owner)."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(sig)
    except psutil.Error:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, proc.create_time()):
            return
        await asyncio.sleep(0.05)
    with contextlib.suppress(psutil.Error):
        proc.kill()
    for _ in range(100):
        if not alive(pid, proc.create_time()):
            return
        await asyncio.sleep(0.05)


def log_tail(path: Path, offset: int = 0, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return proc.poll()


class PortTaken(Exception):
    """Someone bound our freshly picked port first; pick another."""


async def wait_started(
    server: Server,
    log_path: Path,
    offset: int,
    *,
    answers: Callable[[], Awaitable[bool]],
    port_taken: Callable[[str], bool],
    poll: float,
) -> None:
    """Until the starting `server` answers (`answers()`, which may raise PortTaken when another
    server answers on its port). PortTaken when it exits saying its port was taken
    (`port_taken` of its log's new lines), RuntimeError when it exits otherwise or does not
    answer within START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            tail = log_tail(log_path, offset)
            if port_taken(tail):
                raise PortTaken
            raise RuntimeError(
                f"{server.name} exited with code {server.proc.returncode} during start "
                f"(log {log_path}):\n{tail}"
            )
        if await answers():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.name} did not accept connections on port {server.port} within "
                f"{START_TIMEOUT:.0f}s (log {log_path}):\n{log_tail(log_path, offset)}"
            )
        await asyncio.sleep(poll)


async def on_a_free_port(
    what: str,
    log_path: Path,
    start: Callable[[int, int], tuple[Server, Awaitable[None]]],
    port: int | None = None,
) -> Server:
    """Starts a server on a freshly picked port (`start(port, log offset)` spawns it and says
    how to wait until it is ready), again on another port when someone took that one first; on
    `port` alone when given (a server started again where its clients look for it)."""
    attempts = _PORT_ATTEMPTS if port is None else 1
    for attempt in range(attempts):
        offset = log_size(log_path)
        server, ready = start(port or free_port(), offset)
        try:
            await ready
        except PortTaken:
            await stop_owned([server])
            if attempt + 1 == attempts:
                raise RuntimeError(
                    f"{what} could not bind a port:\n{log_tail(log_path, offset)}"
                ) from None
            continue
        except BaseException:
            await run_to_end(stop_owned([server]))
            raise
        return server
    raise AssertionError("unreachable")
