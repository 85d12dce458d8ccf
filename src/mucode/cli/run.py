"""`mucode run`: the whole method, resumable (re-run the same command to continue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

EXAMPLES = """
\b
Examples:
  mucode run --preset demo --problems-path ../shared/data/mbpp --out runs/demo
  mucode run --preset smoke --problems-path ../shared/data/mbpp --out runs/smoke
  mucode run --preset paper --out runs/paper            # GPUs; see docs/scaling.md
  mucode run --config my-run.yaml --out runs/mine       # any PipelineConfig field (docs/pipeline.md)
"""


@click.command("run", epilog=EXAMPLES)
@click.option("--preset", type=click.Choice(["paper", "demo", "smoke"]), default=None, help="Named settings (a YAML --config and flags override them).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="YAML file of PipelineConfig fields.")
@click.option("--out", default=None, help="Run folder (default: runs/<preset>).")
@click.option("--model", default=None, help="Base generator (preset, hub id, local folder, GGUF).")
@click.option("--problems-path", default=None, help="MBPP data file or folder (else $MUCODE_MBPP_PATH, then the hub).")
@click.option("--seed", type=int, default=None, help="Base seed.")
@click.option("--limit", type=int, default=None, help="Seeded subset of this many training problems.")
@click.option("--iterations", type=int, default=None, help="Generator iterations after iteration 0.")
@click.option("--method", type=click.Choice(["mucode", "multi-star", "star"]), default=None, help="Generator training data.")
@click.option("--eval-limit", type=int, default=None, help="Seeded subset of this many problems per evaluation set.")
@click.option("--eval-base/--no-eval-base", default=None, help="Also evaluate the base generator (default: the config's eval_base, on).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run_command(preset: str | None, config_file: Path | None, out: str | None, quiet: bool, **flags: Any) -> int:
    """Run µCode end to end: base rollouts, verifier, generator iterations (relabel, SFT,
    rollouts, verifier), then greedy and Best-of-N evaluation and a report."""
    from mucode.pipeline import format_table, pipeline_config, run_pipeline

    if preset is None and config_file is None:
        raise click.UsageError("give --preset NAME or --config FILE")
    flags["out"] = out or (f"runs/{preset}" if preset and config_file is None else None)
    config = pipeline_config(preset, config_file, flags)
    result = run_pipeline(config, say=lambda message: click.echo(message, err=True), progress=not quiet)
    total = sum(s.get("seconds", 0) for s in result.stages.values() if not s.get("skipped"))
    click.echo(format_table(result.table))
    click.echo(f"report: {result.report}")
    click.echo(f"this run: {total:.0f} s of stages (per-stage timings in {result.out / 'stages.json'})")
    return 0
