"""Loaders of the published benchmark formats (CodeContests, LiveCodeBench, APPS, HumanEval+,
MBPP+) on small fixture files written here, judged by the real sandbox."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest

from mucode.execution import Executor, Limits
from mucode.problems import ProblemDataError, ProblemSourceUnavailable, load_problems
from mucode.problems.prelude import program_to_run
from mucode.types import AssertTest, IOTest, Problem, Status


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=Limits(timeout_s=3.0)) as ex:
        yield ex


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def run_private(executor, problem: Problem, program: str):
    return executor.run(program_to_run(program, problem), list(problem.private_tests), problem.setup_code)


# -- CodeContests -----------------------------------------------------------------------------------

ADD_PY = "a, b = map(int, input().split())\nprint(a + b)\n"
WRONG_ADD_PY = "a, b = map(int, input().split())\nprint(a - b)\n"


def codecontests_row(name: str = "1A. Sum", **changes) -> dict:
    row = {
        "name": name, "description": "Print a + b.",
        "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
        "private_tests": {"input": ["5 7\n"], "output": ["12\n"]},
        "generated_tests": {"input": ["-1 1\n", "10 5\n"], "output": ["0\n", "15\n"]},
        "source": 2, "difficulty": 7, "solutions": {"language": [2, 3], "solution": ["int main(){}", ADD_PY]},
        "time_limit": {"seconds": 2, "nanos": 500000000}, "memory_limit_bytes": 256000000,
        "input_file": "", "output_file": "", "cf_rating": 800, "cf_tags": ["math"],
    }  # fmt: skip
    row.update(changes)
    return row


def test_codecontests_jsonl_and_parquet_give_the_same_problems_and_the_alphacode_split(tmp_path, executor):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "cc"
    (folder / "data").mkdir(parents=True)
    rows = [codecontests_row(), codecontests_row("2B. Files", input_file="in.txt")]
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "test-00000-of-00001.parquet")
    write_jsonl(tmp_path / "valid.jsonl", rows[:1])
    from_parquet = load_problems("codecontests:test", path=folder)
    assert [p.id for p in from_parquet] == ["codecontests/1A. Sum"]
    assert [s.reason for s in from_parquet.skipped] == ["reads or writes named files, not stdin/stdout"]
    problem = from_parquet.problems[0]
    assert problem.public_tests == (IOTest("1 2\n", "3\n", compare="codecontests", timeout_s=2.5),)
    assert [t.stdin for t in problem.private_tests] == ["5 7\n", "-1 1\n", "10 5\n"]  # private + generated
    assert problem.reference_solution == ADD_PY
    from_jsonl = load_problems("codecontests:valid", path=tmp_path / "valid.jsonl")
    assert from_jsonl.problems[0].private_tests == problem.private_tests
    assert run_private(executor, problem, ADD_PY).passed
    wrong = run_private(executor, problem, WRONG_ADD_PY)
    assert [v.status for v in wrong.verdicts] == [Status.FAILED, Status.FAILED, Status.FAILED]
    assert (wrong.verdicts[0].expected, wrong.verdicts[0].actual) == ("12", "-2")


def test_codecontests_compares_tokens_case_insensitively_with_float_tolerance(tmp_path, executor):
    row = codecontests_row(
        public_tests={"input": [""], "output": ["YES\n0.3333333\n"]},
        private_tests={"input": [""], "output": ["yes 0.33333"]},
        generated_tests={"input": [], "output": []},
    )
    problem = load_problems("codecontests", path=write_jsonl(tmp_path / "test.jsonl", [row])).problems[0]
    close = "print('Yes')\nprint(1/3)\n"
    assert executor.run(close, list(problem.public_tests + problem.private_tests)).passed
    far = executor.run("print('Yes')\nprint(0.334)\n", list(problem.public_tests))
    assert far.verdicts[0].status is Status.FAILED


def test_codecontests_time_limit_is_each_tests_limit(tmp_path, executor):
    row = codecontests_row(time_limit={"seconds": 1, "nanos": 0})
    problem = load_problems("codecontests", path=write_jsonl(tmp_path / "test.jsonl", [row])).problems[0]
    slow = "import time\ntime.sleep(2)\n" + ADD_PY
    verdict = executor.run(slow, list(problem.public_tests)).verdicts[0]
    assert verdict.status is Status.TIMEOUT and "longer than 1 s" in verdict.message


# -- LiveCodeBench ----------------------------------------------------------------------------------


def compressed(cases: list) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def lcb_row(question_id: str, date: str, **changes) -> dict:
    row = {
        "question_title": "Sum", "question_content": "Read a and b, print a + b.", "platform": "atcoder",
        "question_id": question_id, "contest_id": "abc1", "contest_date": date, "starter_code": "",
        "difficulty": "easy", "metadata": "{}",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": compressed([{"input": "2 2\n", "output": "4\n", "testtype": "stdin"}]),
    }  # fmt: skip
    row.update(changes)
    return row


def lcb_functional_row() -> dict:
    cases = [{"input": "[1, 2]\n3", "output": "[0, 1]", "testtype": "functional"}]
    return lcb_row(
        "2001",
        "2024-09-01T00:00:00",
        platform="leetcode",
        starter_code="class Solution:\n    def twoSum(self, nums, target):\n        ",
        metadata=json.dumps({"func_name": "twoSum"}),
        public_test_cases=json.dumps(cases),
        private_test_cases=compressed([{"input": "[3, 3]\n6", "output": "[0, 1]", "testtype": "functional"}]),
    )


TWO_SUM = """class Solution:
    def twoSum(self, nums, target):
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return (seen[target - x], i)
            seen[x] = i
