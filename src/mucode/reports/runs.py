"""Reading run folders for reports: search folders, rollout folders and pipeline folders.

    run = load_run("runs/bon-n5")          # RunResult(name="bon-n5", kind="search", ...)
    runs = load_runs(["runs/pipeline"])    # one RunResult per runs/pipeline/eval/<method>/

Every run becomes a list of *search records* (the `searches.jsonl` schema of docs/reports.md); a
rollout trajectory is a search with N = 1 and selector "none". Metrics are computed from the
records, so a run still in progress (no summary.json yet) gets a report too.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from mucode.metrics import summarize_searches, trajectory_as_record
from mucode.store import (
    RUN_FILE,
    SEARCHES,
    SUMMARY_FILE,
    TRAJECTORIES,
    read_folder_config,
    read_json_object,
    read_searches,
    read_trajectories,
)


SEARCH_KEYS = ("problem_id", "search", "turns", "correct", "solved_public")
STOPPING_RULE = "first selected program that passes the public tests"

trajectory_as_search = trajectory_as_record  # the name reports have exported
RunKind = Literal["search", "rollout"]


@dataclass
class RunResult:
    """One evaluated method: its records (search schema) and the numbers of the report table.

    summary holds the keys of summary.json (`mucode.metrics.summarize_records`), always computed
    from the records; summary_source is "summary.json" when the stored summary.json equals them,
    else "recomputed" (a run in progress, a summary written under an older definition, or a
    rollout folder).
    """

    name: str
    kind: RunKind
    config: dict[str, Any]
    protocol: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    folder: Path
    summary_source: str = "recomputed"

    @property
    def model(self) -> str:
        return str(self.config.get("model") or "—")

    @property
    def n(self) -> int:
        return int(self.protocol["n"])

    @property
    def selector(self) -> str:
        return str(self.protocol["selector"])

    @property
    def repeats(self) -> int:
        """S: how many searches each problem got (distinct search indices)."""
        return len({record["search"] for record in self.records})

    @property
    def max_turns(self) -> int:
        return int(self.protocol["turns"])

    def accuracy_with_ci(self) -> tuple[float, tuple[float, float]]:
        """Accuracy and its 95% bootstrap interval over problems (low, high)."""
        ci = self.summary["accuracy_ci95"]
        return float(self.summary["accuracy"]), (float(ci["low"]), float(ci["high"]))

    def search_spread(self) -> float | None:
        """Half-width of the Student-t interval over the S search indices (None when S = 1): the
        spread between repeated searches, not an interval over problems."""
        spread_ = self.summary.get("accuracy_spread") or {}
        low, high = spread_.get("ci95_low"), spread_.get("ci95_high")
        if (spread_.get("n") or 0) > 1 and _is_finite(low) and _is_finite(high):
            return (high - low) / 2
        return None


# -------------------------------------------------------------------------------------- finding


def _is_run_folder(folder: Path) -> bool:
    return (folder / SEARCHES).is_file() or (folder / TRAJECTORIES).is_file()


def find_run_folders(folder: str | Path) -> list[Path]:
    """[folder] for a search or rollout folder; its eval/<method>/ run folders for a pipeline
    folder. FileNotFoundError/ValueError name the folder and what it lacks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} does not exist")
    if _is_run_folder(folder):
        return [folder]
    evaluated = sorted(sub for sub in (folder / "eval").glob("*") if sub.is_dir() and _is_run_folder(sub))
    if evaluated:
        return evaluated
    raise ValueError(
        f"{folder} is not a run folder: it holds no {SEARCHES} (mucode search), no {TRAJECTORIES} "
        f"(mucode rollout) and no eval/<method>/ folder with either (mucode run)"
    )


# -------------------------------------------------------------------------------------- loading


