"""Problems from a Hugging Face dataset: a hub id, a local dataset folder, or a folder written by
`Dataset.save_to_disk`, loaded with the `datasets` library (imported only when used).

The rows are mapped
  - through the MBPP mapper when the columns are MBPP's (full: task_id, text, code, test_list,
    test_setup_code, challenge_test_list; sanitized: task_id, prompt, code, test_list,
    test_imports); splits then follow the paper's task-id ranges and ids are "mbpp/<task_id>";
  - otherwise through the JSONL schema of `mucode.problems.jsonl` (columns id, prompt,
    public_tests, private_tests, ...), each dataset split becoming a split.

Arrow needs one type per column: inside one dataset write every test as a string, or every test as
an object (missing keys come back as null and are ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mucode.problems.base import ProblemSet, ProblemSetBuilder, ProblemSourceUnavailable, error_chain, sha256_of_rows
from mucode.problems.jsonl import add_rows
from mucode.problems.mbpp import add_mbpp_rows, mbpp_variant


def _is_saved_dataset(folder: Path) -> bool:
    """True for a folder written by `save_to_disk` (read with load_from_disk, not load_dataset)."""
    return folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file())


def dataset_rows(dataset: str, config: str | None) -> dict[str, list[dict[str, Any]]]:
    """split name -> rows, for every split of the dataset (ProblemSourceUnavailable if unreachable)."""
    import datasets  # heavy: imported only here

    try:
        if _is_saved_dataset(Path(dataset)):
            data = datasets.load_from_disk(dataset)
        else:
            data = datasets.load_dataset(dataset, config)
    except Exception as err:  # not found, offline, bad config, mixed column types: the user must act
        raise ProblemSourceUnavailable(
            f"could not load the Hugging Face dataset {dataset!r}"
            f"{f' (config {config!r})' if config else ''}: {error_chain(err)}. Check the dataset id or "
            "local folder, the config name, network access or the datasets cache, and that every "
            "split has the same columns and types"
        ) from err
    if isinstance(data, datasets.Dataset):
        return {"train": list(data)}
    return {name: list(data[name]) for name in data}


def load_hf(dataset: str, config: str | None = None, split: str | None = None) -> ProblemSet:
    """Problems from a Hugging Face dataset (hub id or local folder), see the module docstring."""
    rows_by_split = dataset_rows(dataset, config)
    name = f"hf:{dataset}" + (f":{config}" if config else "")
    all_rows = [row for rows in rows_by_split.values() for row in rows]
    variant = mbpp_variant(all_rows[0]) if all_rows else None
    builder = ProblemSetBuilder(name, name)
    for split_name, rows in rows_by_split.items():
        where = f"{name} (split {split_name})"
        if variant is not None:  # MBPP columns: the paper's task-id splits, not the dataset's
            add_mbpp_rows(builder, enumerate(rows, start=1), variant, where, "row")
        else:
            add_rows(builder, enumerate(rows, start=1), split_name, where, name, "row")
    return builder.build(origin=name, sha256=sha256_of_rows(all_rows)).select(split)
