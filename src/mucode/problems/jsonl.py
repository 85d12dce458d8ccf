"""Problems from JSONL files: the schema, a strict reader and a writer.

Schema: one JSON object per line (blank lines are ignored).

    field               type                      required  meaning
    id                  string or integer         yes       unique within the file (folder: within all files)
    prompt              string                    yes       the problem statement, raw
    public_tests        list of tests             yes       shown to the model; may be empty
    private_tests       list of tests             yes       decide correctness; at least one
    entry_point         string or null            no        the function the tests call
    setup_code          string or null            no        runs before the tests (e.g. imports)
    reference_solution  string or null            no        a known-correct program
    metadata            object or null            no        anything else, kept as is
    source              string or null            no        defaults to the set's name

A test is either
    "assert f(1) == 2"                                  Python statements; passes iff they do not raise
    {"kind": "assert", "code": "assert f(1) == 2"}      the same, as an object
    {"stdin": "1 2\\n", "expected_stdout": "3\\n"}        run as a script; compare standard output
      (optionally with "kind": "io", "compare": one of mucode.execution.outputs.COMPARE_MODES)
Either kind may carry "timeout_s": the test's own time limit (applied when below the run's).

Any other key is an error (put extra information under `metadata`). This is exactly what
`Problem.to_dict()` writes, so `write_jsonl` + `load_jsonl` round-trip.

A file is one split named after the file's stem (`test.jsonl` -> split "test"); a folder holds one
`<split>.jsonl` file per split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from mucode.execution.outputs import COMPARE_MODES
from mucode.problems.base import (
    ProblemDataError,
    ProblemSet,
    ProblemSetBuilder,
    RowError,
    checked_python,
    json_lines,
    sha256_of_files,
)
from mucode.types import AssertTest, IOTest, Problem, Test


REQUIRED_FIELDS = ("id", "prompt", "public_tests", "private_tests")
OPTIONAL_STR_FIELDS = ("entry_point", "setup_code", "reference_solution", "source")
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_STR_FIELDS + ("metadata",))
_TEST_KEYS = {
    "assert": {"kind", "code", "timeout_s"},
    "io": {"kind", "stdin", "expected_stdout", "compare", "timeout_s"},
}
_OPTIONAL_TEST_KEYS = {"kind", "timeout_s", "compare"}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _parse_test(value: Any, field_name: str) -> Test:
    """One element of public_tests/private_tests -> AssertTest or IOTest."""
    if isinstance(value, str):
        return AssertTest(checked_python(value, field_name))
    if not isinstance(value, Mapping):
        raise RowError(
            field_name,
            f"a test must be a string of assert statements or an object, got {_type_name(value)}",
        )
    test = {k: v for k, v in value.items() if v is not None}  # Arrow fills absent struct keys with null
    kind = test.get("kind", "io" if "stdin" in test or "expected_stdout" in test else "assert")
    if kind not in _TEST_KEYS:
        raise RowError(f"{field_name}.kind", f"unknown test kind {kind!r}; use 'assert' or 'io'")
    unknown = sorted(set(test) - _TEST_KEYS[kind])
    if unknown:
        raise RowError(
            field_name,
            f"unknown key(s) {unknown} for a {kind!r} test; allowed: {sorted(_TEST_KEYS[kind])}",
        )
    required = sorted(_TEST_KEYS[kind] - _OPTIONAL_TEST_KEYS)
    for key in required:
        if not isinstance(test.get(key), str):
            raise RowError(
                f"{field_name}.{key}",
                f"a {kind!r} test needs {required} as strings; {key!r} is "
                f"{'missing' if key not in test else _type_name(test[key])}",
            )
    timeout_s = _checked_timeout(test.get("timeout_s"), f"{field_name}.timeout_s")
    if kind == "assert":
        return AssertTest(checked_python(test["code"], f"{field_name}.code"), timeout_s=timeout_s)
    compare = test.get("compare", "lines")
    if compare not in COMPARE_MODES:
        raise RowError(
            f"{field_name}.compare", f"unknown output comparison {compare!r}; use one of {list(COMPARE_MODES)}"
        )
    return IOTest(test["stdin"], test["expected_stdout"], compare=compare, timeout_s=timeout_s)


def _checked_timeout(value: Any, field_name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise RowError(field_name, f"must be a number of seconds > 0 or null, got {_type_name(value)} {value!r}")
    return float(value)


def _parse_tests(row: Mapping[str, Any], field_name: str) -> tuple[Test, ...]:
    value = row[field_name]
    if not isinstance(value, list):
        raise RowError(field_name, f"must be a list of tests, got {_type_name(value)}")
    return tuple(_parse_test(test, f"{field_name}[{i}]") for i, test in enumerate(value))


def _parse_id(row: Mapping[str, Any]) -> str:
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError("id", f"must be a string or an integer, got {_type_name(value)} {value!r}")
    if isinstance(value, str) and not value.strip():
        raise RowError("id", "must not be empty")
    return str(value)


def row_to_problem(row: Any, default_source: str) -> Problem:
    """Validate one decoded row against the schema and build the Problem (raises RowError)."""
    if not isinstance(row, Mapping):
        raise RowError("<row>", f"each line must be a JSON object, got {_type_name(row)}")
    for name in REQUIRED_FIELDS:
        if name not in row:
            raise RowError(name, f"required field {name!r} is missing (required: {list(REQUIRED_FIELDS)})")
    unknown = sorted(set(row) - KNOWN_FIELDS)
    if unknown:
        raise RowError(
            unknown[0], f"unknown field(s) {unknown}; allowed: {sorted(KNOWN_FIELDS)} (put extras under 'metadata')"
        )
    problem_id = _parse_id(row)
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise RowError("prompt", f"must be a non-empty string, got {_type_name(row['prompt'])}")
    for name in OPTIONAL_STR_FIELDS:
        if row.get(name) is not None and not isinstance(row[name], str):
            raise RowError(name, f"must be a string or null, got {_type_name(row[name])}")
    metadata = row.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise RowError("metadata", f"must be an object or null, got {_type_name(metadata)}")
    public_tests = _parse_tests(row, "public_tests")
    private_tests = _parse_tests(row, "private_tests")
    if not private_tests:
        raise RowError("private_tests", "is empty; a problem needs at least one private test to be judged")
    return Problem(
        id=problem_id,
        source=row.get("source") or default_source,
        prompt=row["prompt"],
        public_tests=public_tests,
        private_tests=private_tests,
        entry_point=row.get("entry_point"),
        setup_code=row.get("setup_code") or "",
        reference_solution=row.get("reference_solution"),
        metadata=dict(metadata or {}),
    )


def add_rows(
    builder: ProblemSetBuilder,
    rows: Iterable[tuple[int, Any]],
    split: str,
    where: str,
    default_source: str,
    unit: str = "line",
) -> None:
    """Validate numbered rows and add them to `builder`; any bad row raises ProblemDataError."""
    for line, row in rows:
        try:
            problem = row_to_problem(row, default_source)
        except RowError as err:
            raise ProblemDataError(where, line, err.field, err.message, unit) from None
        builder.add(problem, split, line, where, unit)


def jsonl_files(path: Path) -> list[Path]:
    """The files a path stands for: itself, or the `*.jsonl` files of a folder (sorted)."""
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise FileNotFoundError(f"folder {path} holds no <split>.jsonl files; add e.g. {path}/test.jsonl")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"no such problem file or folder: {path}")
    return [path]


def load_jsonl(path: str | Path, split: str | None = None, name: str | None = None) -> ProblemSet:
    """Read problems from a .jsonl file (one split named after its stem) or a folder of them.

    `split` selects one split (one file of a folder); `name` overrides the set's name
    (default "jsonl:<path>"), which is also every problem's default `source`.
    """
    path = Path(path)
    files = jsonl_files(path)
    set_name = name or f"jsonl:{path}"
    builder = ProblemSetBuilder(set_name, str(path))
    for file in files:
        add_rows(builder, json_lines(file), file.stem, str(file), set_name)
    return builder.build(origin=str(path), sha256=sha256_of_files(files)).select(split)


def write_jsonl(path: str | Path, problems: Iterable[Problem]) -> Path:
    """Write problems in the schema above (one `Problem.to_dict()` per line); returns the path."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as handle:
        for problem in problems:
            handle.write(json.dumps(problem.to_dict(), ensure_ascii=False) + "\n")
    return path
