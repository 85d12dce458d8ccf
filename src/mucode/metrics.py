"""Evaluation numbers: unbiased pass@k, accuracy by turn, the one summary of search records,
intervals over problems, paired comparisons, and the spread over repeated runs.

    pass_at_k(n=[10, 10], c=[3, 0], k=1)      # array([0.3, 0.0]), one value per problem
    accuracy_by_turn(episodes)                # array([acc@1, acc@2, acc@3])
    summarize_records(records)                # the numbers of summary.json (search, rollout, report)
    summarize_trajectories(trajectories)      # summary.json of a rollout folder (the same numbers)
    bootstrap_ci(per_problem)                 # 95% interval of the mean over problems
    compare_runs(records_a, records_b)        # paired difference, its interval, exact McNemar p
    spread([51.0, 50.2, 52.3])                # Spread(mean=51.17, std=1.06, ci95=(48.53, 53.8), n=3)

Correctness (METHOD.md §3, the paper's rule): an answer is correct iff it passes ALL of the
problem's tests, public and private. A stored candidate's all-tests verdict is
`public_passed and correct`: records written before this rule stored the private-only verdict in
`correct`, and for records written since, `correct` already implies `public_passed`, so the one
expression is right for both (`candidate_correct`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np


if TYPE_CHECKING:
    from mucode.episode import Episode


# ------------------------------------------------------------------------------------ pass@k


def pass_at_k(n: int | Sequence[int] | np.ndarray, c: int | Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Unbiased pass@k per problem (Chen et al. 2021, eq. 1), in the numerically stable form
    1 - prod_{i=n-c+1}^{n} (1 - k / i).

    n: samples drawn per problem, c: how many of them are correct (scalars or one per problem).
    Returns a float array of shape (n_problems,) (shape () for scalar inputs).
    Raises ValueError when c > n, c < 0, k < 1, or k > n for some problem: with fewer than k
    samples pass@k is not estimable, and silently returning 1.0 or 0.0 would bias the mean.
    """
    n_arr, c_arr = np.broadcast_arrays(np.asarray(n), np.asarray(c))
    _check_pass_at_k(n_arr, c_arr, k)
    out = np.array([_pass_at_k_one(int(ni), int(ci), k) for ni, ci in zip(n_arr.ravel(), c_arr.ravel())])
    return out.reshape(n_arr.shape)


def mean_pass_at_k(n: int | Sequence[int] | np.ndarray, c: int | Sequence[int] | np.ndarray, k: int) -> float:
    """pass@k averaged over problems: the number reported in tables."""
    return float(np.mean(pass_at_k(n, c, k)))


