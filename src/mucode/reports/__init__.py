"""Reports: a Markdown table and PNG plots from search, rollout and pipeline folders; models are
never re-run.

    mucode report runs/bon-n5 runs/greedy --out reports/mbpp --names "µCode + BoN,µCode"
    write_report(["runs/bon-n5"])          # -> runs/bon-n5/report/report.md

Inputs (docs/reports.md): a search folder (searches.jsonl from `mucode search`), a rollout folder
(trajectories.jsonl from `mucode rollout`; each trajectory is a search with N = 1 and selector
"none"), or a pipeline folder whose eval/<method>/ sub-folders are either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mucode.reports.markdown import render_report
from mucode.reports.plots import PlotOutcome, draw_plots
from mucode.reports.runs import (
    RunResult,
    find_run_folders,
    load_run,
    load_runs,
    summarize_searches,
    trajectory_as_search,
)


__all__ = [
    "PlotOutcome", "RunResult", "default_report_dir", "find_run_folders", "load_run", "load_runs",
    "render_report", "summarize_searches", "trajectory_as_search", "write_report",
]  # fmt: skip


def default_report_dir(run_dirs: Sequence[str | Path]) -> Path:
    """DIR/report for one folder; several folders need an explicit place."""
    if len(run_dirs) != 1:
        raise ValueError(f"got {len(run_dirs)} run folders; say where the report goes with --out REPORT_DIR")
    return Path(run_dirs[0]) / "report"


def write_report(
    run_dirs: str | Path | Sequence[str | Path], out_dir: str | Path | None = None, names: Sequence[str] | None = None
) -> Path:
    """Write out_dir/report.md and its PNG plots for the runs in `run_dirs` (out_dir defaults to
    DIR/report for a single folder); returns the path of report.md."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("write_report needs at least one run folder")
    out = Path(out_dir) if out_dir is not None else default_report_dir(run_dirs)
    runs = load_runs(run_dirs, names)
    out.mkdir(parents=True, exist_ok=True)
    plots = draw_plots(runs, out)
    from mucode.reports.viewer import VIEW_FILE, page_html

    (out / VIEW_FILE).write_text(page_html(runs), encoding="utf-8")
    path = out / "report.md"
    path.write_text(render_report(runs, plots) + VIEW_SECTION, encoding="utf-8")
    return path


VIEW_SECTION = """
## Trajectories

Every search and rollout of these runs, turn by turn (kept program, feedback, the other candidates
with their verifier scores and verdicts), filterable by outcome and turns: [view.html](view.html)
(a static page; open it from disk).
"""
