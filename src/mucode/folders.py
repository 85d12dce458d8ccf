"""One writer per output folder: an advisory lock held while a command writes into it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"


class FolderInUse(OSError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold an exclusive lock on FOLDER/.lock (created with the folder) for the block, or raise
    FolderInUse at once. Two processes appending to one store would interleave records; the lock
    is released by the kernel if the holder dies, so a killed run never blocks its resume."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
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
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
