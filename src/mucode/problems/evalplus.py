"""HumanEval+ and MBPP+ (EvalPlus, Liu et al. 2023, Apache-2.0): HumanEval and MBPP with many more
tests, in EvalPlus's two published forms:

  hub (`evalplus/humanevalplus`, `evalplus/mbppplus`, split "test"): task_id, prompt,
      canonical_solution, entry_point, test; MBPP+ adds code, test_list, test_imports. `test` is
      EvalPlus's harness: `inputs = [...]`, `results = [...]` and a loop calling
      `assertion(<fn>(*inp), exp, <atol>)` (inside `def check(candidate)` for HumanEval+).
  release file (`HumanEvalPlus.jsonl[.gz]`, `MbppPlus.jsonl[.gz]`): task_id, prompt, entry_point,
      canonical_solution, base_input, plus_input, atol (no expected outputs). Its inputs are JSON:
      EvalPlus re-tuples some MBPP+ tasks' inputs (mbpp_deserialize_inputs), mucode does not.

Tests, one AssertTest per input, comparing as EvalPlus's `assertion` does: equal, or, when `atol`
is not 0 or the expected value is a float (or a non-empty list of floats; then atol = 1e-6),
close as numpy.allclose(out, exp, rtol=1e-07, atol=atol) is. From the hub form the expected value
is the harness's `results` entry; from the release form it is computed in the test by the
canonical solution (trusted code, run by the judge). A harness whose loop is not that plain
assertion (EvalPlus's special oracles) is kept whole as one test.

Public/private: public = the first base input's test (HumanEval+: the HumanEval docstring example
when there is one, as `mucode.problems.humaneval`); private = every test, base and plus. EvalPlus
gives each test max(1 s, 4 x the canonical solution's time on it): `calibrate_time_limits` measures
that in the sandbox and stores it as the tests' `timeout_s`.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mucode.problems.base import ProblemSet, RowError, called_function, checked_python, defined_functions, parse_python
from mucode.problems.humaneval import public_test
from mucode.problems.prelude import humaneval_prelude
from mucode.problems.published import Source, load_published, optional, python_literal, required
from mucode.types import AssertTest, Problem


HUMANEVAL_PLUS = Source("humaneval+", "evalplus/humanevalplus", None, "MUCODE_HUMANEVAL_PLUS_PATH")
MBPP_PLUS = Source("mbpp+", "evalplus/mbppplus", None, "MUCODE_MBPP_PLUS_PATH")
MIN_TIME_LIMIT_S = 1.0
TIME_LIMIT_FACTOR = 4.0

# EvalPlus's assertion, without numpy: numpy.allclose(out, exp, rtol, atol) elementwise
ASSERTION = """\
def _is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _close(out, exp, atol, rtol=1e-07):
    if isinstance(exp, (list, tuple)):
        return isinstance(out, (list, tuple)) and len(out) == len(exp) and all(
            _close(o, e, atol, rtol) for o, e in zip(out, exp))
    if isinstance(out, bool) or not isinstance(out, (int, float)) or not isinstance(exp, (int, float)):
        return False
    if out == exp:
        return True
    return abs(out - exp) <= atol + rtol * abs(exp)


def _assertion(out, exp, atol):
    if out == exp:
        return
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    assert atol != 0 and _close(out, exp, atol), f"expected {exp!r} (atol {atol}), got {out!r}"
"""


def _literal_assignments(nodes: Iterable[ast.stmt]) -> dict[str, Any]:
    values = {}
    for node in nodes:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    return values


def _plain_atol(loop: ast.For) -> float | None:
    """atol of a loop whose body is exactly `assertion(<fn>(*inp), exp, <number>)`, else None."""
    if len(loop.body) != 1 or not isinstance(loop.body[0], ast.Expr):
        return None
    call = loop.body[0].value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "assertion"):
        return None
    if len(call.args) != 3 or not isinstance(call.args[2], ast.Constant):
        return None
    inner = call.args[0]
    if not (isinstance(inner, ast.Call) and len(inner.args) == 1 and isinstance(inner.args[0], ast.Starred)):
        return None
    atol = call.args[2].value
    return float(atol) if isinstance(atol, (int, float)) and not isinstance(atol, bool) else None


def harness_cases(test_code: str) -> tuple[list[Any], list[Any], float] | None:
    """(inputs, results, atol) of a plain EvalPlus harness, else None (keep it whole)."""
    try:
        module = parse_python(test_code)
    except SyntaxError:
        return None
    check = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    body = check.body if check is not None else module.body
    values = _literal_assignments(body)
    loops = [n for n in body if isinstance(n, ast.For)]
    atol = _plain_atol(loops[0]) if len(loops) == 1 else None
    inputs, results = values.get("inputs"), values.get("results")
    if atol is None or not isinstance(inputs, list) or not isinstance(results, list) or len(inputs) != len(results):
        return None
    return inputs, results, atol


def case_test(entry_point: str, args: Sequence[Any], expected_code: str, atol: float) -> AssertTest:
    call = f"{entry_point}(*{python_literal(list(args))})"
    return AssertTest(f"{ASSERTION}\n_assertion({call}, {expected_code}, {atol!r})\n")


def _reference_call(reference: str, entry_point: str, args: Sequence[Any]) -> str:
    return f"_reference_call({reference!r}, {entry_point!r}, {python_literal(list(args))})"


REFERENCE_RUNNER = """\
def _reference_call(source, name, args):
    namespace = {"__name__": "__reference__"}
    exec(source, namespace)
    return namespace[name](*args)
