"""How a program's standard output is compared with the expected output, per benchmark.

lines          mucode's rule: equal line by line once each line's trailing whitespace and the
               trailing blank lines are dropped
codecontests   DeepMind's CodeContests checker (execution/tester_sandboxer.cc, OutputsMatch):
               whitespace-separated tokens, lower-cased; equal, or the same number of tokens
               where each pair is equal as strings, or (both numbers, one with a fraction)
               within 1e-5 of each other, or (both integers) equal as integers
livecodebench  LiveCodeBench's grade_stdio: the whole text stripped, split into lines, each
               line stripped; the same number of lines, each equal, or equal as lists of
               decimal numbers (Decimal("1.0") == Decimal("1.00"), no tolerance)
apps           part of APPS's cascade: lines stripped and blank lines dropped; each line equal,
               or its whitespace tokens equal, or all tokens numbers within numpy.allclose's
               defaults (rel 1e-5, abs 1e-8). APPS's order-insensitive (set) fallbacks are
               not applied.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Callable


CODECONTESTS_TOLERANCE = 1e-5
APPS_REL_TOL, APPS_ABS_TOL = 1e-5, 1e-8


def normalised_lines(text: str) -> list[str]:
    """Lines without trailing whitespace, trailing blank lines dropped (the `lines` rule)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _lines_match(expected: str, actual: str) -> bool:
    return normalised_lines(expected) == normalised_lines(actual)


def _as_int(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def _as_float(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _codecontests_values_match(expected: str, actual: str) -> bool:
    exp_int, act_int = _as_int(expected), _as_int(actual)
    exp_float, act_float = _as_float(expected), _as_float(actual)
    if exp_float is None or act_float is None:
        return expected == actual
    if exp_int is not None and act_int is not None:
        return exp_int == act_int
    return abs(exp_float - act_float) < CODECONTESTS_TOLERANCE


def _codecontests_match(expected: str, actual: str) -> bool:
    exp_tokens, act_tokens = expected.lower().split(), actual.lower().split()
    if exp_tokens == act_tokens:
        return True
    if len(exp_tokens) != len(act_tokens):
        return False
    return all(_codecontests_values_match(e, a) for e, a in zip(exp_tokens, act_tokens))


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except InvalidOperation:
        return None


def _livecodebench_match(expected: str, actual: str) -> bool:
    exp_lines = [line.strip() for line in expected.strip().split("\n")]
    act_lines = [line.strip() for line in actual.strip().split("\n")]
    if len(exp_lines) != len(act_lines):
        return False
    for exp_line, act_line in zip(exp_lines, act_lines):
        if exp_line == act_line:
            continue
        exp_numbers, act_numbers = _decimals(exp_line), _decimals(act_line)
        if exp_numbers is None or act_numbers is None or exp_numbers != act_numbers:
            return False
    return True


def _apps_line_match(expected: str, actual: str) -> bool:
    if expected == actual or expected.split() == actual.split():
        return True
    exp_tokens, act_tokens = expected.split(), actual.split()
    if len(exp_tokens) != len(act_tokens):
        return False
    pairs = [(_as_float(e), _as_float(a)) for e, a in zip(exp_tokens, act_tokens)]
    if any(e is None or a is None for e, a in pairs):
        return False
    return all(abs(a - e) <= APPS_ABS_TOL + APPS_REL_TOL * abs(e) for e, a in pairs)  # numpy.isclose


def _apps_match(expected: str, actual: str) -> bool:
    exp_lines = [line.strip() for line in expected.split("\n") if line.strip()]
    act_lines = [line.strip() for line in actual.split("\n") if line.strip()]
    if len(exp_lines) != len(act_lines):
        return False
    return all(_apps_line_match(e, a) for e, a in zip(exp_lines, act_lines))


COMPARE_MODES: dict[str, Callable[[str, str], bool]] = {
    "lines": _lines_match,
    "codecontests": _codecontests_match,
    "livecodebench": _livecodebench_match,
    "apps": _apps_match,
}


def outputs_match(expected: str, actual: str, compare: str = "lines") -> bool:
    """Whether `actual` stdout is accepted for `expected` under the rule `compare` (see above)."""
    try:
        rule = COMPARE_MODES[compare]
    except KeyError:
        raise ValueError(f"unknown output comparison {compare!r}; choose one of {', '.join(COMPARE_MODES)}") from None
    return rule(expected.replace("\r\n", "\n"), actual.replace("\r\n", "\n"))