"""


def test_livecodebench_versions_date_window_and_compressed_private_tests(tmp_path, executor):
    folder = tmp_path / "lcb"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", [lcb_row("abc1_a", "2023-06-01T12:00:00")])
    write_jsonl(folder / "test2.jsonl", [lcb_row("abc2_a", "2024-03-01T12:00:00"), lcb_functional_row()])
    assert [p.id for p in load_problems("livecodebench:release_v1", path=folder)] == ["livecodebench/abc1_a"]
    assert len(load_problems("livecodebench:v2", path=folder)) == 2
    everything = load_problems("livecodebench", path=folder)
    assert len(everything) == 3
    window = load_problems("livecodebench:release_v2@2024-01-01..2024-06-30", path=folder)
    assert [p.id for p in window] == ["livecodebench/abc2_a"]
    stdin_problem = everything.get("livecodebench/abc1_a")
    assert [t.stdin for t in stdin_problem.private_tests] == ["1 2\n", "2 2\n"]  # LCB grades public + private
    assert run_private(executor, stdin_problem, ADD_PY).passed
    assert not run_private(executor, stdin_problem, WRONG_ADD_PY).passed
    functional = everything.get("livecodebench/2001")
    assert functional.entry_point == "twoSum" and "```python\nclass Solution:" in functional.prompt
    assert run_private(executor, functional, TWO_SUM).passed  # a tuple result counts as the list
    wrong = run_private(executor, functional, TWO_SUM.replace("(seen[target - x], i)", "(i, seen[target - x])"))
    assert [v.status for v in wrong.verdicts] == [Status.FAILED, Status.FAILED]
    with pytest.raises(ValueError, match="unknown LiveCodeBench version"):
        load_problems("livecodebench:latest", path=folder)
    with pytest.raises(FileNotFoundError, match="lacks the files of release_v3"):
        load_problems("livecodebench:release_v3", path=folder)


def test_livecodebench_compares_lines_and_decimals(tmp_path, executor):
    row = lcb_row(
        "x",
        "2024-01-01",
        public_test_cases=json.dumps([{"input": "", "output": "1.50 2\n", "testtype": "stdin"}]),
        private_test_cases=json.dumps([]),
    )
    problem = load_problems("livecodebench", path=write_jsonl(tmp_path / "test.jsonl", [row])).problems[0]
    assert executor.run("print('  1.5 2.0  ')", list(problem.public_tests)).passed
    assert not executor.run("print(1.5000001, 2)", list(problem.public_tests)).passed
    assert not executor.run("print(1.5)\nprint(2)", list(problem.public_tests)).passed


def test_livecodebench_refuses_a_pickle_that_would_run_code(tmp_path):
    evil = base64.b64encode(zlib.compress(pickle.dumps(Path("x")))).decode()
    file = write_jsonl(tmp_path / "test.jsonl", [lcb_row("x", "2024-01-01", private_test_cases=evil)])
    with pytest.raises(ProblemDataError, match=r"line 1, field 'private_test_cases': is neither JSON"):
        load_problems("livecodebench", path=file)


# -- APPS -------------------------------------------------------------------------------------------


def apps_rows() -> list[dict]:
    stdin_io = {"inputs": ["1 2\n", ["3 4", ""]], "outputs": ["3\n", ["7"]]}
    call_io = {"fn_name": "double", "inputs": [[2], [5]], "outputs": [[4], 10]}
    return [
        {"problem_id": 0, "question": "Print a + b.", "solutions": json.dumps([ADD_PY]),
         "input_output": json.dumps(stdin_io), "difficulty": "interview", "url": "u", "starter_code": ""},
        {"problem_id": 1, "question": "Write double(x).", "solutions": "", "input_output": json.dumps(call_io),
         "difficulty": "introductory", "url": "u", "starter_code": "def double(x):\n    "},
        {"problem_id": 2, "question": "No tests.", "solutions": "", "input_output": "",
         "difficulty": "competition", "url": "u", "starter_code": ""},
    ]  # fmt: skip


def test_apps_stdin_and_call_based_problems_and_the_difficulty_filter(tmp_path, executor):
    folder = tmp_path / "apps"
    folder.mkdir()
    write_jsonl(folder / "test.jsonl", apps_rows())
    problems = load_problems("apps:test", path=folder)
    assert [p.id for p in problems] == ["apps/test/0", "apps/test/1"]
    assert [s.id for s in problems.skipped] == ["2"]
    assert [p.id for p in load_problems("apps:test@introductory", path=folder)] == ["apps/test/1"]
    stdin_problem, call_problem = problems.problems
    assert stdin_problem.private_tests[1] == IOTest("3 4\n", "7", compare="apps")
    assert stdin_problem.public_tests == stdin_problem.private_tests[:1]
    assert run_private(executor, stdin_problem, ADD_PY).passed
    assert not run_private(executor, stdin_problem, WRONG_ADD_PY).passed
    assert call_problem.entry_point == "double"
    assert run_private(executor, call_problem, "def double(x):\n    return 2 * x\n").passed  # [4] read as 4
    wrong = run_private(executor, call_problem, "def double(x):\n    return x + 2\n")
    assert [v.status for v in wrong.verdicts] == [Status.PASSED, Status.FAILED]  # 2 + 2 == 4 by luck
    with pytest.raises(ValueError, match="unknown APPS difficulty"):
        load_problems("apps:test@easy", path=folder)


def test_apps_compares_tokens_and_close_floats(tmp_path, executor):
    row = dict(apps_rows()[0], input_output=json.dumps({"inputs": [""], "outputs": ["0.333333 x\n\n"]}))
    problem = load_problems("apps", path=write_jsonl(tmp_path / "test.jsonl", [row])).problems[0]
    assert not executor.run("print(1/3, 'x')", list(problem.public_tests)).passed  # 'x' is no number
    row = dict(row, input_output=json.dumps({"inputs": [""], "outputs": ["0.333333 1\n"]}))
    problem = load_problems("apps", path=write_jsonl(tmp_path / "test.jsonl", [row])).problems[0]
    assert executor.run("print(' ', 1/3, '1.0000000001')", list(problem.public_tests)).passed
    assert not executor.run("print(0.3334, 1)", list(problem.public_tests)).passed


# -- HumanEval+ and MBPP+ ---------------------------------------------------------------------------

HE_PROMPT = 'def halve(x: float) -> float:\n    """Half of x.\n    >>> halve(4.0)\n    2.0\n    """\n'
HE_HARNESS = """
import numpy as np

