"""Rounds of a benchmark. A shared 2-core machine drifts by 15-30 % within minutes, so one run
proves little: `--rounds N` runs the benchmark N times, each round a fresh process with its own
scratch database and its own INSERT ceiling, and prints the median and range of each figure
with every round's figures beside that round's ceiling. `--against REV` alternates the rounds
with the same benchmark run from a git worktree of another revision (ABBA order, so a drift
during the series falls on both alike): the before/after of a change, measured the same hour.
`--versus "OPTIONS"` alternates them with this tree's benchmark run with OPTIONS added (two
gateways against one, say), and with `--against` gives the other revision those OPTIONS."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.processes import REPO

ROUND_TIMEOUT_SECONDS = 900.0  # a round that takes longer is stuck, not slow
OWN = "this tree"


@dataclass(frozen=True)
class Figure:
    """A figure a round reports: its key in the round's JSON, how it is shown, and its target
    (`at_least`: the target is a floor, otherwise a ceiling on the figure)."""

    key: str
    label: str
    unit: str = "ms"
    target: float | None = None
    at_least: bool = False

    def shown(self, value: float) -> str:
        if math.isnan(value):
            return "-"
        if self.unit in ("s", "cores"):
            return f"{value:.2f}"
        return f"{value:.1f}" if abs(value) < 10 and value != int(value) else f"{value:.0f}"

    def met(self, value: float) -> bool:
        assert self.target is not None
        return value >= self.target if self.at_least else value <= self.target


CEILING = Figure("ceiling", "INSERT ceiling, commits", "/s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the benchmark this many times (a process each) and print the medians",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="alternate the rounds with this git revision's benchmark (from a worktree)",
    )
    parser.add_argument(
        "--versus",
        metavar="OPTIONS",
        help="alternate the rounds with the benchmark run with these options added",
    )
    parser.add_argument("--figures-to", help=argparse.SUPPRESS)


def wanted(args: argparse.Namespace) -> bool:
    """Whether this invocation runs rounds rather than one benchmark in this process."""
    return args.figures_to is None and (
        args.rounds > 1 or args.against is not None or args.versus is not None
    )


def record(args: argparse.Namespace, figures: dict[str, float]) -> None:
    """A round's figures, for the process that runs the rounds (nothing when run alone)."""
    if args.figures_to:
        Path(args.figures_to).write_text(json.dumps(figures))


def run_rounds(args: argparse.Namespace, figures: Sequence[Figure]) -> None:
    """Runs the rounds, printing each round's own report as it goes, then the summary."""
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    versus = shlex.split(args.versus or "")
    other = _worktree(args.against) if args.against is not None else REPO
    script = Path(sys.argv[0]).resolve().relative_to(REPO)
    passed = _passed_on(sys.argv[1:])
    sides = {OWN: (REPO, passed)}
    if args.against is not None or versus:
        label = " ".join([args.against or "", *versus]).strip()
        sides[label] = (other, passed + versus)
    results: dict[str, list[dict[str, float]]] = {label: [] for label in sides}
    try:
        for n in range(args.rounds):
            order = list(sides.items())
            if n % 2:
                order.reverse()
            for label, (tree, argv) in order:
                print(f"\n=== round {n + 1} of {args.rounds}: {label} ===", flush=True)
                results[label].append(_round(tree, script, argv, args.data_dir))
    finally:
        if args.against is not None:
            _remove_worktree(other)
    print()
    _summary(figures, results, args.rounds)


def _passed_on(argv: Sequence[str]) -> list[str]:
    """The command line less the options that run rounds: what each round is run with."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--rounds", "--against", "--versus"):
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def _round(tree: Path, script: Path, passed: list[str], data_dir: str) -> dict[str, float]:
    """One round in a process of its own, run from `tree` (its code and its benchmark) on
    this tree's data folder, so both trees share the embedded servers."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "figures.json"
        argv = [sys.executable, str(tree / script), *passed]
        argv += ["--data-dir", str(Path(data_dir).resolve()), "--figures-to", str(out)]
        env = os.environ | {"PYTHONPATH": str(tree)}
        ended = subprocess.run(argv, cwd=tree, env=env, timeout=ROUND_TIMEOUT_SECONDS)
        if ended.returncode or not out.exists():
            raise SystemExit(
                f"{tree / script} failed (exit status {ended.returncode}) or wrote no figures"
                " (a revision before --rounds cannot be run against)"
            )
        return {k: float(v) for k, v in json.loads(out.read_text()).items()}


def _worktree(rev: str) -> Path:
    """A detached worktree of `rev` beside this one's data, removed after the rounds."""
    place = Path(tempfile.mkdtemp(prefix="linjerum-against-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--force", str(place), rev],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return place


def _remove_worktree(place: Path) -> None:
    subprocess.run(
        ["git", "worktree", "remove", "--force", str(place)], cwd=REPO, capture_output=True
    )


def _summary(
    figures: Sequence[Figure], results: dict[str, list[dict[str, float]]], rounds: int
) -> None:
    print(f"medians over {rounds} round(s) (range in brackets; each round beside its ceiling)")
    labels = list(results)
    header = f"{'figure':42}" + "".join(f" {label[:26]:>26}" for label in labels) + "  target"
    print(header)
    print("-" * len(header))
    for figure in (*figures, CEILING):
        cells = "".join(_cell(figure, _present(results[label], figure)) for label in labels)
        own = _present(results[OWN], figure)
        target = ""
        if figure.target is not None and own:
            sign = ">=" if figure.at_least else "<="
            met = sum(map(figure.met, own))
            target = f"  {sign} {figure.shown(figure.target)}: {met} of {len(results[OWN])}"
            target += " rounds" + (
                "" if figure.met(statistics.median(own)) else " (median NOT met)"
            )
        print(f"{figure.label + ' (' + figure.unit + ')':42}" + cells + target)
    for label in labels:
        print(f"\nrounds of {label}:")
        for n, result in enumerate(results[label], 1):
            shown = ", ".join(
                f"{f.key} {f.shown(result.get(f.key, math.nan))}" for f in (*figures, CEILING)
            )
            print(f"  {n}: {shown}")


def _present(rounds: list[dict[str, float]], figure: Figure) -> list[float]:
    """The figure's values in the rounds that have one."""
    return [r[figure.key] for r in rounds if not math.isnan(r.get(figure.key, math.nan))]


def _cell(figure: Figure, present: list[float]) -> str:
    if not present:
        return f" {'-':>26}"
    median = figure.shown(statistics.median(present))
    spread = f"({figure.shown(min(present))}-{figure.shown(max(present))})"
    return f" {median + ' ' + spread:>26}"