def _pass_at_k_one(n: int, c: int, k: int) -> float:
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _check_pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> None:
    if not (np.issubdtype(n.dtype, np.integer) and np.issubdtype(c.dtype, np.integer)):
        raise ValueError(f"n and c must be integers, got dtypes {n.dtype} and {c.dtype}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"got k={k!r}; it must be an integer >= 1")
    if np.any(c < 0) or np.any(c > n):
        bad = np.flatnonzero((c < 0) | (c > n))[:5]
        raise ValueError(f"need 0 <= c <= n for every problem; violated at index {bad.tolist()}")
    if np.any(n < k):
        bad = np.flatnonzero(n < k)[:5]
        raise ValueError(
            f"got k={k} but only n={n.ravel()[bad].tolist()} samples at index {bad.tolist()}; draw at least k samples per problem or lower k"
        )


# ---------------------------------------------------------------------------- accuracy by turn


def accuracy_by_turn(episodes: Iterable[Episode], max_turns: int | None = None) -> np.ndarray:
    """Fraction of episodes whose answer at turn t is correct, for t = 1..max_turns.

    The answer at turn t is the program of the last turn <= t: an episode that stopped at turn s
    (public tests passed) keeps its answer for every t >= s. Pass one episode per problem to get
    the fraction of problems. `max_turns` defaults to the largest `Episode.max_turns`.
    Returns shape (max_turns,). Needs private results on every turn (run_private="every_turn").
    """
    episodes = list(episodes)
    if not episodes:
        raise ValueError("accuracy_by_turn needs at least one episode")
    turns = max_turns if max_turns is not None else max(ep.max_turns for ep in episodes)
    if turns < 1:
        raise ValueError(f"got max_turns={turns}; it must be >= 1")
    correct = np.array(
        [[ep.correct_at(t) for t in range(1, turns + 1)] for ep in episodes], dtype=float
    )  # (n_episodes, turns)
    return correct.mean(axis=0)


# ------------------------------------------------------------------------------ repeated runs


@dataclass(frozen=True)
class Spread:
    """Summary of one metric over repeated runs: mean, sample std (ddof=1) and the 95% confidence
    interval of the mean (Student t). std and the interval are nan for a single run."""

    mean: float
    std: float
    ci95: tuple[float, float]
    n: int


def spread(values: Iterable[float]) -> Spread:
    """Mean, std and 95% interval of the mean of `values` (one value per repeated run)."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        raise ValueError("spread needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return Spread(mean, math.nan, (math.nan, math.nan), 1)
    std = float(x.std(ddof=1))
    half = t_quantile_975(x.size - 1) * std / math.sqrt(x.size)
    return Spread(mean, std, (mean - half, mean + half), int(x.size))


# two-sided 95% Student t critical values t_{0.975, df} for df = 1..30
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: a table up to df = 30, then the Cornish-Fisher expansion around the normal
    quantile (error < 1e-4 there), so no scipy is needed."""
    if df < 1:
        raise ValueError(f"got df={df}; it must be >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


# ------------------------------------------------------------------------ records and summary

PASS_AT_K_VALUES = (1, 2, 5, 10, 20, 50, 100)
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the intervals of a report are reproducible


def candidate_correct(candidate: Mapping[str, Any]) -> bool:
    """The all-tests verdict of one stored candidate (see the module docstring)."""
    return bool(candidate.get("public_passed")) and bool(candidate.get("correct"))


def answer_at(record: Mapping[str, Any], t: int) -> Mapping[str, Any] | None:
    """The candidate a search record answers with by turn t (1-based): the program selected at
    turn min(t, last turn run); a search that stopped at a public pass keeps that answer."""
    turns = record["turns"]
    if not turns:
        return None
    turn = turns[min(t, len(turns)) - 1]
    return turn["candidates"][turn["selected"]]


def record_correct(record: Mapping[str, Any], t: int | None = None) -> bool:
    """Whether a search record's answer (by turn t; the final one when t is None) is correct."""
    answer = answer_at(record, t if t is not None else len(record["turns"]))
    return answer is not None and candidate_correct(answer)


def trajectory_as_record(trajectory: Mapping[str, Any]) -> dict[str, Any]:
    """A rollout trajectory (trajectories.jsonl) as a search record: one candidate per turn, always
    selected, so that one summary serves searches, rollouts and reports."""
    turns = [
        {
            "candidates": [
                {
                    "reply": turn.get("reply", ""),
                    "program": turn.get("program", ""),
                    "public_passed": bool((turn.get("public") or {}).get("passed")),
                    "correct": bool(turn.get("correct")),
                    "private_passed": _private_passed(turn),
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
        "correct": bool(turns) and candidate_correct(turns[-1]["candidates"][0]),
        "completion_tokens": trajectory.get("completion_tokens") or 0,
        "tokens_saved": None,  # a rollout does not measure what its early stop saved
        "generate_s": trajectory.get("generate_s"),
        "wall_s": None,
    }


def _private_passed(turn: Mapping[str, Any]) -> bool | None:
    private = turn.get("private")
    return None if not private else bool(private.get("passed"))


def summarize_records(
    records: Iterable[Mapping[str, Any]], max_turns: int | None = None, ks: Sequence[int] | None = None
) -> dict[str, Any]:
    """The numbers of summary.json from search records (searches.jsonl rows, or trajectories
    through `trajectory_as_record`). The one definition used by `mucode search`, `mucode rollout`
    and `mucode report`.

    accuracy: share of (problem, search) whose final answer passes all tests; accuracy_ci95: its
    95% bootstrap interval over problems (each problem weighted by the mean over its searches);
    accuracy_by_turn[t-1]: the same for the answer by turn t; accuracy_spread: mean, std and
    Student-t interval over the S search indices (the spread between repeated searches, not an
    interval over problems); private_only_accuracy: the final answer passes the private tests
    (records that store it only, else None); pass_at_k: unbiased, from each problem's turn-1
    candidates pooled over its searches, for `ks` (default: PASS_AT_K_VALUES up to N, and k = N).
    """
    rows = [dict(r) for r in records]
    if not rows:
        raise ValueError("summarize_records needs at least one search record")
    turns = max_turns if max_turns is not None else max(r.get("max_turns") or len(r["turns"]) for r in rows)
    if turns < 1:
        raise ValueError(f"got max_turns={turns}; it must be >= 1")
    by_index: dict[int, list[bool]] = {}
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_index.setdefault(row["search"], []).append(record_correct(row))
        by_problem.setdefault(row["problem_id"], []).append(row)
    per_index = spread(sum(v) / len(v) for _, v in sorted(by_index.items()))
    low, high = bootstrap_ci(list(per_problem_accuracy(rows).values()))
    return {
        "problems": len(by_problem),
        "searches": len(rows),
        "accuracy": _share(record_correct(row) for row in rows),
        "accuracy_ci95": {"low": low, "high": high, "over": "problems (bootstrap)"},
        "accuracy_by_turn": [_share(record_correct(row, t) for row in rows) for t in range(1, turns + 1)],
        "accuracy_spread": {
            "mean": per_index.mean,
            "std": _finite(per_index.std),
            "ci95_low": _finite(per_index.ci95[0]),
            "ci95_high": _finite(per_index.ci95[1]),
            "n": per_index.n,
            "over": "search indices",
        },
        "private_only_accuracy": _private_only_accuracy(rows),
        "public_pass_rate": _share(row["solved_public"] for row in rows),
        "any_of_s_accuracy": _share(any(record_correct(r) for r in group) for group in by_problem.values()),
        "pass_at_k": first_turn_pass_at_k(by_problem, ks),
        "completion_tokens": sum(row.get("completion_tokens") or 0 for row in rows),
        "tokens_saved": _sum_or_none(row.get("tokens_saved") for row in rows),
        "wall_s": _sum_or_none([row.get("wall_s") for row in rows], digits=3),
    }


def summarize_searches(
    records: Iterable[Any], max_turns: int | None = None, ks: Sequence[int] | None = None
) -> dict[str, Any]:
    """`summarize_records` of search records given as dicts (searches.jsonl rows) or as objects
    with `to_dict()` (`mucode.search.SearchRecord`): summary.json of `mucode search`."""
    return summarize_records((r.to_dict() if hasattr(r, "to_dict") else r for r in records), max_turns, ks)


def summarize_trajectories(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """summary.json of `mucode rollout`: counts and pass rates of stored trajectories, the numbers
    of `summarize_records` (through `trajectory_as_record`) under the rollout names (`correct` is
    `accuracy`, `solved_public` is `public_pass_rate`), plus the mean number of turns."""
    records = list(records)
    if not records:
        return {"trajectories": 0}
    summary = summarize_records(trajectory_as_record(r) for r in records)
    return {
        "trajectories": len(records),
        "problems": summary["problems"],
        "correct": summary["accuracy"],
        "accuracy_ci95": summary["accuracy_ci95"],
        "solved_public": summary["public_pass_rate"],
        "accuracy_by_turn": summary["accuracy_by_turn"],
        "mean_turns": sum(r["n_turns"] for r in records) / len(records),
        "completion_tokens": summary["completion_tokens"],
    }


def per_problem_accuracy(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """problem id -> the share of its searches whose final answer is correct."""
    outcomes: dict[str, list[bool]] = {}
    for record in records:
        outcomes.setdefault(record["problem_id"], []).append(record_correct(record))
    return {pid: sum(v) / len(v) for pid, v in outcomes.items()}


def first_turn_pass_at_k(
    by_problem: Mapping[str, Sequence[Mapping[str, Any]]], ks: Sequence[int] | None = None
) -> dict[str, float]:
    """Unbiased pass@k of the turn-1 candidates, pooled over a problem's searches (the
    single-turn sampling baseline); k runs over `ks`, by default PASS_AT_K_VALUES up to the
    smallest N, and N. A k above a problem's sample count is an error (`pass_at_k`)."""
    firsts = [[c for r in group if r["turns"] for c in r["turns"][0]["candidates"]] for group in by_problem.values()]
    n_min = min(len(r["turns"][0]["candidates"]) for group in by_problem.values() for r in group if r["turns"])
    samples = [len(f) for f in firsts]
    correct = [sum(candidate_correct(c) for c in f) for f in firsts]
    ks = sorted(ks) if ks else sorted({k for k in PASS_AT_K_VALUES if k <= n_min} | {n_min})
    return {str(k): mean_pass_at_k(samples, correct, k) for k in ks}


def _private_only_accuracy(rows: Sequence[Mapping[str, Any]]) -> float | None:
    answers = [answer_at(row, len(row["turns"])) for row in rows]
    if any(a is None or a.get("private_passed") is None for a in answers):
        return None
    return _share(a["private_passed"] for a in answers)  # type: ignore[index]  # checked above


def _share(values: Iterable[Any]) -> float:
    values = [bool(v) for v in values]
    return sum(values) / len(values)


def _sum_or_none(values: Iterable[Any], digits: int | None = None) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return round(sum(present), digits) if digits is not None else sum(present)


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x  # NaN (a single search index) is not valid JSON


# ------------------------------------------------------------------- intervals and comparisons


def bootstrap_ci(
    values: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `values` (one value per problem):
    problems are resampled with replacement. One value gives (value, value)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)  # (samples,)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedComparison:
    """Run A minus run B on the problems both ran. difference: mean over the shared problems of
    (A's per-problem accuracy - B's); ci95: paired bootstrap over those problems. McNemar pairs
    the (problem, search index) outcomes both runs have: a_only = A correct and B not, b_only the
    reverse; p_value is the exact two-sided binomial test on the discordant pairs."""

    problems: int
    difference: float
    ci95: tuple[float, float]
    pairs: int
    a_only: int
    b_only: int
    p_value: float


def compare_runs(records_a: Iterable[Mapping[str, Any]], records_b: Iterable[Mapping[str, Any]]) -> PairedComparison:
    """Paired comparison of two runs on the same problems (see PairedComparison)."""
    records_a, records_b = list(records_a), list(records_b)
    acc_a, acc_b = per_problem_accuracy(records_a), per_problem_accuracy(records_b)
    shared = sorted(set(acc_a) & set(acc_b))
    if not shared:
        raise ValueError("the two runs share no problem; a paired comparison needs the same problems")
    diffs = [acc_a[p] - acc_b[p] for p in shared]
    outcome_a = {(r["problem_id"], r["search"]): record_correct(r) for r in records_a}
    outcome_b = {(r["problem_id"], r["search"]): record_correct(r) for r in records_b}
    keys = sorted(set(outcome_a) & set(outcome_b))
    a_only = sum(outcome_a[k] and not outcome_b[k] for k in keys)
    b_only = sum(outcome_b[k] and not outcome_a[k] for k in keys)
    return PairedComparison(
        len(shared),
        float(np.mean(diffs)),
        bootstrap_ci(diffs),
        len(keys),
        a_only,
        b_only,
        mcnemar_exact(a_only, b_only),
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b and c:
    min(1, 2 * P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2); 1.0 when b + c = 0."""
    if b < 0 or c < 0:
        raise ValueError(f"got discordant counts {b}, {c}; they must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)
