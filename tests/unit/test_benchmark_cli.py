"""The benchmark script stays runnable: its --help answers (no timed assertions anywhere)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_help() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--no-postgres" in done.stdout


def test_instruction_count_help() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "instructions.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--case" in done.stdout and "--postgres-url" in done.stdout
