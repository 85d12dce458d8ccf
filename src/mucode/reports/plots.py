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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


def _style(index: int) -> dict[str, Any]:
    """A distinct colour, marker and line style per series, so that overlapping lines stay apart."""
    return {
        "color": f"C{index % 10}",
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": LINESTYLES[index % len(LINESTYLES)],
    }


def accuracy_limits(values: Sequence[float], margin: float = 5.0) -> tuple[float, float]:
    """A y-range (percent) fitted to the plotted values and their intervals, inside [0, 100]."""
    low, high = max(0.0, min(values) - margin), min(100.0, max(values) + margin)
    return (low, high) if high > low else (max(0.0, low - 1.0), min(100.0, low + 1.0))


def short_model(model: str) -> str:
    """A model name for legends: the last path part, without a GGUF file's extension."""
    name = model.rstrip("/").split("/")[-1]
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


def _interval(run: RunResult) -> tuple[float, float, float]:
    """(accuracy, distance down, distance up) in percent, from the interval over problems."""
    mean, (low, high) = run.accuracy_with_ci()
    return 100 * mean, 100 * max(mean - low, 0.0), 100 * max(high - mean, 0.0)


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
    plotted: list[float] = []
    for index, run in enumerate(runs):
        by_turn = [100 * a for a in run.summary["accuracy_by_turn"]]
        offset = 0.04 * (index - (len(runs) - 1) / 2)  # equal curves stay visible side by side
        axes.plot([t + 1 + offset for t in range(len(by_turn))], by_turn, label=run.name, **_style(index))
        plotted += by_turn
    axes.set(xlabel="turn", ylabel="accuracy by turn (%)", title="Accuracy by turn", ylim=accuracy_limits(plotted))
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend()
    _save(figure, path)
    return None


def _series_label(run: RunResult, several_models: bool) -> str:
    """The selector (greedy runs, N = 1 at temperature 0, are their own series), with the short
    model name when several models are plotted."""
    label = "greedy" if run.n == 1 and run.protocol.get("temperature") == 0 else run.selector
    return f"{label} ({short_model(run.model)})" if several_models else label


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
    plotted: list[float] = []
    for index, (label, group) in enumerate(series.items()):
        group = sorted(group, key=lambda r: r.n)
        points = [_interval(r) for r in group]
        offset = 1.0 + 0.03 * (index - (len(series) - 1) / 2)  # multiplicative: the x axis is log 2
        style = _style(index)
        if label.startswith("greedy"):
            style.update(marker="*", markersize=12, linestyle="none")
        axes.errorbar(
            [r.n * offset for r in group], [p[0] for p in points],
            yerr=[[p[1] for p in points], [p[2] for p in points]], capsize=3, label=label, **style,
        )  # fmt: skip
        plotted += [p[0] - p[1] for p in points] + [p[0] + p[2] for p in points]
    axes.set_xscale("log", base=2)
    axes.set(
        xlabel="N (candidates per turn)",
        ylabel="accuracy (%), 95% CI over problems",
        title="Accuracy against N, by selector",
        ylim=accuracy_limits(plotted),
    )
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
            mean, down, up = _interval(run)
            name = f"{run.selector}\n{run.name}" if run.selector in shared else run.selector
            labels.append(f"{name}\nN={n}")
            heights.append(mean)
            errors.append((down, up))
            positions.append(x)
            x += 1.0
        x += 0.6  # a gap between the groups of different N
    figure = _figure(max(6.4, 1.1 * len(labels)), 4.2)
    axes = figure.add_subplot()
    yerr = [[e[0] for e in errors], [e[1] for e in errors]]
    bars = axes.bar(positions, heights, yerr=yerr, capsize=3, color=[f"C{i % 10}" for i in range(len(labels))])
    axes.bar_label(bars, fmt="%.1f", label_type="center")
    axes.set_xticks(positions, labels)
    top = min(100.0, max(h + e[1] for h, e in zip(heights, errors)) + 5.0)
    axes.set(ylabel="accuracy (%), 95% CI over problems", title="Selector comparison at equal N", ylim=(0.0, top))
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
