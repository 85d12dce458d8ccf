"""Configs of the verifier commands: what the verifier reads (data), how it is trained, scored and
evaluated. Plain dataclasses (see `mucode.config` for YAML loading and unknown-key errors).

    config = train_config("cpu", "verifier.yaml", {"learning_rate": 1e-5})   # preset < file < flags

The dataclass defaults are the paper's hyperparameters (METHOD.md §2: lr 1e-6, 2 epochs, 64 pairs
per update, full fine-tune, 32 pairs per problem). `PRESETS` are short diffs over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from mucode.config import option
from mucode.finetune import FinetuneConfig


ReplyView = Literal["reply", "program"]
Context = Literal["problem", "history"]
Loss = Literal["bt", "bce"]
Finetune = Literal["full", "lora", "head"]
Split = Literal["heldout", "train", "all"]
TurnSelection = Literal["all", "final", "first"]


@dataclass
class VerifierDataConfig:
    """What the verifier is trained on and reads (shared by training and evaluation).

    Parameters that control the data:
        trajectories: rollout folders (one per iteration); pairs are built per folder and pooled.
        pairs_per_problem: Bradley-Terry pairs sampled per problem that has both classes.
        pairs_with_replacement: draw exactly pairs_per_problem pairs with repeats (reference code)
            instead of at most that many distinct ones.
        reply_view / context: the text the verifier reads (raw reply or extracted program;
            the original problem or the whole history before the turn).
        dedupe: drop repeated candidates (same text) within a problem and class.
        holdout_fraction: share of problems held out (split by problem id, never by row).
        seed: seeds the split and the pair sampling.
    """

    trajectories: list[str] = option(
        help="Rollout folders holding trajectories.jsonl, one per iteration (comma-separated on the command line).",
        factory=list,
    )
    pairs_per_problem: int = option(
        32, "Bradley-Terry pairs sampled per problem that has both a correct and an incorrect program."
    )
    pairs_with_replacement: bool = option(
        False,
        "Draw exactly pairs_per_problem (positive, negative) pairs per problem with repeats, as the reference code does (default: at most that many distinct pairs).",
    )
    reply_view: ReplyView = option(
        "reply",
        "What the verifier reads of a turn: the raw reply (paper) or the extracted program.",
        choices=["reply", "program"],
    )
    context: Context = option(
        "problem",
        "What comes before it: the original problem only (paper) or the whole history of the turn.",
        choices=["problem", "history"],
    )
    dedupe: bool = option(False, "Drop candidates whose text repeats within a problem and class.")
    holdout_fraction: float = option(0.0, "Share of problems held out for evaluation (split by problem id).")
    seed: int = option(0, "Seeds the held-out split, the pair sampling, the head and the data order.")

    def __post_init__(self) -> None:
        if self.pairs_per_problem < 1:
            raise ValueError(f"got pairs_per_problem={self.pairs_per_problem}; it must be >= 1")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(
                f"got holdout_fraction={self.holdout_fraction}; it must be in [0, 1) (0 = no held-out problems)"
            )


@dataclass
class VerifierTrainConfig(VerifierDataConfig, FinetuneConfig):
    """Parameters of `mucode verifier train` (saved as OUT/config.yaml); the shared ones are
    described in `FinetuneConfig`, the data in `VerifierDataConfig`.

    Parameters that control the model:
        finetune (full | lora | head), feature_cache (head: where backbone features are kept)
    Parameters that control the loss:
        loss (bt | bce), l2_coefficient (BT: weight of mean(r^2)), max_length (tokens; longer
        sequences keep their end, where the reward is read)
    Parameters that control training and outputs:
        batch_size (pairs or rows per optimizer update, over all processes), eval_strategy
    """

    out: str = option("runs/verifier", "Output folder: checkpoints, final model, data, logs.")
    finetune: Finetune = option(
        "full",
        "full: every weight (paper); lora: LoRA adapters + head; head: the scalar head only (frozen backbone).",
        choices=["full", "lora", "head"],
    )
    max_length: int = option(1024, "Most tokens per sequence; longer ones keep their last tokens.")
    learning_rate: float = option(1e-6, "Peak learning rate (AdamW).")
    batch_size: int = option(64, "Pairs (bt) or rows (bce) per optimizer update, over all processes.")
    micro_batch_size: int = option(
        8, "Pairs or rows per process and forward pass; gradient accumulation makes up the rest."
    )
    feature_cache: str | None = option(
        None,
        "finetune=head: folder of cached backbone features (default OUT/features); share it "
        "between runs of one model to encode each turn once.",
    )
    loss: Loss = option(
        "bt", "bt: Bradley-Terry on pairs (paper); bce: binary cross-entropy on labeled turns.", choices=["bt", "bce"]
    )
    l2_coefficient: float = option(1e-3, "BT only: weight of the mean squared reward added to the loss.")
    eval_strategy: Literal["no", "epoch"] = option(
        "no", "Also compute loss/accuracy on the held-out problems after each epoch.", choices=["no", "epoch"]
    )

    def __post_init__(self) -> None:
        VerifierDataConfig.__post_init__(self)
        FinetuneConfig.__post_init__(self)
        if self.eval_strategy != "no" and self.finetune == "head":
            raise ValueError(
                "eval_strategy applies to full and lora training; evaluate a head-only verifier with `mucode verifier eval`"
            )
        if self.eval_strategy != "no" and self.holdout_fraction == 0:
            raise ValueError(
                f"got eval_strategy={self.eval_strategy!r} with holdout_fraction=0: there is nothing to evaluate on; set --holdout-fraction (e.g. 0.2)"
            )


@dataclass
class VerifierScoreConfig:
    """Parameters of `mucode verifier score`.

    verifier: a trained verifier (train OUT folder, its model/ folder, or a checkpoint).
    input: a rollout folder (scores its turns) or a JSONL file of rows with `prompt` and
    `completion` (or `reply`) fields. out: JSONL written with a `score` per row.
    """

    verifier: str = option(
        "runs/verifier", "Trained verifier: train output folder, its model/ folder, or a checkpoint."
    )
    input: str = option("", "Rollout folder (trajectories.jsonl) or JSONL file of rows with prompt and completion.")
    out: str = option("scores.jsonl", "Output JSONL: one row per scored item, with `score`.")
    turns: TurnSelection = option("all", "Rollout input: which turns to score.", choices=["all", "final", "first"])
    batch_size: int = option(16, "Sequences per forward pass (sorted by length).")
    device: str | None = option(None, "Torch device (default: cuda if available, else cpu).")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"got batch_size={self.batch_size}; it must be >= 1")


@dataclass
class VerifierEvalConfig:
    """Parameters of `mucode verifier eval`.

    verifier: a train OUT folder (its held-out split and trajectories are the defaults) or a
    model folder. split: heldout (problems the training held out), train, or all problems of
    `trajectories`. Pairs for pairwise accuracy are built as in training (pairs_per_problem,
    seed). bins: reliability bins of the calibration table.
    """

    verifier: str = option(
        "runs/verifier", "Trained verifier: train output folder, its model/ folder, or a checkpoint."
    )
    trajectories: list[str] = option(
        help="Rollout folders (comma-separated); default: those the verifier was trained on.", factory=list
    )
    split: Split = option(
        "heldout",
        "Problems to evaluate on: heldout (by the training split), train, or all.",
        choices=["heldout", "train", "all"],
    )
    out: str | None = option(None, "Report file (JSON); default: VERIFIER/eval-SPLIT.json.")
    pairs_per_problem: int = option(32, "Pairs sampled per problem for pairwise accuracy.")
    seed: int = option(0, "Seeds the pair sampling.")
    bins: int = option(10, "Reliability bins for calibration.")
    batch_size: int = option(16, "Sequences per forward pass (sorted by length).")
    device: str | None = option(None, "Torch device (default: cuda if available, else cpu).")

    def __post_init__(self) -> None:
        for name in ("pairs_per_problem", "bins", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"got {name}={getattr(self, name)}; it must be >= 1")


# Short diffs over the defaults (the paper's hyperparameters). Starting points, not tuned results.
PRESETS: dict[str, dict[str, Any]] = {
    # Paper scale on GPUs (METHOD.md §2): Llama-3.2-1B-Instruct, full fine-tune, bf16, 64 pairs/update.
    "paper": {"model": "meta-llama/Llama-3.2-1B-Instruct", "mixed_precision": "bf16", "gradient_checkpointing": True},
    # One CPU: a 135M backbone fully fine-tuned; a larger rate makes up for the few updates.
    "cpu": {
        "model": "smollm2-135m",
        "learning_rate": 1e-5,
        "batch_size": 16,
        "micro_batch_size": 4,
        "max_length": 768,
        "save_steps": 50,
        "logging_steps": 5,
    },
    # One CPU, cheapest: frozen backbone, only the scalar head learns (a linear probe on the
    # last token's hidden state, cached once per turn; epochs then cost milliseconds).
    "cpu-head": {
        "model": "smollm2-135m",
        "finetune": "head",
        "learning_rate": 1e-3,
        "epochs": 20.0,
        "batch_size": 32,
        "micro_batch_size": 8,
        "max_length": 768,
        "logging_steps": 20,
    },
}


def train_config(
    preset: str | None = None, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> VerifierTrainConfig:
    """Defaults, then the preset, then the YAML file, then `overrides` (unset values skipped)."""
    from mucode.config import load_config

    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return load_config(VerifierTrainConfig, path, overrides, base=PRESETS[preset] if preset else None)
