"""Config of generator training (`mucode generator train`): the fine-tuning base
(`mucode.finetune.FinetuneConfig`, whose defaults are the paper's SFT hyperparameters, METHOD.md
§2: lr 5e-7, 2 epochs, 16 sequences per update, full fine-tune) plus the SFT data, and presets
that are short diffs over them.

    config = generator_config("cpu", "train.yaml", {"data": ["runs/sft0.jsonl"]})   # preset < file < flags
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mucode.config import option
from mucode.finetune import FinetuneConfig


@dataclass
class GeneratorTrainConfig(FinetuneConfig):
    """Parameters of `mucode generator train` (saved as OUT/config.yaml); the shared ones are
    described in `FinetuneConfig`.

    Parameters that control the data:
        data: SFT files (JSONL or Parquet of prompt/completion rows, `mucode generator relabel`);
            several files are concatenated (the union of the iterations' data).
        max_length: tokens per example; a longer example loses its oldest attempts, and is left out
            if still too long, never cut, so that every trained completion keeps its end-of-turn token.
    Parameters that control the model:
        init_from: warm start from this checkpoint instead of the base `model`, e.g. the previous
            iteration's generator. finetune=lora adapters are merged into OUT/model at the end.
    """

    out: str = option("runs/generator", "Output folder: checkpoints, final model (OUT/model, LoRA merged), logs.")
    max_length: int = option(
        1024,
        "Most tokens per example (prompt + completion); longer examples lose their oldest "
        "attempts, else are left out.",
    )
    data: list[str] = option(
        help="SFT files of prompt/completion rows (from `mucode generator relabel`); several are "
        "concatenated (--data a b, or a,b).",
        factory=list,
    )
    init_from: str | None = option(
        None, "Warm start: load the weights from this folder instead of --model (the paper restarts from the base)."
    )


# Short diffs over the defaults (the paper's hyperparameters). Starting points, not tuned results.
PRESETS: dict[str, dict[str, Any]] = {
    # Paper scale on GPUs (METHOD.md §2): Llama-3.2-1B-Instruct, full fine-tune, lr 5e-7, 2 epochs, 16 sequences/update.
    "paper": {"model": "meta-llama/Llama-3.2-1B-Instruct", "mixed_precision": "bf16", "gradient_checkpointing": True},
    # Two CPU cores: smollm2-135m fully fine-tuned on a few hundred examples. The paper's rate
    # moves a 135M model too little in the ~40 updates such a run makes.
    "cpu": {
        "model": "smollm2-135m",
        "learning_rate": 2e-5,
        "epochs": 1.0,
        "batch_size": 8,
        "micro_batch_size": 4,
        "save_steps": 25,
        "logging_steps": 5,
    },
}


def generator_config(
    preset: str | None = None, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> GeneratorTrainConfig:
    """Defaults, then the preset, then the YAML file, then `overrides` (unset values skipped)."""
    from mucode.config import load_config

    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return load_config(GeneratorTrainConfig, path, overrides, base=PRESETS[preset] if preset else None)
