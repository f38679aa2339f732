"""Latencies, CPU and verdicts, printed the same way by every benchmark."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil


def percentile_ms(latencies: Sequence[float], q: float) -> float:
    """The `q` quantile of latencies in seconds, in milliseconds (nearest rank, no interpolation:
    the p99 is a request that was actually that slow)."""
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


@dataclass
class Step:
    """The latencies of one kind of request, and what went wrong with it."""

    name: str
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def percentile_ms(self, q: float) -> float:
        return percentile_ms(self.latencies, q)

    def row(self, seconds: float | None = None) -> str:
        rate = f"{len(self.latencies) / seconds:8.0f}" if seconds else f"{'':8}"
        worst = max(self.latencies, default=float("nan")) * 1000
        errors = ", ".join(f"{k} {v}" for k, v in self.errors.most_common()) or "-"
        return (
            f"{self.name:46} {len(self.latencies):7d} {rate} {self.percentile_ms(0.5):8.1f}"
            f" {self.percentile_ms(0.99):8.1f} {worst:8.1f}  {errors}"
        )


STEP_HEADER = (
    f"{'step':46} {'count':>7} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  errors"
)


def print_steps(steps: Sequence[tuple[Step, float | None]]) -> None:
    """The table of steps, each with the seconds its rate is over."""
    print(STEP_HEADER)
    print("-" * len(STEP_HEADER))
    for step, seconds in steps:
        print(step.row(seconds))


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User and system CPU seconds of `processes` so far (those that ended count nothing)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += sum(process.cpu_times()[:2])
    return total


class Cpu:
    """CPU of each server process, the scratch database's backends, this process (the load
    generator) and the whole machine between `start()` and `stop()`, in cores (1.0 = one core
    busy all the time)."""

    def __init__(self, servers: dict[str, int], database: str) -> None:
        self._servers = {name: psutil.Process(pid) for name, pid in servers.items()}
        self._database = database
        self.used: dict[str, float] = {}
        self._before: dict[str, float] = {}
        self._started = 0.0
        self.wall = 1.0

    def _backends(self) -> list[psutil.Process]:
        """The PostgreSQL backends serving the scratch database (found by their process title)."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            title = " ".join(process.info["cmdline"] or ())
            if title.startswith("postgres:") and f" {self._database} " in title:
                found.append(process)
        return found

    def _sample(self) -> dict[str, float]:
        machine = psutil.cpu_times()
        sample = {name: cpu_seconds(self._with_helpers(p)) for name, p in self._servers.items()}
        sample["database"] = cpu_seconds(self._backends())
        sample["nats-server"] = cpu_seconds(
            [p for p in psutil.process_iter(["name"]) if p.info["name"] == "nats-server"]
        )
        sample["load generator"] = time.process_time()
        sample["machine"] = (
            machine.user
            + machine.system
            + sum(getattr(machine, extra, 0.0) for extra in ("nice", "irq", "softirq"))
        )
        return sample

    def _with_helpers(self, server: psutil.Process) -> list[psutil.Process]:
        """A server and the processes it started that are not servers named on their own (a
        group's PDF workers count as the group's), by their pids at this moment."""
        named = {p.pid for p in self._servers.values()}
        found, todo = [server], [server]
        while todo:
            with contextlib.suppress(psutil.Error):
                for child in todo.pop().children():
                    if child.pid not in named:
                        found.append(child)
                        todo.append(child)
        return found

    def start(self) -> None:
        self._started = time.perf_counter()
        self._before = self._sample()

    def stop(self) -> None:
        after = self._sample()
        self.wall = max(time.perf_counter() - self._started, 1e-9)
        self.used = {name: (after[name] - self._before[name]) / self.wall for name in after}

    def add(self, name: str, seconds: float) -> None:
        """CPU seconds spent elsewhere in the measured time (the load processes')."""
        self.used[name] = self.used.get(name, 0.0) + seconds / self.wall

    def of(self, name: str) -> float:
        return self.used.get(name, 0.0)

    @property
    def rest(self) -> float:
        """The rest of the machine is other people's work: it skews the figures."""
        return max(0.0, self.of("machine") - sum(u for n, u in self.used.items() if n != "machine"))

    def line(self) -> str:
        parts = {name: used for name, used in self.used.items() if name != "machine"}
        parts["rest of the machine"] = self.rest
        shown = ", ".join(f"{name} {used:.2f}" for name, used in parts.items())
        return f"CPU in cores (1.0 = one of {psutil.cpu_count()} cores): {shown}"


def mean_cpu(cpus: Sequence[Cpu], name: str) -> float:
    """`name`'s cores over several measurements, each weighted by how long it ran."""
    wall = sum(cpu.wall for cpu in cpus)
    return sum(cpu.of(name) * cpu.wall for cpu in cpus) / wall if wall else 0.0
