"""Evaluation numbers: unbiased pass@k, accuracy by turn, mean and spread over repeated runs.

    pass_at_k(n=[10, 10], c=[3, 0], k=1)      # array([0.3, 0.0]), one value per problem
    accuracy_by_turn(episodes)                # array([acc@1, acc@2, acc@3])
    spread([51.0, 50.2, 52.3])                # Spread(mean=51.17, std=1.06, ci95=(48.53, 53.8), n=3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

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
        raise ValueError(f"got k={k} but only n={n.ravel()[bad].tolist()} samples at index {bad.tolist()}; draw at least k samples per problem or lower k")


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
    correct = np.array([[ep.correct_at(t) for t in range(1, turns + 1)] for ep in episodes], dtype=float)  # (n_episodes, turns)
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
