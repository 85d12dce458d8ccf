"""`mucode verifier train | score | eval`: the learned verifier (a thin layer over mucode.verifier).

Also runnable as a module, which is what `accelerate launch` needs:

    accelerate launch --config_file $(python -m mucode.verifier.launch zero3) -m mucode verifier train ...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mucode.cli.options import build_config, config_options, preset_option, say_trained
from mucode.verifier.config import PRESETS, VerifierEvalConfig, VerifierScoreConfig, VerifierTrainConfig, train_config


TRAIN_EXAMPLES = """
\b
Examples:
  mucode verifier train --trajectories runs/mbpp-train --preset cpu --holdout-fraction 0.2 --out runs/v0
  mucode verifier train --trajectories runs/it0,runs/it1 --preset cpu-head --loss bce --out runs/v1
  mucode verifier train --config verifier.yaml --learning-rate 1e-6      # flags override the file
  accelerate launch --config_file $(python -m mucode.verifier.launch zero3) \\
      -m mucode verifier train --preset paper --trajectories runs/it0 --out runs/v-paper
Rerun the same command to resume from the last checkpoint; --overwrite starts over.
"""

SCORE_EXAMPLES = """
\b
Examples:
  mucode verifier score --verifier runs/v0 --input runs/mbpp-test --turns final --out runs/mbpp-test/scores.jsonl
  mucode verifier score --verifier runs/v0/checkpoint-200 --input rows.jsonl --out scored.jsonl
"""

EVAL_EXAMPLES = """
\b
Examples:
  mucode verifier eval --verifier runs/v0                        # the problems its training held out
  mucode verifier eval --verifier runs/v0 --split all --trajectories runs/mbpp-test --json
"""


def _split_folders(flags: dict[str, Any]) -> None:
    """--trajectories a,b,c -> ["a", "b", "c"] (a YAML file gives a list directly)."""
    value = flags.get("trajectories")
    if isinstance(value, str):
        flags["trajectories"] = [part.strip() for part in value.split(",") if part.strip()]


@click.group("verifier")
def verifier() -> None:
    """Train, score with and evaluate the learned verifier R(problem, program)."""


@verifier.command("train", epilog=TRAIN_EXAMPLES)
@preset_option(PRESETS)
@click.option("--overwrite", is_flag=True, default=False, help="Delete OUT and start over instead of resuming.")
@config_options(VerifierTrainConfig)
def train_command(preset: str | None, overwrite: bool, config_file: Path | None, **flags: Any) -> int:
    """Train a verifier on the trajectories of one or more rollout folders."""
    from mucode.verifier.trainer import train_verifier

    _split_folders(flags)
    try:
        config = train_config(preset, config_file, flags)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    result = train_verifier(config, overwrite=overwrite, say=click.echo)
    say_trained(result)
    return 0


@verifier.command("score", epilog=SCORE_EXAMPLES)
@config_options(VerifierScoreConfig)
def score_command(config_file: Path | None, **flags: Any) -> int:
    """Score a rollout folder's turns, or a JSONL file of prompt/completion rows."""
    from mucode.verifier.scoring import score_inputs

    config = build_config(VerifierScoreConfig, config_file, flags)
    if not config.input:
        raise click.UsageError("pass --input: a rollout folder or a JSONL file of prompt/completion rows")
    out, n = score_inputs(config)
    click.echo(f"scored {n} rows into {out}")
    return 0


@verifier.command("eval", epilog=EVAL_EXAMPLES)
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the whole report as JSON.")
@config_options(VerifierEvalConfig)
def eval_command(as_json: bool, config_file: Path | None, **flags: Any) -> int:
    """Pairwise accuracy, ROC-AUC, calibration and Best-of-N selection accuracy."""
    from mucode.verifier.evaluate import evaluate_verifier, format_report

    _split_folders(flags)
    config = build_config(VerifierEvalConfig, config_file, flags)
    report = evaluate_verifier(config, say=None if as_json else click.echo)
    from mucode.verifier.evaluate import json_safe

    click.echo(
        json.dumps(json_safe(report), indent=2)
        if as_json
        else format_report(report) + f"\nreport: {report['written']}"
    )
    return 0
