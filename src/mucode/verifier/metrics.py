"""How good a verifier is: ranking (pairwise accuracy, ROC-AUC), calibration, and Best-of-N
selection accuracy with its exact random and oracle baselines.

    pairwise_accuracy([2.0, 0.1], [1.0, 0.1])          # 0.75: ties count one half
    roc_auc(scores, labels)                             # Mann-Whitney form, ties count one half
    calibration(probabilities, labels, bins=10)         # ECE, Brier score, reliability table
    best_of_n(scores, labels, n=4)                      # exact expected accuracy of picking the top
                                                        # of a uniformly random n-subset

Best-of-N on stored candidates: a problem has R candidates (e.g. the first turns of its R
trajectories, which are i.i.d. samples from the same state). Drawing n of them uniformly without
replacement and keeping the highest-scored one (ties broken at random) is correct with
probability sum_i w_i * y_i, where candidates are sorted by score, best first, and
w_i = C(R-1-i, n-1) / C(R, n) is the chance that candidate i is the best of the subset; inside a
group of tied scores every label is replaced by the group's mean. Random selection is correct
with probability mean(y) for every n; the oracle with 1 - C(R-c, n) / C(R, n) (pass@n).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs with chosen > rejected; a tie counts one half. NaN for no pairs."""
    c, r = np.asarray(chosen, dtype=float), np.asarray(rejected, dtype=float)
    if c.shape != r.shape:
        raise ValueError(f"got {c.size} chosen and {r.size} rejected scores; pass one of each per pair")
    if c.size == 0:
        return float("nan")
    return float(np.mean((c > r) + 0.5 * (c == r)))


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve = P(score of a random positive > that of a random negative),
    ties one half (midranks). NaN when one class is missing."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _midranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=float)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


# ----------------------------------------------------------------------------------- calibration


@dataclass
class ReliabilityBin:
    """Predictions with probability in [low, high): how many, their mean, the share correct."""

    low: float
    high: float
    count: int
    mean_probability: float
    fraction_correct: float


@dataclass
class Calibration:
    """ece: sum over bins of (count / n) * |fraction_correct - mean_probability| (equal-width
    bins); brier: mean (p - y)^2; bins: the reliability table (empty bins left out)."""

    ece: float
    brier: float
    n: int
    bins: list[ReliabilityBin] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def sigmoid(x: Sequence[float]) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def calibration(probabilities: Sequence[float], labels: Sequence[bool], bins: int = 10) -> Calibration:
    """Expected calibration error, Brier score and reliability bins of predicted probabilities."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=float)
    if bins < 1:
        raise ValueError(f"got bins={bins}; it must be >= 1")
    if p.size == 0:
        return Calibration(ece=float("nan"), brier=float("nan"), n=0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)  # p = 1.0 goes to the last bin
    table, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        mean_p, frac = float(p[mask].mean()), float(y[mask].mean())
        ece += mask.sum() / p.size * abs(frac - mean_p)
        table.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), int(mask.sum()), mean_p, frac))
    return Calibration(ece=float(ece), brier=float(np.mean((p - y) ** 2)), n=int(p.size), bins=table)


# ------------------------------------------------------------------------------------ Best-of-N


def best_of_n(scores: Sequence[float], labels: Sequence[bool], n: int) -> float:
    """Exact expected correctness of the top-scored candidate of a uniformly random n-subset
    (ties broken uniformly at random); see the module docstring."""
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    r = s.size
    _check_n(n, r)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order].copy()
    for value in np.unique(s_sorted):  # ties: each tied position holds the group's mean label
        tied = s_sorted == value
        y_sorted[tied] = y_sorted[tied].mean()
    weights = np.array([math.comb(r - 1 - i, n - 1) for i in range(r)], dtype=float) / math.comb(r, n)
    return float(weights @ y_sorted)


def random_selection(labels: Sequence[bool]) -> float:
    """Expected correctness of a uniformly random pick (the same for every n)."""
    return float(np.mean(np.asarray(labels, dtype=float)))


def oracle_selection(labels: Sequence[bool], n: int) -> float:
    """Probability that a uniformly random n-subset holds a correct candidate (pass@n)."""
    y = np.asarray(labels, dtype=bool)
    _check_n(n, y.size)
    c = int(y.sum())
    return 1.0 - math.comb(y.size - c, n) / math.comb(y.size, n)


def _check_n(n: int, r: int) -> None:
    if not 1 <= n <= r:
        raise ValueError(f"got n={n} for {r} candidates; n must be in 1..{r}")


@dataclass
class BestOfNPoint:
    """Selection accuracy at one n, averaged over the problems with at least n candidates.

    margin_se: standard error over problems of (verifier - random); a margin larger than about
    two of them is unlikely to be noise from the choice of problems (not of training seeds).
    """

    n: int
    problems: int
    verifier: float
    random: float
    oracle: float
    margin_se: float


def best_of_n_curve(
    groups: Sequence[tuple[Sequence[float], Sequence[bool]]], max_n: int | None = None
) -> list[BestOfNPoint]:
    """Best-of-N accuracy for n = 1..max_n (default: the largest group) over problems, each a
    (scores, labels) group; a problem enters the average at n only if it has >= n candidates."""
    sizes = [len(s) for s, _ in groups]
    top = max(sizes, default=0) if max_n is None else max_n
    points = []
    for n in range(1, top + 1):
        eligible = [(s, y) for s, y in groups if len(s) >= n]
        if not eligible:
            break
        verifier = np.array([best_of_n(s, y, n) for s, y in eligible])
        rand = np.array([random_selection(y) for _, y in eligible])
        oracle = np.array([oracle_selection(y, n) for _, y in eligible])
        diff = verifier - rand
        se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("nan")
        points.append(
            BestOfNPoint(n, len(eligible), float(verifier.mean()), float(rand.mean()), float(oracle.mean()), se)
        )
    return points
