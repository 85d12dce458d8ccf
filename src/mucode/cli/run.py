"""`mucode run`: the whole method, resumable (re-run the same command to continue)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from mucode.cli.options import preset_option


EXAMPLES = """
\b
Examples:
  mucode run --preset demo --problems-path ../shared/data/mbpp --out runs/demo
  mucode run --preset smoke --problems-path ../shared/data/mbpp --out runs/smoke
  mucode run --preset paper --out runs/paper            # GPUs; see docs/scaling.md
  mucode run --config my-run.yaml --out runs/mine       # any PipelineConfig field (docs/pipeline.md)
  mucode run --config examples/replication.yaml --check # validate, print the stage plan, run nothing
"""


@click.command("run", epilog=EXAMPLES)
@preset_option(["paper", "demo", "smoke"], "Named settings (a YAML --config and flags override them)")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML file of PipelineConfig fields.",
)
@click.option("--out", default=None, help="Run folder (default: runs/<preset>).")
@click.option("--model", default=None, help="Base generator (preset, hub id, local folder, GGUF).")
@click.option("--problems-path", default=None, help="MBPP data file or folder (else $MUCODE_MBPP_PATH, then the hub).")
@click.option("--seed", type=int, default=None, help="Base seed.")
@click.option("--limit", type=int, default=None, help="Seeded subset of this many training problems.")
@click.option("--iterations", type=int, default=None, help="Generator iterations after iteration 0.")
@click.option(
    "--method",
    "methods",
    type=click.Choice(["mucode", "multi-star", "star"]),
    multiple=True,
    help="Generator training data; repeat it to train several methods from one iteration 0.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "hf", "openvino", "openai", "vllm"]),
    default=None,
    help="Generation backend of every rollout and search (the rollout: / search: sections' backend).",
)
@click.option("--base-url", default=None, help="OpenAI server URL (openai backend), every rollout and search.")
@click.option(
    "--ray",
    default=None,
    help="Ray cluster address (auto, HOST:PORT): every rollout stage runs on its actors (the rollout: section's ray).",
)
@click.option("--eval-limit", type=int, default=None, help="Seeded subset of this many problems per evaluation set.")
@click.option(
    "--eval-base/--no-eval-base",
    default=None,
    help="Also evaluate the base generator (default: the config's eval_base, on).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option(
    "--check", is_flag=True, help="Validate the settings (every check made before a model loads), list the stages."
)
def run_command(
    preset: str | None,
    config_file: Path | None,
    out: str | None,
    quiet: bool,
    check: bool,
    methods: tuple[str, ...],
    backend: str | None,
    base_url: str | None,
    ray: str | None,
    **flags: Any,
) -> int:
    """Run µCode end to end: base rollouts, verifier, generator iterations (relabel, SFT,
    rollouts, verifier), then greedy and Best-of-N evaluation and a report."""
    from mucode.pipeline import Pipeline, format_table, pipeline_config, run_pipeline
    from mucode.store import FolderInUse, check_not_in_use

    if preset is None and config_file is None:
        raise click.UsageError("give --preset NAME or --config FILE")
    flags["out"] = out or (f"runs/{preset}" if preset and config_file is None else None)
    if methods:
        flags.update(method=methods[0], methods=list(methods) if len(methods) > 1 else [])
    config = pipeline_config(preset, config_file, flags)
    engine = {k: v for k, v in (("backend", backend), ("base_url", base_url)) if v is not None}
    if engine:
        config = replace(config, rollout={**config.rollout, **engine}, search={**config.search, **engine})
    if ray is not None:
        config = replace(config, rollout={**config.rollout, "ray": ray})
    runner = None
    if config.rollout.get("ray"):  # the caller chooses Ray; the pipeline imports none of it
        from mucode.scaling.ray_rollouts import check_ray_installed, run_rollouts_on_ray

        check_ray_installed()
        runner = run_rollouts_on_ray
    if check:
        pipeline = Pipeline(config, say=lambda message: click.echo(message, err=True), run_rollouts=runner)
        pipeline.preflight()
        click.echo(f"settings valid; the stages of {config.out}:")
        for name in [*pipeline.plan(), "report"]:
            click.echo(f"  {'[done] ' if (pipeline.out / name / '.done.json').is_file() else ''}{name}")
        try:
            check_not_in_use(pipeline.out, "`mucode run`")
        except FolderInUse as running:  # --check still lists the stages: it is how one follows a run
            click.echo(f"note: {running}")
        return 0
    result = run_pipeline(
        config, say=lambda message: click.echo(message, err=True), progress=not quiet, run_rollouts=runner
    )
    total = sum(s.get("seconds", 0) for s in result.stages.values() if not s.get("skipped"))
    click.echo(format_table(result.table))
    click.echo(f"report: {result.report}")
    click.echo(f"this run: {total:.0f} s of stages (per-stage timings in {result.out / 'stages.json'})")
    return 0
