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
from typing import Any, Iterable, Literal, Sequence

from mucode.config import read_yaml_mapping
from mucode.metrics import mean_pass_at_k, spread
from mucode.rollouts import TRAJECTORIES, read_trajectories

SEARCHES = "searches.jsonl"
SEARCH_KEYS = ("problem_id", "search", "turns", "correct", "solved_public")
STOPPING_RULE = "first selected program that passes the public tests"

RunKind = Literal["search", "rollout"]


@dataclass
class RunResult:
    """One evaluated method: its records (search schema) and the numbers of the report table.

    summary holds the keys of summary.json (problems, searches, accuracy, accuracy_by_turn,
    accuracy_spread, public_pass_rate, any_of_s_accuracy, pass_at_k, completion_tokens,
    tokens_saved, wall_s); summary_source says whether they were read from summary.json or
    recomputed from the records (a run in progress, a stale summary, or a rollout folder).
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

    def accuracy_with_ci(self) -> tuple[float, float | None]:
        """Accuracy (mean over searches) and the half-width of its 95% interval, None for a
        single search."""
        spread_ = self.summary.get("accuracy_spread") or {}
        low, high = spread_.get("ci95_low"), spread_.get("ci95_high")
        if (spread_.get("n") or 0) > 1 and _is_finite(low) and _is_finite(high):
            return float(spread_.get("mean", self.summary["accuracy"])), (high - low) / 2
        return float(self.summary["accuracy"]), None


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
    config = read_yaml_mapping(folder / "config.yaml") if (folder / "config.yaml").is_file() else {}
    meta = _read_json(folder / "run.json") or {}
    name = name or meta.get("name") or folder.name
    if (folder / SEARCHES).is_file():
        return _load_search_run(folder, name, config, meta)
    if (folder / TRAJECTORIES).is_file():
        return _load_rollout_run(folder, name, config, meta)
    raise ValueError(f"{folder} is not a run folder: it holds neither {SEARCHES} (mucode search) nor {TRAJECTORIES} (mucode rollout)")


def load_runs(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None) -> list[RunResult]:
    """Every run of the given folders (pipeline folders expand to their eval/<method>/ runs),
    named by `names` (one per run, in order) or by folder; clashing folder names are qualified
    with their parent (or pipeline) folder."""
    found = [(Path(d), sub) for d in run_dirs for sub in find_run_folders(d)]
    if names is not None and len(names) != len(found):
        listed = ", ".join(str(sub) for _, sub in found)
        raise ValueError(f"--names gives {len(names)} names for {len(found)} runs ({listed}); give one name per run, in this order")
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
    records = _read_jsonl(path)
    _check_search_records(path, records)
    if not records:
        raise ValueError(f"{path} holds no finished search yet; report once the run has written some")
    computed = summarize_searches(records)
    stored = _read_json(folder / "summary.json")
    fresh = stored is not None and stored.get("problems") == computed["problems"] and stored.get("searches") in (len(records), len({r["search"] for r in records}))
    summary = {**computed, **stored} if fresh else computed
    protocol = _search_protocol(config, meta, records)
    return RunResult(name, "search", config, protocol, records, summary, folder, "summary.json" if fresh else "recomputed")


def _load_rollout_run(folder: Path, name: str, config: dict[str, Any], meta: dict[str, Any]) -> RunResult:
    path = folder / TRAJECTORIES
    try:
        trajectories = read_trajectories(folder)
    except ValueError as err:
        raise ValueError(f"{path}: a line is not JSON ({err})") from None
    if not trajectories:
        raise ValueError(f"{path} holds no finished trajectory yet; report once the run has written some")
    records = [trajectory_as_search(t) for t in trajectories]
    protocol = _rollout_protocol(config, records)
    return RunResult(name, "rollout", config, protocol, records, summarize_searches(records), folder)


def trajectory_as_search(trajectory: dict[str, Any]) -> dict[str, Any]:
    """A rollout trajectory as a search record: one candidate per turn, always selected."""
    turns = [
        {
            "candidates": [
                {
                    "reply": turn.get("reply", ""),
                    "program": turn.get("program", ""),
                    "public_passed": bool((turn.get("public") or {}).get("passed")),
                    "correct": bool(turn.get("correct")),
                    "score": None,
                    "completion_tokens": turn.get("completion_tokens") or 0,
                }
            ],
            "selected": 0,
            "feedback": turn.get("feedback"),
        }
        for turn in trajectory["turns"]
    ]
    solved = bool(trajectory.get("solved_public"))
    return {
        "problem_id": trajectory["problem_id"],
        "search": trajectory.get("rollout", 0),
        "selector": "none",
        "n": 1,
        "max_turns": trajectory.get("max_turns", len(turns)),
        "turns": turns,
        "solved_public": solved,
        "answer_turn": len(turns) if solved else None,
        "correct": bool(trajectory.get("correct")),
        "completion_tokens": trajectory.get("completion_tokens") or 0,
        "tokens_saved": None,  # a rollout does not measure what its early stop saved
        "generate_s": trajectory.get("generate_s"),
        "wall_s": None,
    }


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


def answer_correct_at(record: dict[str, Any], t: int) -> bool:
    """Whether a search's answer by turn t is correct: the program selected at turn
    min(t, last turn run). A search that stopped early (public pass) keeps its answer."""
    turns = record["turns"]
    if not turns:
        return False
    turn = turns[min(t, len(turns)) - 1]
    return bool(turn["candidates"][turn["selected"]]["correct"])


def summarize_searches(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The summary.json numbers of a list of search records (see RunResult.summary); the same
    definitions as `mucode.search.summarize_searches`, which writes summary.json."""
    records = list(records)
    if not records:
        raise ValueError("summarize_searches needs at least one search record")
    max_turns = max(r.get("max_turns", len(r["turns"])) for r in records)
    by_search: dict[int, list[bool]] = defaultdict(list)
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_search[record["search"]].append(bool(record["correct"]))
        by_problem[record["problem_id"]].append(record)
    accuracy = spread(sum(c) / len(c) for c in by_search.values())
    return {
        "problems": len(by_problem),
        "searches": len(records),  # (problem, search) pairs, as in mucode.search's summary.json
        "accuracy": _mean(r["correct"] for r in records),
        "accuracy_by_turn": [_mean(answer_correct_at(r, t) for r in records) for t in range(1, max_turns + 1)],
        "accuracy_spread": {
            "mean": accuracy.mean,
            "std": _finite_or_none(accuracy.std),
            "ci95_low": _finite_or_none(accuracy.ci95[0]),
            "ci95_high": _finite_or_none(accuracy.ci95[1]),
            "n": accuracy.n,
        },
        "public_pass_rate": _mean(r["solved_public"] for r in records),
        "any_of_s_accuracy": _mean(any(r["correct"] for r in group) for group in by_problem.values()),
        "pass_at_k": first_turn_pass_at_k(by_problem, max(r.get("n", 1) for r in records)),
        "completion_tokens": sum(r.get("completion_tokens") or 0 for r in records),
        "tokens_saved": _sum_or_none(r.get("tokens_saved") for r in records),
        "wall_s": _sum_or_none(r.get("wall_s") for r in records),
    }


