"""What every loader returns (`ProblemSet`), the errors they raise, and small shared helpers.

A loader never drops a problem silently: a problem it cannot use goes into `ProblemSet.skipped`
with the reason, and a warning is logged.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import hashlib
import json
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from mucode.types import Problem


logger = logging.getLogger("mucode.problems")

_BUILTIN_NAMES = frozenset(dir(builtins))


class ProblemDataError(ValueError):
    """The data of a problem file is missing, malformed or inconsistent.

    The message names the file (or dataset), the line (or row) and the field, so the user can open
    the file at the right place. `unit` says what `line` counts: "line" in a JSONL file, "item" in a
    JSON array, "row" in a hub dataset.
    """

    def __init__(self, where: str, line: int | None, field_name: str | None, message: str, unit: str = "line"):
        self.where = where
        self.line = line
        self.field = field_name
        location = where if line is None else f"{where}, {unit} {line}"
        if field_name is not None:
            location += f", field {field_name!r}"
        super().__init__(f"{location}: {message}")


class RowError(Exception):
    """A problem in one row of data; the loader turns it into a ProblemDataError with the file and line."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


class ProblemSourceUnavailable(FileNotFoundError):
    """No copy of a data set could be found: neither a path, nor an environment variable, nor the
    Hugging Face hub. The message lists every way it was looked for and how to provide it."""


@dataclass(frozen=True)
class Skipped:
    """A problem a loader could not use: its id, its split and why."""

    id: str
    split: str
    reason: str


@dataclass(frozen=True)
class ProblemSet:
    """Problems read from one source, with provenance.

    name: the source as the user named it ("mbpp", "humaneval", "jsonl:<path>", "hf:<id>").
    split: the split that was selected, or None when the set holds every split.
    problems: the usable problems, in source order.
    split_of: problem id -> split name, for every problem in `problems`.
    skipped: problems that could not be used (each logged as a warning when loading).
    origin: where the data was read from (a file, a folder, or a hub id).
    sha256: content hash of the source bytes (of the file, or of every file of a folder, or of the
        canonical JSON of the rows for a hub dataset); store it next to results.
    """

    name: str
    split: str | None
    problems: tuple[Problem, ...]
    split_of: Mapping[str, str]
    skipped: tuple[Skipped, ...] = ()
    origin: str = ""
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def get(self, problem_id: str) -> Problem:
        """The problem with this id; raise KeyError naming the set if there is none."""
        for problem in self.problems:
            if problem.id == problem_id:
                return problem
        raise KeyError(f"no problem with id {problem_id!r} in {self.name}")

    def splits(self) -> list[str]:
        """Split names present in the set (including splits that only have skipped problems)."""
        return sorted(set(self.split_of.values()) | {s.split for s in self.skipped})

    def in_split(self, split: str) -> list[Problem]:
        return [p for p in self.problems if self.split_of[p.id] == split]

    def count_by_split(self) -> Counter[str]:
        return Counter(self.split_of[p.id] for p in self.problems)

    def select(self, split: str | None) -> ProblemSet:
        """The same set restricted to one split (None = unchanged); unknown split -> ValueError."""
        if split is None:
            return self
        available = self.splits()
        if split not in available:
            raise ValueError(f"{self.name} has no split {split!r}; choose one of: {', '.join(available) or '(none)'}")
        problems = tuple(self.in_split(split))
        return ProblemSet(
            name=self.name,
            split=split,
            problems=problems,
            split_of={p.id: split for p in problems},
            skipped=tuple(s for s in self.skipped if s.split == split),
            origin=self.origin,
            sha256=self.sha256,
        )


