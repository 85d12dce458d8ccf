"""`mucode rollout`: collect multi-turn trajectories (resumable: rerun the same command)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mucode.cli.options import build_config, config_options
from mucode.rollouts import RolloutConfig


EXAMPLES = """
\b
Examples:
  mucode rollout --model smollm2-135m --problems humaneval --rollouts 1 --temperature 0 --out runs/he-greedy
  mucode rollout --model qwen2.5-coder-0.5b --problems mbpp:train --problems-path ../shared/data/mbpp \\
      --rollouts 15 --turns 3 --temperature 0.7 --out runs/mbpp-train
  mucode rollout --backend openai --base-url http://127.0.0.1:8000/v1 --model my-served-model ...
  mucode rollout --backend openai --base-url http://node1:8000/v1,http://node2:8000/v1 --routing least-loaded ...
  mucode rollout --ray auto --model qwen2.5-coder-0.5b --problems mbpp:train --rollouts 15 --out runs/mbpp-train
"""


@click.command("rollout", epilog=EXAMPLES)
@config_options(RolloutConfig)
def rollout_command(config_file: Path | None, **flags: Any) -> int:
    """Collect R trajectories of up to T turns per problem into OUT/trajectories.jsonl."""
    from mucode.rollouts import run_rollouts, write_summary

    config = build_config(RolloutConfig, config_file, flags)
    if config.ray:  # the caller chooses: the engine knows nothing of Ray
        from mucode.scaling.ray_rollouts import run_rollouts_on_ray

        stats = run_rollouts_on_ray(config)
    else:
        stats = run_rollouts(config)
    summary = write_summary(config)
    click.echo(
        f"{summary['trajectories']} trajectories over {summary.get('problems', 0)} problems in {config.out} "
        f"(this run: {stats.trajectories} in {stats.wall_s:.1f} s, {stats.tokens_per_s:.0f} generated tokens/s)"
    )
    if summary["trajectories"]:
        by_turn = ", ".join(f"t{t}={a:.1%}" for t, a in enumerate(summary["accuracy_by_turn"], 1))
        click.echo(f"correct {summary['correct']:.1%}  accuracy by turn: {by_turn}")
    return 0