def check(candidate):
    inputs = [[4.0], [1.0], [0.3]]
    results = [2.0, 0.5, 0.15]
    for i, (inp, exp) in enumerate(zip(inputs, results)):
        assertion(candidate(*inp), exp, 0)
"""


def he_plus_row(**changes) -> dict:
    row = {"task_id": "HumanEval/900", "prompt": HE_PROMPT, "entry_point": "halve",
           "canonical_solution": "    return x / 2\n", "test": HE_HARNESS}  # fmt: skip
    row.update(changes)
    return row


def test_humaneval_plus_hub_and_release_forms_judge_with_evalplus_tolerance(tmp_path, executor):
    hub = load_problems("humaneval+", path=write_jsonl(tmp_path / "hub.jsonl", [he_plus_row()])).problems[0]
    release_row = he_plus_row(test=None, base_input=[[4.0]], plus_input=[[1.0], [0.3]], atol=0)
    release = load_problems("humaneval+", path=write_jsonl(tmp_path / "rel.jsonl", [release_row])).problems[0]
    for problem in (hub, release):
        assert len(problem.private_tests) == 3
        assert problem.public_tests == (AssertTest("assert halve(4.0) == 2.0"),)
        assert run_private(executor, problem, "def halve(x):\n    return x / 2\n").passed
        # 0.3 * 0.5 is 0.15 within EvalPlus's default float atol (1e-6), not exactly
        assert run_private(executor, problem, "def halve(x):\n    return x * 0.5 + 1e-9\n").passed
        wrong = run_private(executor, problem, "def halve(x):\n    return x // 2\n")
        assert [v.status for v in wrong.verdicts] == [Status.PASSED, Status.FAILED, Status.FAILED]


def test_humaneval_plus_special_oracle_harness_is_kept_whole(tmp_path, executor):
    harness = "def check(candidate):\n    for x in [1.0, 2.0]:\n        assert abs(candidate(x) * 2 - x) < 1e-9\n"
    problem = load_problems(
        "humaneval+", path=write_jsonl(tmp_path / "t.jsonl", [he_plus_row(test=harness)])
    ).problems[0]
    assert problem.private_tests == (AssertTest(harness + "\n\ncheck(halve)\n"),)
    assert run_private(executor, problem, "def halve(x):\n    return x / 2\n").passed
    assert not run_private(executor, problem, "def halve(x):\n    return x\n").passed


def test_mbpp_plus_hub_form_and_calibrated_time_limits(tmp_path, executor):
    from mucode.problems.evalplus import calibrate_time_limits

    harness = (
        "inputs = [[[1, 2], [2, 3]], [[5], [6]]]\nresults = [(2,), ()]\n"
        "for i, (inp, exp) in enumerate(zip(inputs, results)):\n    assertion(shared(*inp), exp, 0)\n"
    )
    row = {"task_id": "Mbpp/2", "prompt": "Shared elements of two lists, as a tuple.",
           "code": "def shared(a, b):\n    return tuple(sorted(set(a) & set(b)))\n",
           "test_list": ["assert shared([1, 2], [2, 3]) == (2,)"], "test_imports": [], "test": harness,
           "source_file": "x", "entry_point": "shared", "canonical_solution": "unused"}  # fmt: skip
    problems = load_problems("mbpp+:test", path=write_jsonl(tmp_path / "test.jsonl", [row]))
    problem = problems.problems[0]
    assert problem.public_tests == (AssertTest("assert shared([1, 2], [2, 3]) == (2,)"),)
    assert run_private(executor, problem, row["code"]).passed
    assert not run_private(executor, problem, "def shared(a, b):\n    return list(set(a) & set(b))\n").passed
    (calibrated,) = calibrate_time_limits(problems, executor)
    assert calibrated.metadata["time_limits"] == "evalplus"
    assert all(t.timeout_s == 1.0 for t in calibrated.private_tests)  # max(1 s, 4 x a few ms)
    assert run_private(executor, calibrated, row["code"]).passed


# -- malformed records and the hub ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "rows", "field"),
    [
        (
            "codecontests",
            [codecontests_row(), codecontests_row("x", private_tests={"input": ["1"], "output": []})],
            "private_tests",
        ),
        (
            "livecodebench",
            [lcb_row("a", "2024-01-01"), lcb_row("b", "2024-01-01", public_test_cases="[{]")],
            "public_test_cases",
        ),
        ("apps", [apps_rows()[0], dict(apps_rows()[1], input_output='{"inputs": [1]}')], "input_output"),
        ("humaneval+", [he_plus_row(), {k: v for k, v in he_plus_row().items() if k != "entry_point"}], "entry_point"),
        ("mbpp+", [{"task_id": "Mbpp/3", "prompt": 7}], "prompt"),
    ],
)
def test_a_malformed_record_is_one_line_naming_file_line_and_field(tmp_path, source, rows, field):
    file = write_jsonl(tmp_path / "test.jsonl", rows)
    with pytest.raises(ProblemDataError) as caught:
        load_problems(source, path=file)
    message = str(caught.value)
    assert "\n" not in message
    line = len(rows)
    assert message.startswith(f"{file}, line {line}, field {field!r}: ")
    assert (caught.value.where, caught.value.line, caught.value.field) == (str(file), line, field)


def test_bad_json_in_a_published_file_names_the_line(tmp_path):
    file = write_jsonl(tmp_path / "test.jsonl", [he_plus_row(), "{not json"])
    with pytest.raises(ProblemDataError, match=r"test.jsonl, line 2: not valid JSON"):
        load_problems("humaneval+", path=file)


def test_without_a_path_offline_the_hub_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MUCODE_APPS_PATH", raising=False)
    with pytest.raises(ProblemSourceUnavailable, match=r"codeparrot/apps.*--problems-path.*MUCODE_APPS_PATH"):
        load_problems("apps:test")
