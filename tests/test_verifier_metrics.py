"""Verifier metrics on constructed inputs: pairwise accuracy, ROC-AUC, calibration, and
Best-of-N against brute-force enumeration (subsets x random tie-breaks)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from mucode.metrics import pass_at_k
from mucode.verifier.metrics import (
    best_of_n,
    best_of_n_curve,
    calibration,
    oracle_selection,
    pairwise_accuracy,
    random_selection,
    roc_auc,
)


def test_pairwise_accuracy_counts_ties_as_half():
    assert pairwise_accuracy([2.0, 0.1], [1.0, 0.1]) == 0.75
    assert math.isnan(pairwise_accuracy([], []))


def test_roc_auc_by_hand_and_with_ties():
    # positive/negative pairs: (.9>.8) (.9>.1) (.3<.8) (.3>.1) -> 3 of 4
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]) == 0.75
    assert roc_auc([1.0, 1.0], [1, 0]) == 0.5
    assert roc_auc([0.0, 1.0], [1, 0]) == 0.0
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_roc_auc_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))


def test_calibration_by_hand():
    # bin [0, .5): p = .2, .2 with labels 0, 1 -> |.5 - .2| = .3 ; bin [.5, 1]: p = .9, 1.0 with 1, 1 -> |1 - .95| = .05
    cal = calibration([0.2, 0.2, 0.9, 1.0], [0, 1, 1, 1], bins=2)
    assert cal.ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.05)
    assert cal.brier == pytest.approx((0.04 + 0.64 + 0.01 + 0.0) / 4)
    assert [(b.count, b.mean_probability, b.fraction_correct) for b in cal.bins] == [
        (2, pytest.approx(0.2), 0.5),
        (2, pytest.approx(0.95), 1.0),
    ]
    assert calibration([0.3] * 10, [1] * 3 + [0] * 7).ece == pytest.approx(0.0)


def brute_force_best_of_n(scores, labels, n):
    """Average over every n-subset and every order of the tied scores of the top pick's label."""
    r = len(scores)
    total, count = 0.0, 0
    for tie_break in itertools.permutations(range(r)):
        rank = {i: (-scores[i], tie_break.index(i)) for i in range(r)}
        for subset in itertools.combinations(range(r), n):
            total += labels[min(subset, key=rank.get)]
            count += 1
    return total / count


def test_best_of_n_worked_example():
    # subsets of 2 of (3: wrong, 2: right, 1: right): {3,2} -> wrong, {3,1} -> wrong, {2,1} -> right
    assert best_of_n([3.0, 2.0, 1.0], [0, 1, 1], 2) == pytest.approx(1 / 3)
    assert best_of_n([3.0, 2.0, 1.0], [0, 1, 1], 1) == pytest.approx(2 / 3)  # n = 1 is a random pick
    assert best_of_n([3.0, 2.0, 1.0], [0, 1, 1], 3) == 0.0  # n = R: the top candidate


@pytest.mark.parametrize("seed", range(8))
def test_best_of_n_equals_brute_force_with_ties(seed):
    rng = random.Random(seed)
    r = rng.randint(2, 5)
    scores = [float(rng.randint(0, 2)) for _ in range(r)]
    labels = [rng.random() < 0.5 for _ in range(r)]
    for n in range(1, r + 1):
        assert best_of_n(scores, labels, n) == pytest.approx(brute_force_best_of_n(scores, labels, n))


def test_random_and_oracle_baselines():
    labels = [1, 0, 0, 1, 0]
    assert random_selection(labels) == 0.4
    for n in range(1, 6):
        assert oracle_selection(labels, n) == pytest.approx(float(pass_at_k(5, 2, n)))
    with pytest.raises(ValueError, match="n=6 for 5 candidates"):
        oracle_selection(labels, 6)


def test_best_of_n_curve_perfect_and_inverted_verifiers():
    groups_labels = [[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1]]
    perfect = [([float(y) for y in ys], ys) for ys in groups_labels]
    inverted = [([-float(y) for y in ys], ys) for ys in groups_labels]
    curve = best_of_n_curve(perfect)
    assert [p.n for p in curve] == [1, 2, 3, 4] and [p.problems for p in curve] == [4, 4, 4, 3]
    for point in curve:
        assert point.verifier == pytest.approx(point.oracle)  # a perfect verifier picks as the oracle does
    assert curve[0].verifier == pytest.approx(curve[0].random)  # n = 1: no choice
    worst = best_of_n_curve(inverted)
    assert worst[-1].verifier < worst[-1].random < worst[-1].oracle
