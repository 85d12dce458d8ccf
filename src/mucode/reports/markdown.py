"""report.md: the results table, accuracy by turn, the plots and the evaluation protocol."""

from __future__ import annotations

from typing import Any, Sequence

from mucode.metrics import compare_runs
from mucode.reports.plots import PlotOutcome
from mucode.reports.runs import STOPPING_RULE, RunResult


DASH = "—"


def _percent(value: Any) -> str:
    return DASH if value is None else f"{100 * value:.1f}"


def _cell(value: Any) -> str:
    return DASH if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _count(value: Any) -> str:
    return DASH if value is None else f"{round(value):,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {rest:02d}s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# ------------------------------------------------------------------------------------- results

METRIC_DEFINITIONS = (
    "Accuracy: fraction of problems whose answer passes all their tests (public and private), "
    "averaged over the S searches, with its 95% interval over problems [low, high] (percentile "
    "bootstrap, problems resampled). ± over S: half-width of the Student-t interval of the mean "
    "over the S search indices: the spread between repeated searches, not an interval over "
    "problems (— when S = 1). Turn-1: the same for the answer after one turn. Public pass: fraction of searches that "
    "ended on a program passing the public tests. Any of S: fraction of problems solved by at "
    "least one of their searches. pass@1 / pass@N: unbiased pass@k of the first-turn "
    "candidates, pooled over a problem's searches (the single-turn sampling baseline). Tokens: "
    "generated tokens of every candidate; tokens saved: what early stopping did not have to "
    "generate (not measured for rollouts)."
)
RESULT_HEADER = (
    "Method", "Model", "N", "Selector", "Turns", "Accuracy % [95% CI over problems]", "± over S", "Turn-1 %", "Public pass %",
    "Any of S %", "pass@1 %", "pass@N %", "Tokens", "Tokens saved", "Wall time",
)  # fmt: skip


def _accuracy_cell(run: RunResult) -> str:
    mean, (low, high) = run.accuracy_with_ci()
    return f"{100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _spread_cell(run: RunResult) -> str:
    half = run.search_spread()
    return DASH if half is None else f"{100 * half:.1f}"


def result_row(run: RunResult) -> list[str]:
    summary = run.summary
    pass_at = summary.get("pass_at_k") or {}
    return [
        _cell(run.name), _cell(run.model), str(run.n), _cell(run.selector), str(run.max_turns),
        _accuracy_cell(run), _spread_cell(run), _percent(summary["accuracy_by_turn"][0]), _percent(summary.get("public_pass_rate")),
        _percent(summary.get("any_of_s_accuracy")), _percent(pass_at.get("1")),
        _percent(pass_at.get(str(run.n))) if run.n > 1 else DASH,
        _count(summary.get("completion_tokens")), _count(summary.get("tokens_saved")),
        _duration(summary.get("wall_s")),
    ]  # fmt: skip


def _results_section(runs: Sequence[RunResult]) -> list[str]:
    lines = ["## Results", ""]
    lines += _table(RESULT_HEADER, [result_row(run) for run in runs])
    lines += ["", METRIC_DEFINITIONS, "", "### Accuracy by turn (%)", ""]
    turns = max(len(run.summary["accuracy_by_turn"]) for run in runs)
    rows = []
    for run in runs:
        by_turn = run.summary["accuracy_by_turn"]
        rows.append([_cell(run.name)] + [_percent(by_turn[t]) if t < len(by_turn) else DASH for t in range(turns)])
    lines += _table(["Method"] + [f"t = {t}" for t in range(1, turns + 1)], rows)
    return lines + [""] + _comparisons_section(runs)


COMPARISON_DEFINITIONS = (
    "A − B: mean over the problems both runs ran of the difference in per-problem accuracy, with "
    "its 95% paired-bootstrap interval (problems resampled). McNemar: exact two-sided p-value on "
    "the (problem, search index) outcomes both runs have; A only / B only count the pairs only "
    "one of them got right."
)
COMPARISON_HEADER = ("A", "B", "Problems", "A − B (points) [95% CI]", "Pairs", "A only", "B only", "McNemar p")


def comparison_rows(runs: Sequence[RunResult]) -> list[list[str]]:
    """One row per pair of runs that share problems."""
    rows = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if not {r["problem_id"] for r in a.records} & {r["problem_id"] for r in b.records}:
                continue
            c = compare_runs(a.records, b.records)
            diff = f"{100 * c.difference:+.1f} [{100 * c.ci95[0]:+.1f}, {100 * c.ci95[1]:+.1f}]"
            counts = [str(c.pairs), str(c.a_only), str(c.b_only), f"{c.p_value:.3g}"]
            rows.append([_cell(a.name), _cell(b.name), str(c.problems), diff, *counts])
    return rows