"""


def _inputs(row: Mapping[str, Any], name: str) -> list[Any]:
    value = optional(row, name, list, [])
    for i, args in enumerate(value):
        if not isinstance(args, list):
            raise RowError(f"{name}[{i}]", f"each input must be the list of arguments, got {type(args).__name__}")
    return value


def plus_tests(row: Mapping[str, Any], entry_point: str, reference: str) -> tuple[AssertTest, ...]:
    """Every test of a hub or a release record, base tests first."""
    if row.get("test"):
        cases = harness_cases(required(row, "test", str))
        if cases is None:
            whole = row["test"] + (f"\n\ncheck({entry_point})\n" if "def check(" in row["test"] else "")
            return (AssertTest(whole),)
        inputs, results, atol = cases
        tests = tuple(case_test(entry_point, a, repr(e), atol) for a, e in zip(inputs, results))
        return tests
    base, plus = _inputs(row, "base_input"), _inputs(row, "plus_input")
    if not base + plus:
        raise RowError("plus_input", "a release record needs base_input or plus_input (or a hub 'test' harness)")
    atol = optional(row, "atol", (int, float), 0)
    runner = REFERENCE_RUNNER + "\n"
    tests = tuple(
        AssertTest(runner + case_test(entry_point, a, _reference_call(reference, entry_point, a), float(atol)).code)
        for a in base + plus
    )
    return tests


def humaneval_plus_problem(row: Mapping[str, Any], split: str) -> Problem:
    task_id = required(row, "task_id", str)
    prompt = required(row, "prompt", str)
    entry_point = required(row, "entry_point", str)
    reference = checked_python(prompt + required(row, "canonical_solution", str), "canonical_solution")
    tests = plus_tests(row, entry_point, reference)
    try:
        public, origin = public_test({"task_id": task_id, "prompt": prompt, "entry_point": entry_point, "test": ""})
    except ValueError:
        public, origin = tests[0], "first test"
    return Problem(
        id=task_id, source=HUMANEVAL_PLUS.name, prompt=prompt, public_tests=(public,), private_tests=tests,
        entry_point=entry_point, reference_solution=reference,
        metadata={"task_id": task_id, "split": split, "public_test_origin": origin,
                  "prelude": humaneval_prelude(prompt, entry_point)},
    )  # fmt: skip


def mbpp_plus_problem(row: Mapping[str, Any], split: str) -> Problem:
    task_id = required(row, "task_id", (str, int))
    task_id = task_id if isinstance(task_id, str) else f"Mbpp/{task_id}"
    prompt = required(row, "prompt", str)
    reference = checked_python(row.get("code") or required(row, "canonical_solution", str), "code")
    entry_point = optional(row, "entry_point", str) or _entry_from_asserts(row)
    tests = plus_tests(row, entry_point, reference)
    asserts = [t for t in (row.get("test_list") or []) if isinstance(t, str)]
    public = AssertTest(checked_python(asserts[0], "test_list[0]")) if asserts else tests[0]
    setup = "\n".join(row.get("test_imports") or [])
    return Problem(
        id=task_id, source=MBPP_PLUS.name, prompt=prompt, public_tests=(public,), private_tests=tests,
        entry_point=entry_point, setup_code=setup, reference_solution=reference,
        metadata={"task_id": task_id, "split": split, "source_file": row.get("source_file")},
    )  # fmt: skip


def _entry_from_asserts(row: Mapping[str, Any]) -> str:
    code = row.get("code") or ""
    for test in row.get("test_list") or []:
        name = called_function(test, defined_functions(code)) if isinstance(test, str) else None
        if name:
            return name
    raise RowError("entry_point", "is missing and no test_list assert names the function")


def load_humaneval_plus(split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """HumanEval+ (164 problems, split "test") from `path`, else $MUCODE_HUMANEVAL_PLUS_PATH, else the hub."""
    return load_published(HUMANEVAL_PLUS, path, humaneval_plus_problem).select(split)


def load_mbpp_plus(split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """MBPP+ (split "test") from `path`, else $MUCODE_MBPP_PLUS_PATH, else the hub."""
    return load_published(MBPP_PLUS, path, mbpp_plus_problem).select(split)


# -- EvalPlus's time limits -------------------------------------------------------------------------


def calibrate_time_limits(
    problems: ProblemSet, executor: Any, factor: float = TIME_LIMIT_FACTOR, minimum_s: float = MIN_TIME_LIMIT_S
) -> list[Problem]:
    """Problems whose private tests carry EvalPlus's limit, max(minimum_s, factor x the reference
    solution's time on the test), measured by running each reference in `executor` (the sandbox).
    A problem whose reference fails a test is left unchanged and listed in its metadata."""
    from mucode.problems.prelude import program_to_run

    jobs = [(program_to_run(p.reference_solution or "", p), list(p.private_tests), p.setup_code) for p in problems]
    calibrated = []
    for problem, result in zip(problems, executor.run_many(jobs)):
        if not result.passed:
            calibrated.append(replace(problem, metadata={**problem.metadata, "time_limits": "reference failed"}))
            continue
        tests = tuple(
            replace(t, timeout_s=max(minimum_s, factor * v.duration_s))
            for t, v in zip(problem.private_tests, result.verdicts)
        )
        calibrated.append(
            replace(problem, private_tests=tests, metadata={**problem.metadata, "time_limits": "evalplus"})
        )
    return calibrated
