"""APPS (Hendrycks et al. 2021, MIT): 10,000 problems, splits train / test (5000 each), in the
format of `codeparrot/apps` (JSONL `train.jsonl`, `test.jsonl` on the hub).

Spec: `apps[:SPLIT][@DIFFICULTY]`, DIFFICULTY one of introductory, interview, competition.

Each record: problem_id, question, solutions (JSON text: a list of programs; may be empty),
input_output (JSON text: {"inputs": [...], "outputs": [...], "fn_name"?: str}), difficulty, url,
starter_code. Without `fn_name` a test is stdin/stdout (an input or output given as a list of
lines is joined with newlines), compared with `compare="apps"`. With `fn_name` the problem is
call-based: each input is the argument list; the result (a tuple read as a list) passes when it
equals the output or, the output being a non-empty list, its first item (APPS's two tries).
`class Solution` in the starter code means the call is `Solution().<fn_name>(...)`.

Public/private: APPS publishes no public tests (its examples are in the question text); mucode
shows the first test and a program is correct when it passes every test (APPS's strict accuracy).
Ids are "apps/<split>/<problem_id>" (train and test both number from 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mucode.problems.base import ProblemSet, RowError
from mucode.problems.published import (
    SkipProblem,
    Source,
    json_field,
    load_published,
    python_literal,
    required,
)
from mucode.types import AssertTest, IOTest, Problem, Test


SOURCE = Source("apps", "codeparrot/apps", "all", "MUCODE_APPS_PATH")
DIFFICULTIES = ("introductory", "interview", "competition")
COMPARE = "apps"


def _text(value: Any, field_name: str) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if not isinstance(value, str):
        raise RowError(
            field_name, f"a stdin/stdout test needs a string or a list of strings, got {type(value).__name__}"
        )
    return value


def _call_test(fn_name: str, args: Any, expected: Any, on_solution: bool, field_name: str) -> AssertTest:
    if not isinstance(args, list):
        raise RowError(field_name, f"a call-based input must be the list of arguments, got {type(args).__name__}")
    target = f"Solution().{fn_name}" if on_solution else fn_name
    exp = python_literal(expected)
    first = " or (isinstance(_exp, list) and len(_exp) > 0 and _out == _exp[0])" if isinstance(expected, list) else ""
    code = (
        f"_out = {target}({', '.join(python_literal(a) for a in args)})\n"
        "_out = list(_out) if isinstance(_out, tuple) else _out\n"
        f"_exp = {exp}\n"
        f"assert _out == _exp{first}"
    )
    return AssertTest(code)


def _tests(row: Mapping[str, Any]) -> tuple[Test, ...]:
    if not str(row.get("input_output") or "").strip():
        raise SkipProblem("no tests (empty input_output)")
    spec = json_field(row, "input_output")
    if not isinstance(spec, Mapping):
        raise RowError("input_output", "must be a JSON object with 'inputs' and 'outputs'")
    inputs, outputs, fn_name = spec.get("inputs"), spec.get("outputs"), spec.get("fn_name")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise RowError("input_output", "needs 'inputs' and 'outputs' lists of the same length")
    if not inputs:
        raise SkipProblem("no tests (empty inputs)")
    if fn_name is not None:
        if not isinstance(fn_name, str) or not fn_name.isidentifier():
            raise RowError("input_output.fn_name", f"must be a function name, got {fn_name!r}")
        on_solution = "class Solution" in (row.get("starter_code") or "")
        return tuple(
            _call_test(fn_name, a, e, on_solution, f"input_output.inputs[{i}]")
            for i, (a, e) in enumerate(zip(inputs, outputs))
        )
    return tuple(
        IOTest(_text(a, f"input_output.inputs[{i}]"), _text(e, f"input_output.outputs[{i}]"), compare=COMPARE)
        for i, (a, e) in enumerate(zip(inputs, outputs))
    )


def _reference(row: Mapping[str, Any]) -> str | None:
    if not str(row.get("solutions") or "").strip():
        return None
    solutions = json_field(row, "solutions")
    return solutions[0] if isinstance(solutions, list) and solutions and isinstance(solutions[0], str) else None


def apps_problem(row: Mapping[str, Any], split: str) -> Problem:
    """One APPS record -> Problem (see the module docstring)."""
    problem_id = required(row, "problem_id", (int, str))
    question = required(row, "question", str)
    difficulty = required(row, "difficulty", str)
    tests = _tests(row)
    starter_code = row.get("starter_code") or ""
    prompt = (
        question
        if not starter_code.strip()
        else f"{question.rstrip()}\n\nStarter code:\n```python\n{starter_code.rstrip()}\n```"
    )
    fn_name = json_field(row, "input_output").get("fn_name")
    return Problem(
        id=f"apps/{split}/{problem_id}",
        source=SOURCE.name,
        prompt=prompt,
        public_tests=tests[:1],
        private_tests=tests,
        entry_point=fn_name,
        reference_solution=_reference(row),
        metadata={"split": split, "problem_id": problem_id, "difficulty": difficulty, "url": row.get("url")},
    )


def load_apps(split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """APPS from `path` (file or folder as published), else $MUCODE_APPS_PATH, else the hub;
    `split` is "SPLIT[@DIFFICULTY]" (either part optional)."""
    split_name, _, difficulty = (split or "").partition("@")
    if difficulty and difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown APPS difficulty {difficulty!r}; choose one of {', '.join(DIFFICULTIES)}")
    problems = load_published(SOURCE, path, apps_problem).select(split_name or None)
    if not difficulty:
        return problems
    kept = tuple(p for p in problems if p.metadata["difficulty"] == difficulty)
    return ProblemSet(
        name=f"{problems.name}@{difficulty}", split=problems.split, problems=kept,
        split_of={p.id: problems.split_of[p.id] for p in kept},
        skipped=problems.skipped, origin=problems.origin, sha256=problems.sha256,
    )  # fmt: skip
