"""LiveCodeBench code generation (Jain et al. 2024; the problems' texts belong to their contest
sites, see the dataset card), in the format of `livecodebench/code_generation_lite`: JSONL files
`test.jsonl`, `test2.jsonl`, ... `testN.jsonl`, one per release increment.

Spec: `livecodebench[:VERSION][@START..END]`
  VERSION   release_vN (the files test.jsonl .. testN.jsonl, LCB's cumulative releases),
            vN (only that increment's file), or release_latest (every file; the default)
  START..END  keep problems whose contest_date is in [START, END] (ISO dates; either may be empty)

Each record: question_id, question_title, question_content, platform, contest_id, contest_date,
starter_code, difficulty, public_test_cases (JSON text), private_test_cases (JSON text, or in the
published files base64 of zlib of a pickle of that JSON text), metadata (JSON text; `func_name`).
A test is {"input", "output", "testtype"}: "stdin" -> an IOTest compared as LCB's grade_stdio does
(`compare="livecodebench"`); "functional" (LeetCode) -> an AssertTest calling
`Solution().<func_name>(*args)` with the input's JSON lines as arguments, a tuple result read as a
list (as LCB does), compared with `==`.

Public/private (LCB's rule): the public test cases are shown; a program is correct when it passes
every test, public and private. LCB's evaluator gives each test 6 s: run with `--timeout 6` to
match it (no per-test limit is stored).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import pickle
import re
import zlib
from pathlib import Path
from typing import Any, Mapping

from mucode.problems.base import (
    ProblemDataError,
    ProblemSet,
    ProblemSetBuilder,
    ProblemSourceUnavailable,
    RowError,
    sha256_of_files,
)
from mucode.problems.published import (
    Record,
    SkipProblem,
    add_records,
    python_literal,
    read_records,
    required,
)
from mucode.types import AssertTest, IOTest, Problem, Test


SET_NAME = "livecodebench"
HUB_ID = "livecodebench/code_generation_lite"
ENV_VAR = "MUCODE_LIVECODEBENCH_PATH"
SPLIT = "test"
COMPARE = "livecodebench"
STARTER_TEXT = (
    "You will use the following starter code to write the solution to the problem "
    "and enclose your code within delimiters."
)
_FILE = re.compile(r"^test(\d*)\.jsonl$")


class _TextOnly(pickle.Unpickler):
    """Unpickles plain values only: the published pickles hold one str, and nothing may run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _decode_tests(row: Mapping[str, Any], name: str) -> list[Any]:
    text = required(row, name, str)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:  # the published private tests: base64(zlib(pickle(json text)))
        decoded = _TextOnly(io.BytesIO(zlib.decompress(base64.b64decode(text.encode("utf-8"))))).load()
        return json.loads(decoded)
    except Exception:  # noqa: BLE001 - any failure means the field is neither form
        raise RowError(name, "is neither JSON text nor base64(zlib(pickle(JSON text)))") from None


def _functional_test(case: Mapping[str, Any], func_name: str, field_name: str) -> AssertTest:
    try:
        args = [json.loads(line) for line in case["input"].split("\n") if line.strip()]
        expected = json.loads(case["output"])
    except json.JSONDecodeError as err:
        raise RowError(field_name, f"a functional test's input lines and output must be JSON ({err.msg})") from None
    call = f"Solution().{func_name}({', '.join(python_literal(a) for a in args)})"
    as_list = "_out = list(_out) if isinstance(_out, tuple) else _out"
    code = f"_out = {call}\n{as_list}\nassert _out == {python_literal(expected)}"
    return AssertTest(code)


def _tests(row: Mapping[str, Any], name: str, func_name: str | None) -> tuple[Test, ...]:
    cases = _decode_tests(row, name)
    if not isinstance(cases, list):
        raise RowError(name, f"must decode to a list of test cases, got {type(cases).__name__}")
    tests: list[Test] = []
    for i, case in enumerate(cases):
        where = f"{name}[{i}]"
        if (
            not isinstance(case, Mapping)
            or not isinstance(case.get("input"), str)
            or not isinstance(case.get("output"), str)
        ):
            raise RowError(where, "a test case needs 'input' and 'output' strings")
        kind = case.get("testtype")
        if kind == "stdin":
            tests.append(IOTest(case["input"], case["output"], compare=COMPARE))
        elif kind == "functional":
            if not func_name:
                raise RowError("metadata", "a functional test needs metadata.func_name")
            tests.append(_functional_test(case, func_name, where))
        else:
            raise RowError(f"{where}.testtype", f"must be 'stdin' or 'functional', got {kind!r}")
    return tuple(tests)


def _prompt(content: str, starter_code: str) -> str:
    if not starter_code.strip():
        return content
    return f"{content.rstrip()}\n\n{STARTER_TEXT}\n```python\n{starter_code.rstrip()}\n```"


