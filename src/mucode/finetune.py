"""The fine-tuning base under both trainers (generator SFT in `mucode.training.sft`, the verifier
in `mucode.verifier.trainer`): the config fields they share, and (below) the scaffold around
TRL's trainers. Each trainer keeps only what is its own: its data, its loss, its head.

    class GeneratorTrainConfig(FinetuneConfig): data: list[str] = ...   # plus its own defaults

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MixedPrecision = Literal["no", "bf16", "fp16"]
SCHEDULERS = ["linear", "cosine", "constant", "constant_with_warmup"]
DTYPES = ["float32", "bfloat16", "float16", "float64"]


@dataclass
class FinetuneConfig:
    """The parameters every fine-tuning run has (saved with the rest as OUT/config.yaml).

    Parameters that control the model:
        model (base: preset, hub id or folder), dtype, finetune (full | lora, and more in a
        subclass), lora_r, lora_alpha, lora_dropout, lora_target_modules, max_length (tokens)
    Parameters that control training:
        learning_rate, epochs, max_steps, batch_size (examples per optimizer update, over all
        processes), micro_batch_size (per process and forward pass), lr_scheduler, warmup,
        weight_decay, mixed_precision, gradient_checkpointing, seed
    Parameters that control outputs:
        out, save_steps, save_total_limit, logging_steps, report_to

    The defaults are the paper's SFT hyperparameters (METHOD.md §2: lr 5e-7, 2 epochs, 16
    sequences per update, full fine-tune). A subclass redeclares a field to change its default or
    help (the field keeps its place, so flags, YAML keys and saved configs keep their names).
    """

    out: str = field(default="runs/finetune", metadata={"help": "Output folder: checkpoints, final model, logs."})
    model: str = field(
        default="smollm2-135m", metadata={"help": "Base causal LM: a preset, hub id or local Hugging Face folder."},
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Dtype the weights are loaded in.", "choices": DTYPES},
    )
    finetune: Literal["full", "lora"] = field(
        default="full",
        metadata={"help": "full: every weight (paper); lora: LoRA adapters.", "choices": ["full", "lora"]},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (finetune=lora)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (finetune=lora)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (finetune=lora)."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "LoRA target modules: 'all-linear' or comma-separated module names."},
    )
    max_length: int = field(default=1024, metadata={"help": "Most tokens per example."})
    learning_rate: float = field(default=5e-7, metadata={"help": "Peak learning rate (AdamW)."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the training data."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer updates (-1: from epochs)."})
    batch_size: int = field(default=16, metadata={"help": "Examples per optimizer update, over all processes."})
    micro_batch_size: int = field(
        default=4,
        metadata={"help": "Examples per process and forward pass; gradient accumulation makes up the rest."},
    )
    lr_scheduler: str = field(
        default="linear",
        metadata={"help": "Learning-rate schedule (a transformers scheduler name).", "choices": SCHEDULERS},
    )
    warmup: float = field(default=0.0, metadata={"help": "Warmup updates, or a fraction of all updates if < 1."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    mixed_precision: MixedPrecision = field(
        default="no", metadata={"help": "Mixed precision: no | bf16 | fp16 (GPU).", "choices": ["no", "bf16", "fp16"]},
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass (less memory, ~20% slower)."},
    )
    seed: int = field(default=0, metadata={"help": "Seeds the data order, LoRA initialisation and dropout."})
    save_steps: int = field(
        default=100, metadata={"help": "Save a resumable checkpoint every this many updates (and at the end)."},
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (the oldest are deleted)."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss and metrics every this many updates."})
    report_to: str = field(
        default="tensorboard",
        metadata={"help": "Loggers, comma-separated: tensorboard, wandb (set WANDB_PROJECT), none."},
    )

    def __post_init__(self) -> None:
        positive = ("max_length", "batch_size", "micro_batch_size", "save_steps", "save_total_limit", "logging_steps")
        for name in (*positive, "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"got {name}={getattr(self, name)}; it must be >= 1")
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"got batch_size={self.batch_size} and micro_batch_size={self.micro_batch_size}; batch_size must be "
                "a multiple of micro_batch_size (times the number of processes) so that every update sees the same "
                "amount of data"
            )
        if self.learning_rate <= 0 or self.epochs <= 0:
            raise ValueError(f"got learning_rate={self.learning_rate}, epochs={self.epochs}; both must be > 0")

    def report_targets(self) -> list[str]:
        """`report_to` as the list transformers expects."""
        targets = [t.strip() for t in self.report_to.split(",") if t.strip()]
        return [] if targets in ([], ["none"]) else targets
