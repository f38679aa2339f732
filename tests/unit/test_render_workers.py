"""The PDF render workers: they replace a worker that died, all run before the first document is
asked for, import only what rendering needs, and end with their service, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from infra.render_workers import RenderWorkers
from infra.tickets_pdf import render_tickets
from services.dev.sample_ticket import SEATED_TICKET as SEATED


def test_a_dead_render_worker_is_replaced() -> None:
    """A worker process that dies (here: exits mid-task) breaks its pool for good; the
    service's renderer replaces the pool, so later tickets still render."""
    workers = RenderWorkers(1)
    try:
        assert workers.submit(render_tickets, [SEATED]).result(timeout=60).startswith(b"%PDF")
        with pytest.raises(BrokenProcessPool):
            workers.submit(os._exit, 1).result(timeout=60)
        rendered = None
        for _ in range(3):  # the pool learns of the death on its own thread, a moment later
            try:
                rendered = workers.submit(render_tickets, [SEATED]).result(timeout=60)
                break
            except BrokenProcessPool:
                continue
        assert rendered is not None and rendered.startswith(b"%PDF")
    finally:
        workers.shutdown()


# A service that starts its render workers at start-up, says which processes they are, and
# waits to be killed.
SERVICE = """
import multiprocessing, time
from infra.render_workers import RenderWorkers
workers = RenderWorkers(2)
workers.warm()
print(*[child.pid for child in multiprocessing.active_children()], flush=True)
time.sleep(120)
"""


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def _all_end(pids: list[int], within: float = 30.0) -> bool:
    """Whether every one of `pids` has ended, waiting up to `within` seconds for them."""
    deadline = time.monotonic() + within
    while not all(_ended(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(_ended(pid) for pid in pids)


def test_render_workers_start_at_start_up_and_end_with_the_service() -> None:
    """Every worker is running before the first document is asked for (starting one would
    otherwise stall whichever request or e-mail asked first), and a killed service leaves none
    behind: a worker holds both ends of its task queue, so nothing else would end it."""
    root = Path(__file__).resolve().parents[2]
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert service.stdout is not None
        workers = [int(pid) for pid in service.stdout.readline().split()]
        assert len(workers) == 2 and not any(_ended(pid) for pid in workers)
    finally:
        service.kill()
        service.wait()
    assert _all_end(workers)


# A render worker's watch on its service where the kernel has no pidfd (before Linux 5.3).
FOLLOWER = """
import os, sys, time
del os.pidfd_open
from infra.render_workers import _follow
_follow(int(sys.argv[1]), None)
time.sleep(120)
"""


def test_without_pidfd_a_worker_still_ends_with_its_service() -> None:
    root = Path(__file__).resolve().parents[2]
    service = subprocess.Popen(["sleep", "120"])
    follower = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(service.pid)], cwd=root)
    try:
        service.kill()
        service.wait()
        assert follower.wait(timeout=30) == 0
    finally:
        follower.kill()
        follower.wait()


# A program run as a file whose first lines are the `linjerum` console script's.
PROGRAM = """
import sys
from services.__main__ import main
from infra.render_workers import RenderWorkers

if __name__ == "__main__":
    workers = RenderWorkers(1)
    workers.warm()
    print(workers.submit(eval, "'services.runtime' in __import__('sys').modules").result())
"""


def test_a_render_worker_of_the_linjerum_script_does_not_import_the_service(
    tmp_path: Path,
) -> None:
    """A worker runs its program's main module again before its first task: the console
    script's, services/__main__.py, must not import the whole service (a second of CPU per
    worker, in the sale that asked for the first PDF)."""
    program = tmp_path / "linjerum"
    program.write_text(PROGRAM)
    root = Path(__file__).resolve().parents[2]
    ran = subprocess.run(
        [sys.executable, str(program)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONPATH": str(root)},
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "False"


def test_ctrl_c_on_the_service_prints_no_worker_tracebacks() -> None:
    """A terminal's Ctrl-C reaches the service's whole process group, its workers too: the
    service answers it, and the workers end with it, quietly."""
    root = Path(__file__).resolve().parents[2]
    answers = "import signal\nsignal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
    quiet = "import sys\n" + answers + SERVICE
    service = subprocess.Popen(
        [sys.executable, "-c", quiet],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert service.stdout is not None
        workers = [int(pid) for pid in service.stdout.readline().split()]
        os.killpg(service.pid, signal.SIGINT)
        _, errors = service.communicate(timeout=60)
    finally:
        service.kill()
        service.wait()
    assert workers and _all_end(workers)
    assert "Traceback" not in errors, errors
