"""`mucode exec`: verdicts on the terminal or as JSON, exit code 0 iff every test passed."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from mucode.cli import app
from mucode.cli.exec import split_assert_file


def write(tmp_path, program: str, tests: str):
    (tmp_path / "solution.py").write_text(program)
    (tmp_path / "tests.py").write_text(tests)
    return str(tmp_path / "solution.py"), str(tmp_path / "tests.py")


def test_split_assert_file_keeps_imports_with_every_test():
    tests = split_assert_file("import math\nassert f(1) == 1\nassert math.isclose(f(2), 2)\n")
    assert tests == ["import math\nassert f(1) == 1\n", "import math\nassert math.isclose(f(2), 2)\n"]


def test_exec_reports_each_test_and_exits_1_on_failure(tmp_path):
    program, tests = write(tmp_path, "def f(x):\n    return 2 * x\n", "assert f(2) == 4\nassert f(3) == 7\n")
    result = CliRunner().invoke(app, ["exec", program, "--tests", tests, "--timeout", "2"], standalone_mode=False)
    assert result.return_value == 1
    assert "test 1: PASSED" in result.output and "test 2: FAILED" in result.output
    assert "expected: 7" in result.output and "actual:   6" in result.output


def test_exec_json_and_exit_code_0_through_the_console_script(tmp_path):
    program, tests = write(tmp_path, "def f(x):\n    return 2 * x\n", "assert f(2) == 4\n")
    run = subprocess.run(
        [sys.executable, "-m", "mucode", "exec", program, "--tests", tests, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["passed"] is True and data["verdicts"][0]["status"] == "passed"


def test_exec_exit_code_1_for_a_hostile_program(tmp_path):
    program, tests = write(tmp_path, "import os\nos._exit(0)\n", "assert f(2) == 4\n")
    run = subprocess.run(
        [sys.executable, "-m", "mucode", "exec", program, "--tests", tests], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert "ERROR" in run.stdout


def test_exec_rejects_a_tests_file_without_tests(tmp_path):
    program, tests = write(tmp_path, "x = 1\n", "")
    run = subprocess.run(
        [sys.executable, "-m", "mucode", "exec", program, "--tests", tests], capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "contains no tests" in run.stderr


def test_problems_verify_passes_on_humaneval():
    result = CliRunner().invoke(app, ["problems", "verify", "humaneval", "--json"], standalone_mode=False)
    assert result.exception is None, result.output
    summary = json.loads(result.output)
    assert result.return_value == 0
    assert summary["passed"] == summary["with_reference"] == 164 and summary["failures"] == {}


def test_problems_verify_reports_a_wrong_reference(tmp_path):
    rows = [
        {
            "id": "good",
            "prompt": "double",
            "public_tests": ["assert f(1) == 2"],
            "private_tests": ["assert f(2) == 4"],
            "reference_solution": "def f(x):\n    return 2 * x\n",
        },
        {
            "id": "bad",
            "prompt": "triple",
            "public_tests": ["assert g(1) == 3"],
            "private_tests": ["assert g(2) == 6"],
            "reference_solution": "def g(x):\n    return 2 * x\n",
        },
    ]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["problems", "verify", str(data), "--timeout", "2"], standalone_mode=False)
    assert result.return_value == 1
    assert "1/2 reference solutions pass" in result.output and "bad: failed: assert g(1) == 3" in result.output
