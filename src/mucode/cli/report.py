"""`mucode report`: a Markdown table and PNG plots from search, rollout or pipeline folders."""

from __future__ import annotations

from pathlib import Path

import click


EXAMPLES = """
\b
Examples:
  mucode report runs/bon-n5                                   # -> runs/bon-n5/report/report.md
  mucode report runs/greedy runs/bon-n5 runs/bon-n5-pt --out reports/mbpp --names greedy,bon,bon-pt
  mucode report runs/pipeline                                 # one row per runs/pipeline/eval/<method>/
"""


@click.command("report", epilog=EXAMPLES)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: DIR/report for a single DIR; required for several).",
)
@click.option(
    "--names", default=None, help="Comma-separated method names, one per run in order (default: folder names)."
)
def report_command(run_dirs: tuple[Path, ...], out_dir: Path | None, names: str | None) -> int:
    """Write REPORT_DIR/report.md (results table, accuracy by turn, protocol) and its plots."""
    from mucode.reports import write_report

    name_list = [part.strip() for part in names.split(",")] if names is not None else None
    if name_list is not None and not all(name_list):
        raise click.UsageError(f"--names {names!r} holds an empty name; write a,b,c with one name per run")
    path = write_report(list(run_dirs), out_dir, name_list)
    click.echo(f"wrote {path}")
    return 0


VIEW_EXAMPLES = """
\b
Examples:
  mucode view runs/bon-n5 --out runs/bon-n5/view.html
  mucode view runs/demo --out demo.html          # every eval/<method>/ run of a pipeline folder
"""


@click.command("view", epilog=VIEW_EXAMPLES)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The HTML file to write."
)
@click.option("--names", default=None, help="Comma-separated run names, one per run in order (default: folder names).")
def view_command(run_dirs: tuple[Path, ...], out_path: Path, names: str | None) -> int:
    """Write a static HTML page of every search/rollout of the runs, turn by turn (opens from disk)."""
    from mucode.reports.viewer import write_view

    name_list = [part.strip() for part in names.split(",")] if names is not None else None
    click.echo(f"wrote {write_view(list(run_dirs), out_path, name_list)}")
    return 0
