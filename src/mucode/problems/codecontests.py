"""CodeContests (Li et al. 2022, AlphaCode; CC BY 4.0): competitive-programming problems with
stdin/stdout tests, in the format of `deepmind/code_contests` (parquet on the hub; JSONL, JSON or
parquet locally). Splits train / valid / test (13328 / 117 / 165 on the hub).

Each record:
  name, description                               -> id "codecontests/<name>", prompt
  public_tests / private_tests / generated_tests  {"input": [str], "output": [str]}
  time_limit {"seconds", "nanos"} (or null)       -> every test's `timeout_s`
  solutions {"language": [int], "solution": [str]} -> reference: the first Python 3 (language 3)
  input_file / output_file                        a problem that reads or writes files is skipped

Public/private (AlphaCode's rule): the public tests are shown; a program is correct when it passes
the hidden tests, the private and the generated ones. Output comparison: DeepMind's checker
(`compare="codecontests"`: tokens, case-insensitive, floats within 1e-5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from mucode.problems.base import ProblemSet, RowError
from mucode.problems.published import SkipProblem, Source, load_published, optional, required
from mucode.types import IOTest, Problem


SOURCE = Source("codecontests", "deepmind/code_contests", None, "MUCODE_CODECONTESTS_PATH")
PYTHON3 = 3
COMPARE = "codecontests"


def _time_limit(row: Mapping[str, Any]) -> float | None:
    limit = optional(row, "time_limit", dict)
    if not limit:
        return None
    seconds = limit.get("seconds") or 0
    nanos = limit.get("nanos") or 0
    if not isinstance(seconds, int) or not isinstance(nanos, int):
        raise RowError("time_limit", f"needs integer 'seconds' and 'nanos', got {limit!r}")
    total = seconds + nanos / 1e9
    return total if total > 0 else None


def _tests(row: Mapping[str, Any], name: str, timeout_s: float | None) -> tuple[IOTest, ...]:
    group = optional(row, name, dict, {})
    inputs, outputs = group.get("input") or [], group.get("output") or []
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise RowError(name, "needs 'input' and 'output' lists")
    if len(inputs) != len(outputs):
        raise RowError(name, f"has {len(inputs)} inputs but {len(outputs)} outputs")
    for i, (stdin, stdout) in enumerate(zip(inputs, outputs)):
        if not isinstance(stdin, str) or not isinstance(stdout, str):
            raise RowError(f"{name}[{i}]", "inputs and outputs must be strings")
    return tuple(IOTest(i, o, compare=COMPARE, timeout_s=timeout_s) for i, o in zip(inputs, outputs))


def _python3_solution(row: Mapping[str, Any]) -> str | None:
    solutions = optional(row, "solutions", dict, {})
    languages, codes = solutions.get("language") or [], solutions.get("solution") or []
    return next((code for lang, code in zip(languages, codes) if lang == PYTHON3), None)


def codecontests_problem(row: Mapping[str, Any], split: str) -> Problem:
    """One CodeContests record -> Problem (see the module docstring)."""
    name = required(row, "name", str)
    description = required(row, "description", str)
    if optional(row, "input_file", str, "") or optional(row, "output_file", str, ""):
        raise SkipProblem("reads or writes named files, not stdin/stdout")
    timeout_s = _time_limit(row)
    public = _tests(row, "public_tests", timeout_s)
    private = _tests(row, "private_tests", timeout_s)
    generated = _tests(row, "generated_tests", timeout_s)
    if not private + generated:
        raise SkipProblem("no private or generated tests")
    metadata = {
        "split": split, "source": row.get("source"), "difficulty": row.get("difficulty"),
        "cf_rating": row.get("cf_rating"), "cf_tags": list(row.get("cf_tags") or []),
        "time_limit_s": timeout_s, "memory_limit_bytes": row.get("memory_limit_bytes"),
        "n_private_tests": len(private), "n_generated_tests": len(generated),
    }  # fmt: skip
    return Problem(
        id=f"codecontests/{name}",
        source=SOURCE.name,
        prompt=description,
        public_tests=public,
        private_tests=private + generated,
        reference_solution=_python3_solution(row),
        metadata=metadata,
    )


def load_codecontests(split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """CodeContests from `path` (a file or folder in the published format), else
    $MUCODE_CODECONTESTS_PATH, else the hub id deepmind/code_contests."""
    return load_published(SOURCE, path, codecontests_problem).select(split)
