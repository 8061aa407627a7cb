"""The packages ship py.typed, so they must type-check: mypy as pyproject.toml's [tool.mypy]
configures it (erl_interop strict, pynode mypy's defaults), and erl_interop under --strict
itself, which also covers the one strict flag the configuration can only set globally."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_mypy_is_clean(tmp_path):
    # No paths: the configuration names them (files = erl_interop, pynode).
    r = _mypy("--cache-dir", str(tmp_path / "mypy"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_erl_interop_is_strict(tmp_path):
    r = _mypy("--strict", "--cache-dir", str(tmp_path / "mypy"), "-p", "erl_interop")
    assert r.returncode == 0, r.stdout + r.stderr