def livecodebench_problem(row: Mapping[str, Any], split: str) -> Problem:
    """One LiveCodeBench record -> Problem (see the module docstring)."""
    question_id = required(row, "question_id", (str, int))
    content = required(row, "question_content", str)
    starter_code = row.get("starter_code") or ""
    metadata_text = row.get("metadata") or "{}"
    try:
        meta = json.loads(metadata_text) if isinstance(metadata_text, str) else dict(metadata_text)
    except (json.JSONDecodeError, TypeError, ValueError):
        raise RowError("metadata", "must be JSON text of an object") from None
    func_name = meta.get("func_name") if isinstance(meta, Mapping) else None
    public = _tests(row, "public_test_cases", func_name)
    private = _tests(row, "private_test_cases", func_name)
    if not public + private:
        raise SkipProblem("no test cases")
    return Problem(
        id=f"livecodebench/{question_id}",
        source=SET_NAME,
        prompt=_prompt(content, starter_code),
        public_tests=public,
        private_tests=public + private,
        entry_point=func_name,
        metadata={
            "question_title": row.get("question_title"),
            "platform": row.get("platform"),
            "contest_id": row.get("contest_id"),
            "contest_date": _date_text(row),
            "difficulty": row.get("difficulty"),
            "starter_code": starter_code,
            "split": split,
        },  # fmt: skip
    )


def _date_text(row: Mapping[str, Any]) -> str:
    value = required(row, "contest_date", (str, dt.datetime, dt.date))
    return value.isoformat() if not isinstance(value, str) else value


def _contest_day(record: Record) -> dt.date:
    text = _date_text(record.row)
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise RowError("contest_date", f"must be an ISO date or datetime, got {text!r}") from None


# -- versions and date windows ----------------------------------------------------------------------


def parse_selection(selection: str | None) -> tuple[str, dt.date | None, dt.date | None]:
    """ "release_v3@2024-01-01..2024-06-30" -> ("release_v3", start, end); ValueError if malformed."""
    version, _, window = (selection or "").partition("@")
    version = version or "release_latest"
    if not re.fullmatch(r"release_latest|release_v\d+|v\d+", version):
        raise ValueError(f"unknown LiveCodeBench version {version!r}; write release_vN, vN or release_latest")
    if not window:
        return version, None, None
    start, sep, end = window.partition("..")
    if not sep:
        raise ValueError(f"bad date window {window!r}; write START..END with ISO dates, e.g. 2024-08-01..2025-02-01")
    try:
        return version, dt.date.fromisoformat(start) if start else None, dt.date.fromisoformat(end) if end else None
    except ValueError:
        raise ValueError(f"bad date window {window!r}; dates must be ISO (YYYY-MM-DD)") from None


def _file_number(path: Path) -> int:
    match = _FILE.match(path.name)
    return int(match.group(1) or 1) if match else 0


def version_files(folder_or_file: Path, version: str) -> list[Path]:
    """The release files that make up `version` (a single file stands for itself)."""
    if folder_or_file.is_file():
        return [folder_or_file]
    if not folder_or_file.is_dir():
        raise FileNotFoundError(f"no such LiveCodeBench file or folder: {folder_or_file}")
    files = sorted((p for p in folder_or_file.iterdir() if _file_number(p)), key=_file_number)
    if not files:
        raise FileNotFoundError(
            f"{folder_or_file} holds no test.jsonl, test2.jsonl, ... files of code_generation_lite"
        )
    if version == "release_latest":
        return files
    wanted = int(version.rsplit("v", 1)[1])
    chosen = [
        p
        for p in files
        if (_file_number(p) <= wanted if version.startswith("release_") else _file_number(p) == wanted)
    ]
    if not chosen or (version.startswith("release_") and _file_number(files[-1]) < wanted):
        raise FileNotFoundError(
            f"{folder_or_file} lacks the files of {version} (has {', '.join(p.name for p in files)})"
        )
    return chosen


def _hub_folder(version: str) -> Path:
    """Download the release files (huggingface_hub) and return their folder."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(HUB_ID, repo_type="dataset", allow_patterns=["test*.jsonl"]))
    except Exception as err:  # noqa: BLE001 - offline, no such repo, ...: the user must act
        raise ProblemSourceUnavailable(
            f"could not fetch {HUB_ID} ({version}) from the Hugging Face hub: {type(err).__name__}: "
            f"{str(err).rstrip('.')}. Offline, give a folder holding test.jsonl, test2.jsonl, ... with "
            f"--problems-path (`mucode problems`: --path; Python: path=) or ${ENV_VAR}"
        ) from err


def load_livecodebench(split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """LiveCodeBench code generation; `split` is "VERSION[@START..END]" (module docstring)."""
    version, start, end = parse_selection(split)
    path = path if path is not None else os.environ.get(ENV_VAR) or None
    folder = Path(path) if path is not None else _hub_folder(version)
    files = version_files(folder, version)
    name = SET_NAME + (f":{split}" if split else "")
    builder = ProblemSetBuilder(name, str(folder))
    records = (r for r in read_records(files) if _in_window(r, start, end))
    add_records(builder, (Record(r.where, r.number, r.unit, SPLIT, r.row) for r in records), livecodebench_problem)
    return builder.build(origin=str(folder), sha256=sha256_of_files(files))


def _in_window(record: Record, start: dt.date | None, end: dt.date | None) -> bool:
    if start is None and end is None:
        return True
    try:
        day = _contest_day(record)
    except RowError as err:
        raise ProblemDataError(record.where, record.number, err.field, err.message, record.unit) from None
    return (start is None or day >= start) and (end is None or day <= end)