def load_run(folder: str | Path, name: str | None = None) -> RunResult:
    """A search or rollout folder as a RunResult (name: `name`, else run.json "name", else the
    folder name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} does not exist")
    config = read_folder_config(folder)
    meta = read_json_object(folder / RUN_FILE) or {}
    name = name or meta.get("name") or folder.name
    if (folder / SEARCHES).is_file():
        return _load_search_run(folder, name, config, meta)
    if (folder / TRAJECTORIES).is_file():
        return _load_rollout_run(folder, name, config, meta)
    raise ValueError(
        f"{folder} is not a run folder: it holds neither {SEARCHES} (mucode search) nor {TRAJECTORIES} (mucode rollout)"
    )


def load_runs(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None) -> list[RunResult]:
    """Every run of the given folders (pipeline folders expand to their eval/<method>/ runs),
    named by `names` (one per run, in order) or by folder; clashing folder names are qualified
    with their parent (or pipeline) folder."""
    found = [(Path(d), sub) for d in run_dirs for sub in find_run_folders(d)]
    if names is not None and len(names) != len(found):
        listed = ", ".join(str(sub) for _, sub in found)
        raise ValueError(
            f"--names gives {len(names)} names for {len(found)} runs ({listed}); give one name per run, in this order"
        )
    runs = [load_run(sub, names[i] if names is not None else None) for i, (_, sub) in enumerate(found)]
    if names is None:
        _qualify_clashing_names(runs, [top for top, _ in found])
    return runs


def _qualify_clashing_names(runs: list[RunResult], tops: list[Path]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        counts[run.name] += 1
    for run, top in zip(runs, tops):
        if counts[run.name] > 1:
            parent = top.resolve().name if top.resolve() != run.folder.resolve() else run.folder.resolve().parent.name
            run.name = f"{parent}/{run.name}"


def _load_search_run(folder: Path, name: str, config: dict[str, Any], meta: dict[str, Any]) -> RunResult:
    path = folder / SEARCHES
    records = read_searches(folder)
    _check_search_records(path, records)
    if not records:
        raise ValueError(f"{path} holds no finished search yet; report once the run has written some")
    summary = summarize_searches(records)
    stored = read_json_object(folder / SUMMARY_FILE)
    # the numbers always come from the records (one definition); summary.json is only compared
    agrees = stored is not None and json.loads(json.dumps(summary)) == stored
    protocol = _search_protocol(config, meta, records)
    return RunResult(
        name, "search", config, protocol, records, summary, folder, "summary.json" if agrees else "recomputed"
    )


def _load_rollout_run(folder: Path, name: str, config: dict[str, Any], meta: dict[str, Any]) -> RunResult:
    path = folder / TRAJECTORIES
    try:
        trajectories = read_trajectories(folder)
    except ValueError as err:
        raise ValueError(f"{path}: a line is not JSON ({err})") from None
    if not trajectories:
        raise ValueError(f"{path} holds no finished trajectory yet; report once the run has written some")
    records = [trajectory_as_record(t) for t in trajectories]
    protocol = _rollout_protocol(config, records)
    return RunResult(name, "rollout", config, protocol, records, summarize_searches(records), folder)


# ------------------------------------------------------------------------------------- protocol


def public_private_rule(problems: str | None) -> str:
    """The public/private test rule of a problem source "SOURCE[:SPLIT]" (METHOD.md §4)."""
    source, _, split = (problems or "").partition(":")
    if source in ("mbpp", "mbpp-sanitized"):
        if split == "train":
            return "MBPP train: all three test_list asserts public (the model sees every test)"
        if split:
            return f"MBPP {split}: test_list[0] public; test_list[1:] and challenge_test_list private"
        return "MBPP, every split: train problems have all three test_list asserts public; other splits test_list[0] public, test_list[1:] and challenge_test_list private"
    if source == "humaneval":
        return "HumanEval: one docstring example (as an assert) public; the full `check` function private"
    if not source:
        return "unknown (no problem source recorded)"
    return f"{problems}: public_tests and private_tests as given by the problem file"


def _protocol_from_config(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "problems": config.get("problems"),
        "public_private_rule": public_private_rule(config.get("problems")),
        "stopping_rule": STOPPING_RULE,
        "temperature": config.get("temperature"),
        "top_p": config.get("top_p"),
        "turns": config.get("turns"),
        "timeout_s": config.get("timeout_s"),
        "verifier": config.get("verifier"),
    }


def _search_protocol(config: dict[str, Any], meta: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    protocol = _protocol_from_config(config)
    protocol.update(
        n=config.get("n", max(len(r["turns"][0]["candidates"]) if r["turns"] else 1 for r in records)),
        selector=config.get("selector", records[0].get("selector", "—")),
        searches=config.get("searches", len({r["search"] for r in records})),
        verifier=config.get("verifier", meta.get("verifier")),
    )
    if protocol["turns"] is None:
        protocol["turns"] = max(r.get("max_turns", len(r["turns"])) for r in records)
    stated = {k: v for k, v in (meta.get("protocol") or {}).items() if v is not None}
    # The split-specific rule derived from the problem source stays in the table; a different
    # wording from run.json is kept beside it rather than replacing it.
    rule = stated.pop("public_private_rule", None)
    if rule is not None and (config.get("problems") is None or rule != protocol["public_private_rule"]):
        protocol["stated_public_private_rule"] = rule
    protocol.update(stated)
    return protocol


def _rollout_protocol(config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    protocol = _protocol_from_config(config)
    protocol.update(
        stopping_rule="first program that passes the public tests",
        n=1,
        selector="none",
        searches=config.get("rollouts", len({r["search"] for r in records})),
    )
    if protocol["turns"] is None:
        protocol["turns"] = max(r["max_turns"] for r in records)
    return protocol


# -------------------------------------------------------------------------------------- metrics


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------- checking


def _check_search_records(path: Path, records: list[dict[str, Any]]) -> None:
    for number, record in enumerate(records, 1):
        missing = [k for k in SEARCH_KEYS if k not in record] if isinstance(record, dict) else list(SEARCH_KEYS)
        if missing:
            raise ValueError(f"{path}: record {number} is not a search record (missing {', '.join(missing)})")
