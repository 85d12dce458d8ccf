"""`mucode generator relabel | train | grpo`: SFT data from stored trajectories, generator training on
it, and the GRPO baseline (a thin layer over mucode.training).

Also runnable as a module, which is what `accelerate launch` needs:

    accelerate launch --config_file $(python -m mucode.verifier.launch zero3) -m mucode generator train ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import click

from mucode.cli.options import build_config, config_options, preset_option, say_trained
from mucode.training.config import PRESETS, GeneratorTrainConfig, generator_config
from mucode.training.grpo import GRPOTrainConfig
from mucode.training.relabel import RelabelConfig


RELABEL_EXAMPLES = """
\b
Examples:
  mucode generator relabel --trajectories runs/it0 --verifier runs/v0 --out runs/sft0.jsonl
  mucode generator relabel --trajectories runs/it0 runs/it1 --verifier runs/v1 --top-m 3 --out runs/sft1.jsonl
  mucode generator relabel --trajectories runs/it0 --method multi-star --out runs/mstar0.jsonl
  mucode generator relabel --trajectories runs/it0 --scores runs/it0/scores.jsonl --unsolved keep --out runs/sft0.jsonl
Several folders (iterations) are relabeled together: the expert is chosen over all of them.
"""

TRAIN_EXAMPLES = """
\b
Examples:
  mucode generator train --data runs/sft0.jsonl --preset cpu --out runs/g0
  mucode generator train --data runs/sft0.jsonl runs/sft1.jsonl --preset cpu --lora --out runs/g1
  mucode generator train --config generator.yaml --learning-rate 1e-5      # flags override the file
  accelerate launch --config_file $(python -m mucode.verifier.launch zero3) \\
      -m mucode generator train --preset paper --data runs/sft1.jsonl --out runs/g1
Rerun the same command to resume from the last checkpoint; --overwrite starts over.
The final model is OUT/model: pass it to `mucode rollout --model OUT/model`.
"""


GRPO_EXAMPLES = """
\b
Examples:
  mucode generator grpo --model smollm2-135m --problems mbpp:train --limit 64 --lora --out runs/grpo
  mucode generator grpo --model qwen2.5-coder-0.5b --num-generations 8 --batch-size 16 --max-steps 50 --out runs/grpo
The reward is the real sandbox on each problem's public tests; `rewards/correct` (all tests) is
logged only. Rerun the same command to resume; the final model is OUT/model, as for `train`.
"""


def _gather(flags: dict[str, Any], name: str, more: Sequence[str]) -> None:
    """--NAME a,b c d -> [a, b, c, d]: commas split, extra values after the flag are appended."""
    value = flags.get(name)
    parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value or [])
    parts += list(more)
    flags[name] = parts or None


@click.group("generator")
def generator() -> None:
    """Relabel trajectories into SFT data (µCode expert, STaR, Multi-STaR) and train the generator; GRPO baseline."""


@generator.command("relabel", epilog=RELABEL_EXAMPLES)
@click.argument("more", nargs=-1, metavar="[DIR]...")
@config_options(RelabelConfig)
def relabel_command(more: tuple[str, ...], config_file: Path | None, **flags: Any) -> int:
    """Turn rollout folders into SFT examples (TRL prompt/completion JSONL)."""
    from mucode.training.relabel import run_relabel

    _gather(flags, "trajectories", more)
    _gather(flags, "scores", ())
    config = build_config(RelabelConfig, config_file, flags)
    if not config.trajectories:
        raise click.UsageError("pass --trajectories DIR [DIR ...]: rollout folders written by `mucode rollout`")
    stats = run_relabel(config)
    click.echo(stats.describe())
    click.echo(f"wrote {config.out}")
    return 0


@generator.command("train", epilog=TRAIN_EXAMPLES)
@click.argument("more", nargs=-1, metavar="[FILE]...")
@preset_option(PRESETS)
@click.option("--lora", is_flag=True, default=False, help="Shorthand for --finetune lora.")
@click.option("--overwrite", is_flag=True, default=False, help="Delete OUT and start over instead of resuming.")
@config_options(GeneratorTrainConfig)
def train_command(
    more: tuple[str, ...], preset: str | None, lora: bool, overwrite: bool, config_file: Path | None, **flags: Any
) -> int:
    """SFT the generator on relabeled data with TRL's SFTTrainer."""
    from mucode.training.sft import train_generator

    _gather(flags, "data", more)
    if lora:
        if flags.get("finetune") not in (None, "lora"):
            raise click.UsageError(f"--lora conflicts with --finetune {flags['finetune']}; keep one of them")
        flags["finetune"] = "lora"
    try:
        config = generator_config(preset, config_file, flags)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if not config.data:
        raise click.UsageError("pass --data FILE.jsonl [FILE ...]: SFT files written by `mucode generator relabel`")
    result = train_generator(config, overwrite=overwrite, say=click.echo)
    say_trained(result)
    return 0


@generator.command("grpo", epilog=GRPO_EXAMPLES)
@click.option("--lora", is_flag=True, default=False, help="Shorthand for --finetune lora.")
@click.option("--overwrite", is_flag=True, default=False, help="Delete OUT and start over instead of resuming.")
@config_options(GRPOTrainConfig)
def grpo_command(lora: bool, overwrite: bool, config_file: Path | None, **flags: Any) -> int:
    """Online RL baseline: TRL's GRPOTrainer, single turn, rewarded by the sandbox's public tests."""
    from mucode.training.grpo import train_grpo

    if lora:
        if flags.get("finetune") not in (None, "lora"):
            raise click.UsageError(f"--lora conflicts with --finetune {flags['finetune']}; keep one of them")
        flags["finetune"] = "lora"
    config = build_config(GRPOTrainConfig, config_file, flags)
    result = train_grpo(config, overwrite=overwrite, say=click.echo)
    say_trained(result)
    return 0
