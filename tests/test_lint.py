"""The tree is formatted and lint-clean by `ruff` (rules in pyproject.toml's [tool.ruff]); CI runs
the suite, so CI lints. Fix with `ruff format . && ruff check --fix .`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
TREES = ["src", "tests", "benchmarks", "examples", ".ci"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_finds_nothing(command):
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -e '.[test]'"
    done = subprocess.run([ruff, *command, *TREES], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
