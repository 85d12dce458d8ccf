"""The PNG plots of a report, drawn with matplotlib's Agg canvas (no pyplot, no display).

Each `plot_*(runs, path)` draws into `path` and returns None, or returns the one-line reason the
plot does not apply to these runs and draws nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mucode.reports.runs import RunResult


@dataclass(frozen=True)
class PlotOutcome:
    """One plot of the report: the file it was written to, or why it was skipped."""

    title: str
    file: str | None
    skipped: str | None = None


# A 95% interval over few searches can reach past 0-100%; the axes stay on the possible range.
ACCURACY_LIMITS = (0.0, 105.0)


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> None:
    figure.savefig(path, dpi=120)


def plot_accuracy_by_turn(runs: Sequence[RunResult], path: Path) -> str | None:
    figure = _figure()
    axes = figure.add_subplot()
    for run in runs:
        by_turn = [100 * a for a in run.summary["accuracy_by_turn"]]
        axes.plot(range(1, len(by_turn) + 1), by_turn, marker="o", label=run.name)
    axes.set(xlabel="turn", ylabel="accuracy by turn (%)", title="Accuracy by turn", ylim=ACCURACY_LIMITS)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend()
    _save(figure, path)
    return None


def _series_label(run: RunResult, several_models: bool) -> str:
    return f"{run.selector} ({run.model})" if several_models else run.selector


def plot_accuracy_against_n(runs: Sequence[RunResult], path: Path) -> str | None:
    sizes = sorted({run.n for run in runs})
    if len(sizes) < 2:
        return f"every run uses N = {sizes[0]}"
    several_models = len({run.model for run in runs}) > 1
    series: dict[str, list[RunResult]] = defaultdict(list)
    for run in runs:
        series[_series_label(run, several_models)].append(run)
    figure = _figure()
    axes = figure.add_subplot()
    for label, group in series.items():
        group = sorted(group, key=lambda r: r.n)
        points = [r.accuracy_with_ci() for r in group]
        axes.errorbar(
            [r.n for r in group], [100 * mean for mean, _ in points],
            yerr=[100 * (half or 0.0) for _, half in points], marker="o", capsize=3, label=label,
        )  # fmt: skip
    axes.set(xlabel="N (candidates per turn)", ylabel="accuracy (%)", title="Accuracy against N, by selector", ylim=ACCURACY_LIMITS)
    axes.set_xticks(sizes)
    axes.legend()
    _save(figure, path)
    return None


def plot_selectors(runs: Sequence[RunResult], path: Path) -> str | None:
    by_n: dict[int, list[RunResult]] = defaultdict(list)
    for run in runs:
        by_n[run.n].append(run)
    compared = {n: group for n, group in sorted(by_n.items()) if len({r.selector for r in group}) > 1}
    if not compared:
        return "no N has runs with two or more selectors"
    labels, heights, errors, positions = [], [], [], []
    x = 0.0
    for n, group in compared.items():
        shared = {r.selector for r in group if sum(o.selector == r.selector for o in group) > 1}
        for run in group:
            mean, half = run.accuracy_with_ci()
            name = f"{run.selector}\n{run.name}" if run.selector in shared else run.selector
            labels.append(f"{name}\nN={n}")
            heights.append(100 * mean)
            errors.append(100 * (half or 0.0))
            positions.append(x)
            x += 1.0
        x += 0.6  # a gap between the groups of different N
    figure = _figure(max(6.4, 1.1 * len(labels)), 4.2)
    axes = figure.add_subplot()
    bars = axes.bar(positions, heights, yerr=errors, capsize=3, color=[f"C{i % 10}" for i in range(len(labels))])
    axes.bar_label(bars, fmt="%.1f", label_type="center")
    axes.set_xticks(positions, labels)
    axes.set(ylabel="accuracy (%)", title="Selector comparison at equal N", ylim=ACCURACY_LIMITS)
    _save(figure, path)
    return None


def candidate_scores(run: RunResult) -> tuple[list[float], list[float]]:
    """Verifier scores of every candidate of every turn: (of correct ones, of incorrect ones)."""
    correct, incorrect = [], []
    for record in run.records:
        for turn in record["turns"]:
            for candidate in turn["candidates"]:
                if candidate.get("score") is not None:
                    (correct if candidate.get("correct") else incorrect).append(float(candidate["score"]))
    return correct, incorrect


def plot_verifier_scores(runs: Sequence[RunResult], path: Path) -> str | None:
    scored = [(run, *candidate_scores(run)) for run in runs]
    scored = [item for item in scored if item[1] or item[2]]
    if not scored:
        return "no candidate carries a verifier score"
    columns = min(3, len(scored))
    rows = -(-len(scored) // columns)
    figure = _figure(4.2 * columns, 3.4 * rows)
    for index, (run, correct, incorrect) in enumerate(scored, 1):
        axes = figure.add_subplot(rows, columns, index)
        values = correct + incorrect
        bins = _bins(min(values), max(values))
        axes.hist(incorrect, bins=bins, alpha=0.6, color="C3", label=f"incorrect ({len(incorrect)})")
        axes.hist(correct, bins=bins, alpha=0.6, color="C2", label=f"correct ({len(correct)})")
        axes.set(xlabel="verifier score", ylabel="candidates", title=run.name)
        axes.legend(fontsize="small")
    figure.suptitle("Verifier scores of correct and incorrect candidates")
    _save(figure, path)
    return None


def _bins(low: float, high: float, count: int = 20) -> list[float]:
    if high <= low:  # every score equal: one bin around it
        return [low - 0.5, high + 0.5]
    step = (high - low) / count
    return [low + i * step for i in range(count + 1)]


PlotFunction = Callable[[Sequence[RunResult], Path], "str | None"]
PLOTS: tuple[tuple[str, str, PlotFunction], ...] = (
    ("accuracy_by_turn.png", "Accuracy by turn", plot_accuracy_by_turn),
    ("accuracy_vs_n.png", "Accuracy against N", plot_accuracy_against_n),
    ("selectors.png", "Selector comparison", plot_selectors),
    ("verifier_scores.png", "Verifier score distributions", plot_verifier_scores),
)


def draw_plots(runs: Sequence[RunResult], out_dir: Path) -> list[PlotOutcome]:
    """Every plot that applies, written into out_dir; the others skipped with their reason. A
    stale PNG of a skipped plot is removed so that the folder matches report.md."""
    outcomes = []
    for file, title, plot in PLOTS:
        path = out_dir / file
        skipped = plot(runs, path)
        if skipped is not None:
            path.unlink(missing_ok=True)
        outcomes.append(PlotOutcome(title, None if skipped else file, skipped))
    return outcomes
