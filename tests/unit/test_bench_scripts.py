"""Every benchmark script starts as the README runs it (`.venv/bin/python bench/NAME.py`):
each imports its helpers as `harness.*` from its own folder, which is on the path only that
way; one that imported `bench.harness.*` failed on a fresh clone before measuring anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if "__main__" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_script_starts(script: str) -> None:
    assert len(SCRIPTS) >= 8
    started = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    assert "usage:" in started.stdout
