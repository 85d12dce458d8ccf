"""The README's two commands are what CI runs, and they work as written on a fresh clone.

The default suite checks the wiring (both commands are marked in README.md and `.ci/run` runs the
extracted text); the slow test does what a newcomer does: a clean clone with ../shared beside it,
the first command (fresh venv, plain install, the demo pipeline, an empty model cache), then the
test command. It takes the whole demo plus the whole suite (~15 min on 2 cores):

    pytest -m slow tests/test_readme_commands.py
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / ".ci" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.readme_commands()


def test_the_readme_marks_an_install_and_run_command_and_a_test_command():
    commands = readme_commands()
    assert set(commands) == {"main", "test", "engines"}
    assert "openvino" in commands["engines"] and "pytest tests/test_generation_openvino.py" in commands["engines"]
    assert commands["main"].startswith(
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && mucode run --preset demo"
    )
    assert "pytest" in commands["test"] and ". .venv/bin/activate" in commands["test"]


def test_ci_runs_the_extracted_readme_commands_and_installs_nothing_else():
    ci = (ROOT / ".ci" / "run").read_text()
    assert all(f"readme_commands.py {name}" in ci for name in ("main", "test", "engines"))
    assert "pip install" not in ci  # every install is in the README's own commands


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_fresh_clone_runs_both_readme_commands(tmp_path):
    shared = ROOT.parent / "shared"
    if not (shared / "data" / "mbpp" / "mbpp.jsonl").is_file():
        pytest.skip(f"MBPP data not found under {shared}")
    (tmp_path / "shared").symlink_to(shared)
    clone = tmp_path / "mucode"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    env["MUCODE_CACHE"] = str(tmp_path / "cache")  # a fresh machine has no cached model
    commands = readme_commands()
    main = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands["main"]], cwd=clone, env=env, capture_output=True, text=True
    )
    assert main.returncode == 0, main.stderr[-3000:]
    assert "report: " in main.stdout and (clone / "runs" / "demo" / "report" / "report.md").is_file()
    tests = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", commands["test"]], cwd=clone, env=env, capture_output=True, text=True
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
