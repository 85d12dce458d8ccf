"""Run folders: one writer per output folder (an advisory lock held while a command writes into
it), and the one JSONL reader of the records that commands write into them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"


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
            raise FolderInUse(f"{folder} is in use by another {command} ({holder}); wait for it to finish or choose another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
            raise ValueError(f"{path}:{number}: not a JSON record ({err.msg} at column {err.colno}){cut}; fix or remove the line") from None
    return records