@dataclass
class ProblemSetBuilder:
    """Collects problems and skips while a loader walks its rows; refuses duplicate ids."""

    name: str
    where: str
    problems: list[Problem] = field(default_factory=list)
    split_of: dict[str, str] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    first_seen: dict[str, str] = field(default_factory=dict)  # id -> "file, line N"

    def add(self, problem: Problem, split: str, line: int | None = None, where: str = "", unit: str = "line") -> None:
        where = where or self.where
        if problem.id in self.first_seen:
            raise ProblemDataError(
                where,
                line,
                "id",
                f"duplicate id {problem.id!r} (first seen at {self.first_seen[problem.id]}); ids "
                "must be unique within a problem set, rename one of them",
                unit,
            )
        self.first_seen[problem.id] = where if line is None else f"{where}, {unit} {line}"
        self.problems.append(problem)
        self.split_of[problem.id] = split

    def skip(self, problem_id: str, split: str, reason: str) -> None:
        logger.warning("%s: skipping problem %s (split %s): %s", self.name, problem_id, split, reason)
        self.skipped.append(Skipped(problem_id, split, reason))

    def build(self, origin: str, sha256: str) -> ProblemSet:
        return ProblemSet(
            name=self.name,
            split=None,
            problems=tuple(self.problems),
            split_of=dict(self.split_of),
            skipped=tuple(self.skipped),
            origin=origin,
            sha256=sha256,
        )


def sha256_of_files(paths: Sequence[Path]) -> str:
    """Hash of the bytes of one file; for several files, of each file's name and bytes in order."""
    digest = hashlib.sha256()
    if len(paths) == 1:
        digest.update(paths[0].read_bytes())
        return digest.hexdigest()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def sha256_of_rows(rows: Iterable[Mapping[str, Any]]) -> str:
    """Hash of the canonical JSON of rows (used when there is no file, e.g. a hub dataset)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\n")
    return digest.hexdigest()


def called_function(code: str, defined: Iterable[str] = ()) -> str | None:
    """Name of the function a test statement is about, else None.

    Among the plain-name calls in `code`, in reading order: the first one in `defined` (functions
    the reference solution defines: MBPP 126's function is called `sum`), else the first that is
    not a builtin (`assert int(lobb_num(5, 3)) == 35` -> "lobb_num"). Raises SyntaxError if `code`
    is not Python.
    """
    calls = [node for node in ast.walk(parse_python(code)) if isinstance(node, ast.Call)]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    names = [call.func.id for call in calls if isinstance(call.func, ast.Name)]
    defined = set(defined)
    for name in names:
        if name in defined:
            return name
    return next((name for name in names if name not in _BUILTIN_NAMES), None)


def defined_functions(code: str) -> set[str]:
    """Names of the top-level functions and classes defined by `code` (empty if it does not parse)."""
    try:
        module = parse_python(code)
    except SyntaxError:
        return set()
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {node.name for node in module.body if isinstance(node, kinds)}


def error_chain(err: BaseException) -> str:
    """The error and its causes, innermost last: `datasets` wraps the useful message."""
    parts = []
    current: BaseException | None = err
    while current is not None and len(parts) < 4:
        first_line = (str(current).splitlines() or [""])[0]
        parts.append(f"{type(current).__name__}: {first_line}")
        current = current.__cause__
    return " <- ".join(parts)


def parse_python(code: str) -> ast.Module:
    """ast.parse without the DeprecationWarnings that old code (invalid escapes) triggers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        return ast.parse(code)


def checked_python(code: str, field_name: str) -> str:
    """`code` when it parses, else a RowError naming the field, the error and its line."""
    try:
        parse_python(code)
    except SyntaxError as err:
        raise RowError(field_name, f"is not valid Python ({err.msg}, line {err.lineno}): {code[:200]!r}") from None
    return code


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, decoded value) of every non-blank line of a .jsonl (or .jsonl.gz) file; a line
    that is not JSON is a ProblemDataError naming the file, the line and the column."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                message = f"not valid JSON ({err.msg} at column {err.colno}); each line must be one JSON value"
                raise ProblemDataError(str(path), number, None, message) from None
            yield number, value


def normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
