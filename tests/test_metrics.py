"""pass@k against hand values and brute force; accuracy by turn; spread over repeated runs."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from mucode.episode import Episode
from mucode.metrics import (
    Spread,
    accuracy_by_turn,
    bootstrap_ci,
    compare_runs,
    mcnemar_exact,
    mean_pass_at_k,
    pass_at_k,
    spread,
    summarize_records,
    t_quantile_975,
)
from mucode.types import AssertTest, ExecResult, Problem, Status, Verdict


# ------------------------------------------------------------------------------------ pass@k


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (2, 1, 1, 0.5),
        (10, 3, 1, 0.3),  # pass@1 = c / n
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (10, 0, 5, 0.0),
        (5, 4, 2, 1.0),  # n - c < k: every pair holds a correct sample
        (3, 3, 3, 1.0),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def _brute_force(n: int, c: int, k: int) -> Fraction:
    """Fraction of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


def test_pass_at_k_matches_brute_force():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(_brute_force(n, c, k)), abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n, c, k", [(200, 100, 50), (1000, 1, 1), (1000, 3, 100), (500, 499, 10)])
def test_pass_at_k_stable_for_large_n(n, c, k):
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9)


def test_pass_at_k_is_vectorised():
    out = pass_at_k([10, 10, 5], [3, 0, 2], 1)
    assert out.shape == (3,)
    np.testing.assert_allclose(out, [0.3, 0.0, 0.4])
    np.testing.assert_allclose(pass_at_k(5, np.array([0, 2, 5]), 2), [0.0, 0.7, 1.0])  # scalar n broadcasts
    assert mean_pass_at_k([10, 10, 5], [3, 0, 2], 1) == pytest.approx((0.3 + 0.0 + 0.4) / 3)


@pytest.mark.parametrize(
    "n, c, k, match",
    [
        (5, 6, 1, "0 <= c <= n"),
        (5, -1, 1, "0 <= c <= n"),
        (5, 2, 0, "k=0"),
        (3, 1, 4, "k=4 but only n=\\[3\\]"),
        ([10, 2], [1, 1], 3, "index \\[1\\]"),
        (5.0, 2, 1, "integers"),
    ],
)
def test_pass_at_k_rejects_bad_input(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


# --------------------------------------------------------------------------- accuracy by turn

PROBLEM = Problem(
    id="p",
    source="test",
    prompt="Write f().",
    public_tests=(AssertTest("assert f() == 1"),),
    private_tests=(AssertTest("assert f() + 1 == 2"),),
)


def _res(passed: bool) -> ExecResult:
    return ExecResult(verdicts=(Verdict(Status.PASSED if passed else Status.FAILED),))


def _episode(*turns: tuple[bool, bool], max_turns: int = 3) -> Episode:
    """An episode from recorded (public passed, private passed) outcomes, one per turn."""
    episode = Episode(PROBLEM, max_turns=max_turns)
    for public, private in turns:
        episode.record(f"attempt {len(episode.turns)}", _res(public), _res(private))
    return episode


def test_accuracy_by_turn_hand_computed():
    episodes = [
        _episode((True, True)),  # solved at turn 1
        _episode((False, False), (True, True)),  # fixed at turn 2
        _episode((False, False), (False, False), (False, False)),  # never
        _episode((True, False)),  # passes public at turn 1, wrong on private: stops, stays wrong
        _episode((False, True), (False, False), (True, True)),  # private pass but public fail at turn 1: not correct
    ]
    np.testing.assert_allclose(accuracy_by_turn(episodes), [1 / 5, 2 / 5, 3 / 5])
    np.testing.assert_allclose(accuracy_by_turn(episodes, max_turns=5), [1 / 5, 2 / 5, 3 / 5, 3 / 5, 3 / 5])


def test_accuracy_by_turn_needs_private_every_turn():
    episode = Episode(PROBLEM, max_turns=2)
    episode.record("a", _res(False), None)  # private not run on a non-final turn
    episode.record("b", _res(True), _res(True))
    with pytest.raises(ValueError, match="run_private='every_turn'"):
        accuracy_by_turn([episode])


def test_accuracy_by_turn_rejects_unfinished_and_empty():
    with pytest.raises(ValueError, match="not done"):
        accuracy_by_turn([_episode((False, False))])
    with pytest.raises(ValueError, match="at least one"):
        accuracy_by_turn([])


# ---------------------------------------------------------------------------------- spread


def test_spread_hand_computed():
    result = spread([1.0, 2.0, 3.0])
    half = 4.3027 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * std / sqrt(n)
    assert result.mean == 2.0 and result.std == pytest.approx(1.0) and result.n == 3
    assert result.ci95 == pytest.approx((2.0 - half, 2.0 + half))


def test_spread_of_identical_runs_has_zero_width():
    assert spread([0.5] * 10) == Spread(0.5, 0.0, (0.5, 0.5), 10)


def test_spread_single_run_is_nan():
    result = spread([0.4])
    assert result.mean == 0.4 and math.isnan(result.std) and all(math.isnan(x) for x in result.ci95)
    with pytest.raises(ValueError, match="at least one"):
        spread([])


@pytest.mark.parametrize(
    "df, expected",
    [(1, 12.7062), (9, 2.2622), (30, 2.0423), (31, 2.0395), (40, 2.0211), (60, 2.0003), (120, 1.9799), (10**6, 1.96)],
)
def test_t_quantile(df, expected):
    assert t_quantile_975(df) == pytest.approx(expected, abs=1e-4)


# ------------------------------------------------------------------ correctness, intervals, pairs


def _record(pid: str, search: int, public: bool, private: bool) -> dict:
    candidate = {"public_passed": public, "correct": public and private, "private_passed": private}
    return {"problem_id": pid, "search": search, "max_turns": 1, "turns": [{"candidates": [candidate], "selected": 0}],
            "solved_public": public, "completion_tokens": 0}  # fmt: skip


def test_an_answer_that_fails_the_public_test_is_not_correct_even_if_it_passes_the_private_ones():
    summary = summarize_records(
        [_record("a", 0, public=False, private=True), _record("b", 0, public=True, private=True)]
    )
    assert summary["accuracy"] == 0.5 and summary["private_only_accuracy"] == 1.0


def test_records_stored_under_the_private_only_rule_are_judged_on_all_tests():
    old = _record("a", 0, public=False, private=True)
    old["turns"][0]["candidates"][0].update(correct=True)  # the old rule stored the private verdict
    del old["turns"][0]["candidates"][0]["private_passed"]
    summary = summarize_records([old])
    assert summary["accuracy"] == 0.0 and summary["private_only_accuracy"] is None


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_bootstrap_interval_over_problems():
    low, high = bootstrap_ci([1.0, 0.0])  # resampled means are 0, 0.5 or 1
    assert (low, high) == (0.0, 1.0)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    low, high = bootstrap_ci([1.0] * 50 + [0.0] * 50)  # sd of the mean = 0.05 -> about +-0.098
    assert 0.38 < low < 0.42 and 0.58 < high < 0.62


def test_paired_comparison_counts_discordant_pairs():
    a = [_record(p, 0, True, True) for p in "abcdef"] + [_record("g", 0, False, False)]
    b = [_record(p, 0, False, False) for p in "abcdef"] + [_record("g", 0, True, True)]
    c = compare_runs(a, b)
    assert (c.problems, c.pairs, c.a_only, c.b_only) == (7, 7, 6, 1)
    assert c.difference == pytest.approx(5 / 7) and c.p_value == pytest.approx(2 * 8 / 128)
    assert c.ci95[0] > 0 and c.ci95[1] <= 1.0
