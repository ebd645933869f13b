"""The benchmark scripts stay runnable: their --help answers (no timed assertions anywhere)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("script", "options"),
    [("run.py", ["--quick", "--no-postgres"]), ("instructions.py", ["--case", "--postgres-url", "bare"])],
)
def test_benchmark_help(script: str, options: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert all(option in done.stdout for option in options)
