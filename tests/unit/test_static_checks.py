"""The code stays as its readers and tools need it: ruff clean, and `mypy --strict` clean on what ships (src/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "src", "tests", "bench", "scripts", "setup.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean_on_the_code_that_ships() -> None:
    result = _run("mypy", "--strict", "src/avadios")
    assert result.returncode == 0, result.stdout + result.stderr
