"""MBPP (Austin et al. 2021, CC-BY-4.0): the full set (974 problems) and the sanitized set (427).

Where the data comes from, in order:
  1. an explicit `path` (a file, or a folder holding `mbpp.jsonl` / `sanitized-mbpp.json`);
  2. the environment variable MUCODE_MBPP_PATH (a file or such a folder);
  3. the Hugging Face hub: `datasets.load_dataset("google-research-datasets/mbpp", "full" | "sanitized")`.
If a path or the variable is given but does not exist, that is an error (no silent fallback).

Splits follow the paper, by task id: prompt 1-10, test 11-510, validation 511-600, train 601-974
(full: 10/500/90/374; sanitized: 7/257/43/120).

Tests, by split:
  train:                    public = all of `test_list`;   private = `test_list` + `challenge_test_list`
  test/validation/prompt:   public = `test_list[0]`;       private = `test_list[1:]` + `challenge_test_list`
Each challenge test is its own AssertTest and really runs. `test_setup_code` (full) or the
`test_imports` lines (sanitized) become `setup_code` (it must run after the program and before the
tests: 367 and 927 build trees with the program's Node class); `code` is the reference solution;
the entry point is the first function called by the first test that the reference solution
defines (else the first non-builtin one).

Example:
    from mucode.problems import load_mbpp
    train = load_mbpp("train", path="../shared/data/mbpp")   # 374 problems, ids "mbpp/601" ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from mucode.problems.base import (
    ProblemDataError,
    ProblemSet,
    ProblemSetBuilder,
    ProblemSourceUnavailable,
    RowError,
    called_function,
    defined_functions,
    error_chain,
    json_lines,
    normalise_newlines,
    parse_python,
    sha256_of_files,
    sha256_of_rows,
)
from mucode.types import AssertTest, Problem


Variant = Literal["full", "sanitized"]

HUB_ID = "google-research-datasets/mbpp"
ENV_VAR = "MUCODE_MBPP_PATH"
FILE_NAMES: dict[Variant, str] = {"full": "mbpp.jsonl", "sanitized": "sanitized-mbpp.json"}
SET_NAMES: dict[Variant, str] = {"full": "mbpp", "sanitized": "mbpp-sanitized"}
SPLIT_RANGES: dict[str, tuple[int, int]] = {  # inclusive task-id ranges, as in the paper
    "prompt": (1, 10),
    "test": (11, 510),
    "validation": (511, 600),
    "train": (601, 974),
}
# column -> expected type, per variant; the prompt column differs ("text" vs "prompt")
COLUMNS: dict[Variant, dict[str, type]] = {
    "full": {
        "task_id": int,
        "text": str,
        "code": str,
        "test_list": list,
        "test_setup_code": str,
        "challenge_test_list": list,
    },
    "sanitized": {"task_id": int, "prompt": str, "code": str, "test_list": list, "test_imports": list},
}


class _Skip(Exception):
    """This row cannot become a problem; the message says why."""


def split_of_task(task_id: int) -> str | None:
    """The paper's split for an MBPP task id, or None if the id is outside 1-974."""
    for split, (low, high) in SPLIT_RANGES.items():
        if low <= task_id <= high:
            return split
    return None


def mbpp_variant(columns: Iterable[str]) -> Variant | None:
    """ "full" or "sanitized" if these columns are MBPP's, else None."""
    names = set(columns)
    for variant, required in COLUMNS.items():
        if set(required) <= names:
            return variant
    return None


def _check_columns(row: Mapping[str, Any], variant: Variant) -> None:
    for name, kind in COLUMNS[variant].items():
        value = row.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            got = "missing" if name not in row else f"{type(value).__name__} {value!r:.60}"
            raise RowError(name, f"MBPP {variant} needs {name!r} as {kind.__name__}, got {got}")
    for name in ("test_list", "challenge_test_list", "test_imports"):
        if name in COLUMNS[variant] and not all(isinstance(t, str) for t in row[name]):
            raise RowError(name, "must be a list of strings")


def _tests(codes: list[str], where: str) -> list[AssertTest]:
    tests = []
    for i, code in enumerate(codes):
        code = normalise_newlines(code).strip()
        try:
            parse_python(code)
        except SyntaxError as err:
            raise _Skip(f"{where}[{i}] is not valid Python ({err.msg}): {code!r}") from None
        tests.append(AssertTest(code))
    return tests


def mbpp_problem(row: Mapping[str, Any], variant: Variant, split: str) -> Problem:
    """One MBPP row (columns already checked) -> Problem; raises _Skip if its tests are unusable."""
    tests = _tests(row["test_list"], "test_list")
    challenge = _tests(row.get("challenge_test_list") or [], "challenge_test_list")
    if not tests:
        raise _Skip("test_list is empty")
    reference = normalise_newlines(row["code"])
    entry_point = called_function(tests[0].code, defined_functions(reference))
    if entry_point is None:
        raise _Skip(f"the first test calls no function: {tests[0].code!r}")
    if split == "train":  # training problems: every test is public, and still judged privately
        public, private = tests, tests + challenge
    else:
        public, private = tests[:1], tests[1:] + challenge
    if variant == "full":
        prompt, setup = row["text"], row["test_setup_code"]
    else:
        prompt, setup = row["prompt"], "\n".join(row["test_imports"])
    metadata = {"task_id": row["task_id"], "split": split, "n_challenge_tests": len(challenge)}
    if row.get("source_file"):
        metadata["source_file"] = row["source_file"]
    return Problem(
        id=f"{SET_NAMES[variant]}/{row['task_id']}",
        source=SET_NAMES[variant],
        prompt=normalise_newlines(prompt).strip(),
        public_tests=tuple(public),
        private_tests=tuple(private),
        entry_point=entry_point,
        setup_code=normalise_newlines(setup).strip(),
        reference_solution=reference,
        metadata=metadata,
    )


