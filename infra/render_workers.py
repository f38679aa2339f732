"""The processes that render and merge ticket PDFs (infra/tickets_pdf.py), so rendering uses a
core of its own and never stalls an event loop: forked from a fork server at the process's
start, replaced when one dies, and ended with the service process that asked for them."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import structlog

from infra import tickets_pdf
from infra.embedded.processes import alive, create_time

log = structlog.get_logger(__name__)

WARM_HOLD = 0.5  # seconds each worker is kept busy at start-up (RenderWorkers.warm)


def _started(hold: float) -> None:
    """What each worker is first given to do: start, and stay busy for `hold` seconds, so the
    pool starts a worker for each of these tasks instead of handing the next to this one."""
    time.sleep(hold)


def _follow(service: int, started: float | None) -> None:
    """A worker's first step: it exits when the service process does, however that ends. A
    worker holds both ends of its task queue (and the fork server a worker's way back), so
    nothing else tells it: workers of a killed service lived on. Ctrl-C, which a terminal sends
    the service's whole process group, is the service's to answer: each worker printed a
    KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        watched: int | None = os.pidfd_open(service)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):  # a kernel before Linux 5.3: asked every second instead
        watched = None

    def wait() -> None:
        if watched is not None:
            select.select([watched], [], [])
        else:
            while alive(service, started):
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=wait, name="service-watch", daemon=True).start()


def _fork_server() -> multiprocessing.context.BaseContext:
    """Workers forked from a server process that imported the renderer, and the program's main
    module where each worker would run it again by name (`python -m services.cli`: neither the
    `linjerum` script nor `python -m services`, services/__main__.py). Spawned, each worker
    imported the whole service first (1.4 s of CPU against 0.4 s for the renderer), in the
    middle of the sale that sent the first confirmation. A fork of the service itself would
    copy its event loop and connections."""
    context = multiprocessing.get_context("forkserver")
    main = getattr(sys.modules["__main__"].__spec__, "name", None)
    runs_again = main is not None and not main.endswith(".__main__")
    context.set_forkserver_preload(
        [tickets_pdf.__name__, __name__, *([main] if runs_again else [])]
    )
    return context


class RenderWorkers(Executor):
    """Worker processes for rendering and merging. A pool whose worker died (killed, out of
    memory) refuses all further work, so it is replaced: one crash fails the documents being
    rendered then, not every later one."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool = self._spawn()

    def _spawn(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._workers,
            mp_context=_fork_server(),
            initializer=_follow,
            initargs=(os.getpid(), create_time(os.getpid())),
        )

    def warm(self) -> None:
        """Starts the fork server and every worker now, on the caller's thread (a thread of its
        own at start-up): a worker is started by a `submit` that finds none idle, and waits for
        the server (its imports, the first time; the CPU, when the machine is busy and the
        process niced), which would otherwise stall the event loop that asked for a
        document."""
        for future in [self.submit(_started, WARM_HOLD) for _ in range(self._workers)]:
            future.result()

    def submit(self, fn: Callable[..., object], /, *args: object, **kwargs: object) -> Future:
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._spawn()
            return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


@contextlib.contextmanager
def pdf_renderer(workers: int) -> Iterator[Executor | None]:
    """`workers` processes for ticket PDFs, started now and shut down on the way out. None for
    none (LINJERUM_PDF_WORKERS=0, or a process that renders nothing): a thread of the process
    renders them then (services/usecases/ticket_documents.py)."""
    if workers <= 0:
        yield None
        return
    started = RenderWorkers(workers)
    threading.Thread(target=_warm, args=(started,), name="pdf-workers", daemon=True).start()
    try:
        yield started
    finally:
        started.shutdown(wait=False, cancel_futures=True)


def _warm(workers: RenderWorkers) -> None:
    """Workers that cannot start are a log line, not a thread's traceback on stderr; the first
    PDF asked for meets the same error."""
    try:
        workers.warm()
    except Exception as exc:
        log.warning("pdf_workers_not_started", error=repr(exc))