def _comparisons_section(runs: Sequence[RunResult]) -> list[str]:
    rows = comparison_rows(runs)
    if not rows:
        return []
    return ["### Paired comparisons", ""] + _table(COMPARISON_HEADER, rows) + ["", COMPARISON_DEFINITIONS, ""]


# --------------------------------------------------------------------------------------- plots


def _plots_section(plots: Sequence[PlotOutcome]) -> list[str]:
    lines = ["## Plots", ""]
    for plot in plots:
        if plot.file is not None:
            lines += [f"### {plot.title}", "", f"![{plot.title}]({plot.file})", ""]
        else:
            lines += [f"- {plot.title}: skipped ({plot.skipped}).", ""]
    return lines


# ------------------------------------------------------------------------------------ protocol

STOPPING_STATEMENT = (
    f"- **Stopping rule**: a search stops at the {STOPPING_RULE} (or after its last turn); that "
    "program is the answer. Stopping never depends on the private tests, and the model never "
    "sees their results: feedback comes from the public tests only."
)
CORRECTNESS_STATEMENT = (
    "- **Correctness**: an answer is correct iff it passes all of the problem's tests, public and "
    "private (the paper's rule)."
)
SELECTION_STATEMENT = (
    "- **Selection** never sees private test results, except the `oracle` selector, which picks "
    "by the private tests and is an upper bound, not a method."
)
REPEATS_STATEMENT = (
    "- **Repeats**: every problem was searched S times (the Searches column); N = 1 means one "
    "candidate per turn, so there is nothing to select (greedy when the temperature is 0)."
)
PROTOCOL_HEADER = (
    "Method", "Problems", "Public / private tests", "N", "Selector", "Verifier", "Temperature",
    "top_p", "Turns", "Timeout per test (s)", "Searches",
)  # fmt: skip


def protocol_row(run: RunResult) -> list[str]:
    p = run.protocol
    keys = (
        "problems",
        "public_private_rule",
        "n",
        "selector",
        "verifier",
        "temperature",
        "top_p",
        "turns",
        "timeout_s",
        "searches",
    )
    return [_cell(run.name)] + [_cell(p.get(key)) for key in keys]


def _protocol_section(runs: Sequence[RunResult]) -> list[str]:
    lines = ["## Protocol", ""]
    lines += _table(PROTOCOL_HEADER, [protocol_row(run) for run in runs])
    oracle = [run.name for run in runs if run.selector == "oracle"]
    used = f"Runs using it: {', '.join(oracle)}." if oracle else "No run here uses it."
    lines += ["", STOPPING_STATEMENT, CORRECTNESS_STATEMENT, f"{SELECTION_STATEMENT} {used}", REPEATS_STATEMENT]
    if any(run.kind == "rollout" for run in runs):
        lines.append(
            "- **Rollout runs** (selector `none`): each trajectory counts as one search with N = 1; "
            "it stops at the first program that passes the public tests."
        )
    statements: dict[str, list[str]] = {}
    for run in runs:
        if run.protocol.get("stated_public_private_rule"):
            statements.setdefault(run.protocol["stated_public_private_rule"], []).append(run.name)
    for statement, names in statements.items():
        lines.append(
            f"- **Public / private tests** as stated by {', '.join(map(_cell, names))} (run.json): {_cell(statement)}."
        )
    usual = {STOPPING_RULE, "first program that passes the public tests"}
    for run in runs:
        if run.protocol.get("stopping_rule") not in usual:
            lines.append(
                f"- **{_cell(run.name)}** states its stopping rule as: {_cell(run.protocol.get('stopping_rule'))}."
            )
    return lines + [""]


# ------------------------------------------------------------------------------------- sources


def _source_line(run: RunResult) -> str:
    origin = (
        "numbers from summary.json"
        if run.summary_source == "summary.json"
        else f"numbers recomputed from the records ({'no summary.json yet, or a stale one' if run.kind == 'search' else 'rollout folder'})"
    )
    return (
        f"- **{_cell(run.name)}**: {run.kind} folder `{run.folder}`, {run.summary['problems']} problems × "
        f"{run.repeats} searches ({len(run.records)} records); {origin}."
    )


def render_report(runs: Sequence[RunResult], plots: Sequence[PlotOutcome]) -> str:
    lines = ["# mucode report", "", f"{len(runs)} run(s): {', '.join(run.name for run in runs)}.", ""]
    lines += _results_section(runs)
    lines += _plots_section(plots)
    lines += _protocol_section(runs)
    lines += ["## Sources", ""] + [_source_line(run) for run in runs] + [""]
    return "\n".join(lines)
