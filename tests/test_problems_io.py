"""The stdin/stdout path end to end: the prompt of an I/O problem, the real sandbox's verdict on a
correct and a wrong program, the feedback the model would read, and the JSONL form of the new
test fields (per-test time limit, output comparison)."""

from __future__ import annotations

import json

import pytest

from mucode import types
from mucode.execution import Executor, Limits
from mucode.execution.outputs import COMPARE_MODES, outputs_match
from mucode.problems import ProblemDataError, load_jsonl, write_jsonl
from mucode.prompts import initial_messages, render_feedback
from mucode.types import IOTest, Problem, Status


ADD = "a, b = map(int, input().split())\nprint(a + b)\n"


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=Limits(timeout_s=3.0)) as ex:
        yield ex


def io_problem(public: tuple[IOTest, ...], private: tuple[IOTest, ...] = ()) -> Problem:
    return Problem("sum", "test", "Print a + b.", public, private or public)


def test_the_prompt_of_an_io_problem_asks_for_a_stdin_stdout_program_and_shows_the_examples():
    problem = io_problem((IOTest("1 2\n", "3\n", compare="codecontests"),))
    text = initial_messages(problem)[0]["content"]
    assert text.startswith("Write a Python program for the following prompt. It reads from standard input")
    assert "Input:\n```\n1 2\n```\nExpected output:\n```\n3\n```" in text


def test_a_problem_without_public_tests_but_io_private_tests_is_still_a_program_problem():
    problem = io_problem((), (IOTest("1 2\n", "3\n"),))
    assert "It reads from standard input" in initial_messages(problem)[0]["content"]


def test_feedback_on_wrong_output_shows_input_expected_and_actual(executor):
    problem = io_problem((IOTest("1 2\n", "3\n"),))
    assert executor.run(ADD, list(problem.public_tests)).passed
    wrong = executor.run(ADD.replace("+", "-"), list(problem.public_tests))
    assert wrong.verdicts[0].status is Status.FAILED
    feedback = render_feedback(wrong, problem.public_tests)
    assert "Failed test:\nInput:\n```\n1 2\n```\nExpected: 3\nActual: -1" in feedback


def test_long_inputs_and_outputs_are_cut_with_a_count_in_the_feedback(executor):
    big_input = "7\n" * 2000
    problem = io_problem((IOTest(big_input, "ok\n"),))
    result = executor.run("import sys\nsys.stdin.read()\nprint('x' * 5000)", list(problem.public_tests))
    verdict = result.verdicts[0]
    assert verdict.actual.endswith("[... 4000 more characters]")
    feedback = render_feedback(result, problem.public_tests)
    assert "[... 3400 more characters of input]" in feedback
    assert "Expected: ok" in feedback
    assert len(feedback) <= len("Feedback:\n") + 2000


def test_each_compare_mode_accepts_its_benchmarks_equivalent_output_and_lines_does_not():
    cases = {  # expected, an output the benchmark accepts that differs from it as text
        "codecontests": ("YES\n0.5\n", "yes 0.500001"),
        "livecodebench": ("1.50 2\n", "  1.5 2.00\n"),
        "apps": ("0.333333 1\n", "\n0.3333331 1.0\n\n"),
    }
    assert set(cases) == set(COMPARE_MODES) - {"lines"}
    for mode, (expected, accepted) in cases.items():
        assert outputs_match(expected, accepted, mode), mode
        assert not outputs_match(expected, accepted, "lines"), mode
        assert not outputs_match(expected, "something else", mode), mode
    assert outputs_match("3\n", "3   \n\n\n", "lines")
    with pytest.raises(ValueError, match="unknown output comparison 'fuzzy'"):
        outputs_match("1", "1", "fuzzy")


def test_an_io_test_with_an_unknown_comparison_is_a_harness_error_not_a_crash(executor):
    result = executor.run("print(1)", [IOTest("", "1\n", compare="fuzzy")])
    assert result.verdicts[0].status is Status.INFRA_ERROR
    assert executor.run("print(1)", [IOTest("", "1\n")]).passed  # the worker is still there


def test_old_records_keep_their_form_and_new_fields_round_trip_through_jsonl(tmp_path):
    assert types.test_to_dict(IOTest("1", "2")) == {"stdin": "1", "expected_stdout": "2", "kind": "io"}
    timed = IOTest("1", "2", compare="apps", timeout_s=1.5)
    assert types.test_from_dict(types.test_to_dict(timed)) == timed
    problem = io_problem((timed,))
    loaded = load_jsonl(write_jsonl(tmp_path / "test.jsonl", [problem])).problems[0]
    assert loaded.public_tests == (timed,)


def test_a_bad_compare_or_timeout_in_jsonl_names_the_field(tmp_path):
    row = {
        "id": 1,
        "prompt": "p",
        "public_tests": [],
        "private_tests": [{"stdin": "", "expected_stdout": "", "compare": "x"}],
    }
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ProblemDataError, match=r"a.jsonl, line 1, field 'private_tests\[0\].compare': unknown output"):
        load_jsonl(tmp_path / "a.jsonl")
    row["private_tests"] = [{"code": "assert True", "timeout_s": -1}]
    (tmp_path / "b.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ProblemDataError, match=r"field 'private_tests\[0\].timeout_s': must be a number of seconds"):
        load_jsonl(tmp_path / "b.jsonl")


def test_a_tests_own_time_limit_applies_below_the_runs_and_the_run_limit_caps_it(executor):
    slow = "import time\ntime.sleep(1.5)\nprint(1)"
    assert executor.run(slow, [IOTest("", "1\n")]).passed
    assert executor.run(slow, [IOTest("", "1\n", timeout_s=0.5)]).verdicts[0].status is Status.TIMEOUT
    capped = executor.run(slow, [IOTest("", "1\n", timeout_s=60)], limits=Limits(timeout_s=1.0))
    assert capped.verdicts[0].status is Status.TIMEOUT and "longer than 1 s" in capped.verdicts[0].message