def add_mbpp_rows(
    builder: ProblemSetBuilder, rows: Iterable[tuple[int, Any]], variant: Variant, where: str, unit: str = "line"
) -> None:
    """Add numbered raw rows to `builder`: bad structure raises ProblemDataError, a row whose tests
    cannot be used is skipped (with a warning)."""
    for number, row in rows:
        try:
            if not isinstance(row, Mapping):
                raise RowError("<row>", f"must be an object, got {type(row).__name__}")
            _check_columns(row, variant)
            split = split_of_task(row["task_id"])
            if split is None:
                raise RowError("task_id", f"{row['task_id']} is outside 1-974, the MBPP task ids with a split")
        except RowError as err:
            raise ProblemDataError(where, number, err.field, err.message, unit) from None
        try:
            problem = mbpp_problem(row, variant, split)
        except _Skip as reason:
            builder.skip(f"{SET_NAMES[variant]}/{row['task_id']}", split, str(reason))
            continue
        builder.add(problem, split, number, where, unit)


# --- where the data comes from -----------------------------------------------------------------


def _three_ways(variant: Variant, problem: str) -> str:
    env = os.environ.get(ENV_VAR)
    env_state = "unset" if env is None else f"set to {env!r}"
    return (
        f"MBPP ({variant}) is not available: {problem}. Provide it in one of three ways: "
        f"(1) pass a path to {FILE_NAMES[variant]} or to a folder holding it "
        f"(load_problems(..., path=...) or `mucode problems ... --path`); "
        f"(2) set the environment variable {ENV_VAR} to that file or folder (now {env_state}); "
        f"(3) let datasets.load_dataset({HUB_ID!r}, {variant!r}) fetch it from the Hugging Face "
        "hub (needs network access or a copy in the datasets cache)."
    )


def _resolve(candidate: str | Path, variant: Variant, how: str) -> Path:
    """A user-given file or folder -> the data file; raise naming `how` it was given."""
    path = Path(candidate).expanduser()
    if path.is_dir():
        path = path / FILE_NAMES[variant]
    if not path.is_file():
        raise ProblemSourceUnavailable(_three_ways(variant, f"{how} {str(candidate)!r} has no file {path}"))
    return path


def locate_file(variant: Variant, path: str | Path | None = None) -> Path | None:
    """The local data file from `path` or MUCODE_MBPP_PATH; None if neither is given."""
    if path is not None:
        return _resolve(path, variant, "the path")
    env = os.environ.get(ENV_VAR)
    if env:
        return _resolve(env, variant, f"{ENV_VAR}=")
    return None


def read_rows(path: Path) -> tuple[list[tuple[int, Any]], str]:
    """Numbered rows of a .jsonl file (line numbers) or a .json array (item numbers) and the unit."""
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ProblemDataError(str(path), err.lineno, None, f"not valid JSON ({err.msg})") from None
        if not isinstance(data, list):
            raise ProblemDataError(str(path), None, None, f"must hold a JSON array of rows, got {type(data).__name__}")
        return list(enumerate(data, start=1)), "item"
    return list(json_lines(path)), "line"


def hub_rows(variant: Variant) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """split name -> rows of the hub dataset, and a name for where they came from."""
    try:
        import datasets  # heavy: imported only here

        data = datasets.load_dataset(HUB_ID, variant)
    except Exception as err:  # offline, not cached, hub error: all mean "not reachable"
        raise ProblemSourceUnavailable(
            _three_ways(variant, f"no path given, {ENV_VAR} unset, and the hub failed ({error_chain(err)})")
        ) from err
    return {name: list(data[name]) for name in data}, f"hf:{HUB_ID}:{variant}"


def load_mbpp_variant(variant: Variant, split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """Load MBPP full or sanitized from the first available place (see module docstring)."""
    file = locate_file(variant, path)
    if file is not None:
        rows, unit = read_rows(file)
        found = mbpp_variant(rows[0][1]) if rows and isinstance(rows[0][1], Mapping) else None
        if found not in (None, variant):
            raise ProblemDataError(
                str(file),
                rows[0][0],
                None,
                f"has the columns of MBPP {found}, but MBPP {variant} was asked for; "
                f"point to {FILE_NAMES[variant]} instead",
                unit,
            )
        builder = ProblemSetBuilder(SET_NAMES[variant], str(file))
        add_mbpp_rows(builder, rows, variant, str(file), unit)
        problem_set = builder.build(origin=str(file), sha256=sha256_of_files([file]))
    else:
        rows_by_split, origin = hub_rows(variant)
        builder = ProblemSetBuilder(SET_NAMES[variant], origin)
        for split_name, rows in rows_by_split.items():
            add_mbpp_rows(builder, enumerate(rows, start=1), variant, f"{origin} (split {split_name})", "row")
        all_rows = (row for rows in rows_by_split.values() for row in rows)
        problem_set = builder.build(origin=origin, sha256=sha256_of_rows(all_rows))
    return problem_set.select(split)


def load_mbpp(split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """MBPP full (974 problems; splits train/test/validation/prompt = 374/500/90/10)."""
    return load_mbpp_variant("full", split, path)


def load_mbpp_sanitized(split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """MBPP sanitized (427 problems; splits train/test/validation/prompt = 120/257/43/7)."""
    return load_mbpp_variant("sanitized", split, path)
