"""Kept for importers of the old name: run folders live in `mucode.store`."""

from mucode.store import LOCK_FILE, FolderInUse, check_not_in_use, folder_lock, read_jsonl


__all__ = ["LOCK_FILE", "FolderInUse", "check_not_in_use", "folder_lock", "read_jsonl"]