def first_turn_pass_at_k(by_problem: dict[str, list[dict[str, Any]]], n: int) -> dict[str, float]:
    """Unbiased pass@1 and pass@N of the first-turn candidates, pooled over a problem's searches
    (the single-turn sampling baseline). A k no problem has enough samples for is left out."""
    samples = [sum(len(r["turns"][0]["candidates"]) for r in group if r["turns"]) for group in by_problem.values()]
    correct = [sum(bool(c["correct"]) for r in group if r["turns"] for c in r["turns"][0]["candidates"]) for group in by_problem.values()]
    result = {}
    for k in sorted({1, n}):
        if min(samples) >= k:
            result[str(k)] = mean_pass_at_k(samples, correct, k)
    return result


def _mean(values: Iterable[Any]) -> float:
    values = [bool(v) for v in values]
    return sum(values) / len(values)


def _sum_or_none(values: Iterable[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------ i/o


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    return data


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete lines only: the last line of a run still writing may be cut."""
    text = path.read_text(encoding="utf-8")
    records = []
    for number, line in enumerate(text[: text.rfind("\n") + 1].splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            raise ValueError(f"{path}: line {number} is not JSON ({err})") from None
    return records


def _check_search_records(path: Path, records: list[dict[str, Any]]) -> None:
    for number, record in enumerate(records, 1):
        missing = [k for k in SEARCH_KEYS if k not in record] if isinstance(record, dict) else list(SEARCH_KEYS)
        if missing:
            raise ValueError(f"{path}: record {number} is not a search record (missing {', '.join(missing)})")
