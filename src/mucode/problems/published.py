"""Reading benchmarks in the formats they are published in: local JSONL / JSON / parquet files or
folders, or the Hugging Face hub, record by record with the file and line of each.

A benchmark loader gives `load_published` a function from one record to a Problem; a record it
cannot use raises `SkipProblem` (listed in `ProblemSet.skipped`), a malformed one `RowError`
(turned into a ProblemDataError naming file, line or row, and field).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from mucode.problems.base import (
    ProblemDataError,
    ProblemSet,
    ProblemSetBuilder,
    ProblemSourceUnavailable,
    RowError,
    json_lines,
    sha256_of_files,
    sha256_of_rows,
)
from mucode.types import Problem


DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


class SkipProblem(Exception):
    """This record is well formed but cannot become a problem mucode can judge; the message says why."""


@dataclass(frozen=True)
class Record:
    """One published record: where it is (file or dataset split), its number and unit, its split."""

    where: str
    number: int
    unit: str
    split: str
    row: Any


RowConverter = Callable[[Mapping[str, Any], str], Problem]


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def required(row: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """row[name], checked to be of `kind` (RowError naming the field otherwise)."""
    if not isinstance(row, Mapping):
        raise RowError("<row>", f"each record must be an object, got {type_name(row)}")
    if name not in row:
        raise RowError(name, f"required field {name!r} is missing")
    value = row[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RowError(name, f"must be {names}, got {type_name(value)}")
    return value


def optional(row: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    return default if row.get(name) is None else required(row, name, kind)


def json_field(row: Mapping[str, Any], name: str) -> Any:
    """A field that holds JSON text (APPS, LiveCodeBench), decoded."""
    text = required(row, name, str)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RowError(name, f"is not valid JSON text ({err.msg} at column {err.colno})") from None


def python_literal(value: Any) -> str:
    """Python source for a JSON-like value (non-finite floats written as float('inf'), ...)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(python_literal(v) + ", " for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


# -- local files ------------------------------------------------------------------------------------


def split_of_file(path: Path) -> str:
    """`test.jsonl` -> test; hub parquet shards `train-00000-of-00039.parquet` -> train."""
    name = path.name
    for suffix in DATA_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.split("-")[0]


def data_files(path: Path) -> list[Path]:
    """The data files a path stands for: itself, or every JSONL/JSON/parquet file under a folder."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(DATA_SUFFIXES))
        if files:
            return files
        raise FileNotFoundError(f"folder {path} holds no {', '.join(DATA_SUFFIXES)} files")
    raise FileNotFoundError(f"no such file or folder: {path}")


def _json_lines(path: Path) -> Iterator[Record]:
    for number, row in json_lines(path):
        yield Record(str(path), number, "line", split_of_file(path), row)


def _json_array(path: Path) -> Iterator[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ProblemDataError(
            str(path), err.lineno, None, f"not valid JSON ({err.msg} at column {err.colno})"
        ) from None
    if not isinstance(data, list):
        raise ProblemDataError(
            str(path), None, None, f"a .json file must hold an array of records, got {type_name(data)}"
        )
    for number, row in enumerate(data, start=1):
        yield Record(str(path), number, "item", split_of_file(path), row)


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq  # heavy: imported only here

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # noqa: BLE001 - not parquet, truncated, ...: the user must act
        raise ProblemDataError(str(path), None, None, f"not a readable parquet file: {err}") from None
    for number, row in enumerate(rows, start=1):
        yield Record(str(path), number, "row", split_of_file(path), row)


def read_records(files: Sequence[Path]) -> Iterator[Record]:
    for path in files:
        if path.name.endswith(".parquet"):
            yield from _parquet(path)
        elif path.name.endswith(".json"):
            yield from _json_array(path)
        else:
            yield from _json_lines(path)


# -- the hub ----------------------------------------------------------------------------------------


def hub_records(hub_id: str, config: str | None, how_to_give_a_path: str) -> Iterator[Record]:
    """Every record of every split of a hub dataset (through `mucode.problems.hf`), or a
    ProblemSourceUnavailable saying how to give a local copy instead."""
    from mucode.problems.hf import dataset_rows

    try:
        rows_by_split = dataset_rows(hub_id, config)
    except ProblemSourceUnavailable as err:
        raise ProblemSourceUnavailable(f"{str(err).rstrip('.')}. Offline, {how_to_give_a_path}") from err
    for split, rows in rows_by_split.items():
        where = f"hf:{hub_id} (split {split})"
        for number, row in enumerate(rows, start=1):
            yield Record(where, number, "row", split, row)


# -- building the set -------------------------------------------------------------------------------


def add_records(builder: ProblemSetBuilder, records: Iterator[Record], convert: RowConverter) -> list[Any]:
    """Convert and add each record; returns the raw rows (for hashing hub data)."""
    rows = []
    for record in records:
        rows.append(record.row)
        try:
            problem = convert(record.row, record.split)
        except RowError as err:
            raise ProblemDataError(record.where, record.number, err.field, err.message, record.unit) from None
        except SkipProblem as why:
            builder.skip(_record_id(record), record.split, str(why))
            continue
        builder.add(problem, record.split, record.number, record.where, record.unit)
    return rows


def _record_id(record: Record) -> str:
    row = record.row if isinstance(record.row, Mapping) else {}
    for key in ("task_id", "question_id", "problem_id", "name"):
        if row.get(key) is not None:
            return str(row[key])
    return f"{record.where}:{record.number}"


@dataclass(frozen=True)
class Source:
    """A published benchmark: its set name, hub id (and config), and the environment variable
    that may hold a local copy."""

    name: str
    hub_id: str
    hub_config: str | None
    env_var: str


def load_published(source: Source, path: str | Path | None, convert: RowConverter) -> ProblemSet:
    """Every split of `source` from `path` (else $env_var, else the hub), converted record by record."""
    path = path if path is not None else os.environ.get(source.env_var) or None
    builder = ProblemSetBuilder(source.name, str(path or f"hf:{source.hub_id}"))
    if path is not None:
        files = data_files(Path(path))
        add_records(builder, read_records(files), convert)
        return builder.build(origin=str(path), sha256=sha256_of_files(files))
    hint = f"give a local copy with --problems-path (`mucode problems`: --path; path= in Python) or ${source.env_var}"
    rows = add_records(builder, hub_records(source.hub_id, source.hub_config, hint), convert)
    return builder.build(origin=f"hf:{source.hub_id}", sha256=sha256_of_rows(rows))
