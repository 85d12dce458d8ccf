"""The final metrics of a rollout, search or pipeline evaluation, sent where `--report-to` says:
TensorBoard (event files under OUT/runs/) and W&B, the trainers' switch (`FinetuneConfig.report_to`).

    report_metrics("tensorboard", "runs/eval", summary, tag="search")   # scalars search/accuracy, ...

Every number of the summary becomes one scalar: nested mappings are joined with "/", lists are
indexed from 1 (accuracy_by_turn/1 is turn 1), booleans and strings are left out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from mucode.config import report_targets


def scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) summary, flattened to "a/b/1" keys."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(scalars(value, name))
        elif isinstance(value, (list, tuple)):
            flat.update(scalars({str(i): v for i, v in enumerate(value, 1)}, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def report_metrics(
    report_to: str, out: str | Path, metrics: Mapping[str, Any], *, tag: str, step: int = 0
) -> list[str]:
    """Send `metrics` under `tag` to every target of `report_to`; returns the targets used."""
    targets = report_targets(report_to)
    values = scalars(metrics, tag)
    out = Path(out)
    if "tensorboard" in targets:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "runs" / tag))
        for name, value in values.items():
            writer.add_scalar(name, value, step)
        writer.close()
    if "wandb" in targets:
        import wandb

        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "mucode"), name=str(out), dir=str(out), reinit="create_new"
        )
        run.log(values, step=step)
        run.finish()
    return targets
