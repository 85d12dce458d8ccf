"""Config of generator training (`mucode generator train`): a plain dataclass whose defaults are
the paper's SFT hyperparameters (METHOD.md §2: lr 5e-7, 2 epochs, 16 sequences per update, full
fine-tune), plus presets that are short diffs over them.

    config = generator_config("cpu", "train.yaml", {"data": ["runs/sft0.jsonl"]})   # preset < file < flags
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

Finetune = Literal["full", "lora"]
MixedPrecision = Literal["no", "bf16", "fp16"]


@dataclass
class GeneratorTrainConfig:
    """Parameters of `mucode generator train` (saved as OUT/config.yaml).

    Parameters that control the data:
        data: SFT files (JSONL or Parquet of prompt/completion rows, `mucode generator relabel`);
            several files are concatenated (the union of the iterations' data).
        max_length: tokens per example; longer examples are left out (and counted), never cut, so
            that every trained completion keeps its end-of-turn token.
    Parameters that control the model:
        model (base: preset, hub id or folder), init_from (warm start from this checkpoint instead
        of the base, e.g. the previous iteration's generator), dtype, finetune (full | lora),
        lora_r, lora_alpha, lora_dropout, lora_target_modules
    Parameters that control training:
        learning_rate, epochs, max_steps, batch_size (sequences per optimizer update, over all
        processes), micro_batch_size (per process and forward pass), lr_scheduler, warmup,
        weight_decay, mixed_precision, gradient_checkpointing, seed
    Parameters that control outputs:
        out, save_steps, save_total_limit, logging_steps, report_to
    """

    data: list[str] = field(default_factory=list, metadata={"help": "SFT files of prompt/completion rows (from `mucode generator relabel`); several are concatenated (--data a b, or a,b)."})
    out: str = field(default="runs/generator", metadata={"help": "Output folder: checkpoints, final model (OUT/model), logs."})
    model: str = field(default="smollm2-135m", metadata={"help": "Base causal LM: a preset, hub id or local Hugging Face folder."})
    init_from: str | None = field(default=None, metadata={"help": "Warm start: load the weights from this folder instead of --model (the paper restarts from the base)."})
    dtype: str = field(default="float32", metadata={"help": "Dtype the weights are loaded in.", "choices": ["float32", "bfloat16", "float16", "float64"]})
    finetune: Finetune = field(default="full", metadata={"help": "full: every weight (paper); lora: LoRA adapters, merged into OUT/model at the end.", "choices": ["full", "lora"]})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (finetune=lora)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (finetune=lora)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (finetune=lora)."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules: 'all-linear' or comma-separated module names."})
    max_length: int = field(default=1024, metadata={"help": "Most tokens per example (prompt + completion); longer examples are left out."})
    learning_rate: float = field(default=5e-7, metadata={"help": "Peak learning rate (AdamW)."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the training data."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer updates (-1: from epochs)."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per optimizer update, over all processes."})
    micro_batch_size: int = field(default=4, metadata={"help": "Sequences per process and forward pass; gradient accumulation makes up the rest."})
    lr_scheduler: str = field(default="linear", metadata={"help": "Learning-rate schedule (a transformers scheduler name).", "choices": ["linear", "cosine", "constant", "constant_with_warmup"]})
    warmup: float = field(default=0.0, metadata={"help": "Warmup updates, or a fraction of all updates if < 1."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    mixed_precision: MixedPrecision = field(default="no", metadata={"help": "Mixed precision: no | bf16 | fp16 (GPU).", "choices": ["no", "bf16", "fp16"]})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in the backward pass (less memory, ~20% slower)."})
    seed: int = field(default=0, metadata={"help": "Seeds the data order, LoRA initialisation and dropout."})
    save_steps: int = field(default=100, metadata={"help": "Save a resumable checkpoint every this many updates (and at the end)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (the oldest are deleted)."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every this many updates."})
    report_to: str = field(default="tensorboard", metadata={"help": "Loggers, comma-separated: tensorboard, wandb (set WANDB_PROJECT), none."})

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size", "micro_batch_size", "save_steps", "save_total_limit", "logging_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"got {name}={getattr(self, name)}; it must be >= 1")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"got batch_size={self.batch_size} and micro_batch_size={self.micro_batch_size}; batch_size must be a "
                "multiple of micro_batch_size (times the number of processes) so that every update sees the same amount of data"
            )
        if self.learning_rate <= 0 or self.epochs <= 0:
            raise ValueError(f"got learning_rate={self.learning_rate}, epochs={self.epochs}; both must be > 0")

    def report_targets(self) -> list[str]:
        """`report_to` as the list transformers expects."""
        targets = [t.strip() for t in self.report_to.split(",") if t.strip()]
        return [] if targets in ([], ["none"]) else targets


# Short diffs over the defaults (the paper's hyperparameters). Starting points, not tuned results.
PRESETS: dict[str, dict[str, Any]] = {
    # Paper scale on GPUs (METHOD.md §2): Llama-3.2-1B-Instruct, full fine-tune, lr 5e-7, 2 epochs, 16 sequences/update.
    "paper": {"model": "meta-llama/Llama-3.2-1B-Instruct", "mixed_precision": "bf16", "gradient_checkpointing": True},
    # Two CPU cores: smollm2-135m fully fine-tuned on a few hundred examples. The paper's rate
    # moves a 135M model too little in the ~40 updates such a run makes.
    "cpu": {"model": "smollm2-135m", "learning_rate": 2e-5, "epochs": 1.0, "batch_size": 8, "micro_batch_size": 4, "save_steps": 25, "logging_steps": 5},
}


def generator_config(preset: str | None = None, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> GeneratorTrainConfig:
    """Defaults, then the preset, then the YAML file, then `overrides` (unset values skipped)."""
    from mucode.config import load_config

    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return load_config(GeneratorTrainConfig, path, overrides, base=PRESETS[preset] if preset else None)
