"""Train a verifier: Bradley-Terry on (correct, incorrect) pairs or BCE on labeled turns, with
TRL's RewardTrainer (finetune full or lora), on one CPU, several processes or several GPUs; or,
for finetune=head, the head alone on cached backbone features (head.py, one process).

    mucode verifier train --trajectories runs/r0 --preset cpu --holdout-fraction 0.2 --out runs/v0
    accelerate launch --config_file $(python -m mucode.verifier.launch zero3) \\
        -m mucode verifier train --trajectories runs/r0,runs/r1 --preset paper --out runs/v1

Rerunning the same command resumes from the last checkpoint (a changed setting is an error;
--overwrite starts over); a head-only run restarts its few-second head fit and reuses every
feature already cached. Output folder:

    OUT/config.yaml, run.json    resolved config; versions, data counts, wall time, final loss
    OUT/split.json               train / held-out problem ids (split by problem, never by row)
    OUT/data/                    pairs and rows in TRL formats (JSONL), stats.json
    OUT/checkpoint-N/            resumable Hugging Face checkpoints (weights, tokenizer, optimizer)
    OUT/runs/                    TensorBoard logs (loss, accuracy, margin, learning rate)
    OUT/model/                   the final verifier: weights (or LoRA adapter; head only: head.safetensors, whose
                                 backbone verifier.json's base_model names), tokenizer, verifier.json
    OUT/features/, head_log.jsonl  head only: cached backbone features (or --feature-cache), the fit's log
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mucode.finetune import (
    RESUMABLE_CHANGES,
    RunStart,
    Say,
    TrainResult,
    launched_processes,
    lora_config,
    start_run,
    train_resuming,
    training_arguments,
)
from mucode.verifier.config import VerifierTrainConfig
from mucode.verifier.data import Candidate, Pair, PreparedData, export_data, prepare_data
from mucode.verifier.losses import bce_loss, bradley_terry_loss
from mucode.verifier.model import FittedIds, VerifierSpec, encode, fit_ids, length_fit_counts, pad_right, save_head


# Besides the shared ones, settings that change neither the data nor the model.
VERIFIER_RESUMABLE = RESUMABLE_CHANGES | {"feature_cache", "eval_strategy"}


# ------------------------------------------------------------------------------------- trainers


def _trainer_classes() -> tuple[type, type]:
    """(BradleyTerryTrainer, BCETrainer), built on first use so that importing this module does
    not import trl/torch."""
    import torch
    from trl import RewardTrainer

    class BradleyTerryTrainer(RewardTrainer):
        """TRL's RewardTrainer with the paper's regulariser: `l2 * mean(r^2)` over all rewards
        replaces TRL's centering term mean((r+ + r-)^2) (see losses.py)."""

        def __init__(self, *args: Any, l2_coefficient: float = 1e-3, **kwargs: Any) -> None:
            self.l2_coefficient = l2_coefficient
            super().__init__(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # TRL's forward pass and its accuracy / margin / reward logs; the loss is recomputed
            # with the tested function (its BT part equals TRL's, plus the L2 term).
            _, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            chosen, rejected = outputs.logits.squeeze(-1).chunk(2)  # the collator stacks chosen then rejected
            loss = bradley_terry_loss(chosen, rejected, self.l2_coefficient)
            return (loss, outputs) if return_outputs else loss

    class BCETrainer(RewardTrainer):
        """Binary cross-entropy on single labeled sequences. TRL has no BCE reward trainer, and
        RewardTrainer's data path is pair-only (its collator stacks chosen then rejected), so the
        data hooks and the loss are overridden; model setup, PEFT, logging and checkpoints stay TRL's."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # tokenized by train_verifier with the same `encode` as scoring

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["input_ids", "label"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            logits = outputs.logits.squeeze(-1)  # (B,)
            labels = inputs["labels"]
            loss = bce_loss(logits, labels)
            with torch.no_grad():
                accuracy = ((logits > 0).float() == labels).float().mean()
                self._metrics[mode]["accuracy"].append(self.accelerator.gather_for_metrics(accuracy).mean().item())
                self._metrics[mode]["mean_reward"].append(
                    self.accelerator.gather_for_metrics(logits.detach().mean()).mean().item()
                )
                self._metrics[mode]["mean_probability"].append(
                    self.accelerator.gather_for_metrics(torch.sigmoid(logits).mean()).mean().item()
                )
            return (loss, outputs) if return_outputs else loss

    return BradleyTerryTrainer, BCETrainer


@dataclass
class LabeledCollator:
    """Pads `input_ids` on the right; returns input_ids, attention_mask and float `labels`."""

    pad_token_id: int

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids, mask = pad_right([e["input_ids"] for e in examples], self.pad_token_id)
        labels = torch.tensor([float(e["label"]) for e in examples])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _spec_callback(spec: VerifierSpec) -> Any:
    """A TrainerCallback writing verifier.json into every checkpoint, so that a checkpoint
    scores exactly like the final model."""
    from transformers import TrainerCallback

    class SaveSpec(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                spec.save(folder)

    return SaveSpec()


# ---------------------------------------------------------------------------------- datasets


def pair_dataset(pairs: Sequence[Pair], tokenizer: Any, max_length: int) -> Any:
    """A datasets.Dataset of `chosen_ids` / `rejected_ids` (RewardTrainer's tokenized format)."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "chosen_ids": [encode(tokenizer, p.chosen.messages(), max_length) for p in pairs],
            "rejected_ids": [encode(tokenizer, p.rejected.messages(), max_length) for p in pairs],
        }
    )


def row_dataset(rows: Sequence[Candidate], tokenizer: Any, max_length: int) -> Any:
    """A datasets.Dataset of `input_ids` and `label` (1 = correct)."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [encode(tokenizer, c.messages(), max_length) for c in rows],
            "label": [int(bool(c.label)) for c in rows],
        }
    )


# ------------------------------------------------------------------------------------ training


def reward_config(config: VerifierTrainConfig, processes: int, progress: bool = True) -> Any:
    """TRL's RewardConfig for `config` (see `mucode.finetune.training_arguments`)."""
    # a frozen backbone keeps no activations; the paper's L2 term is added by BradleyTerryTrainer instead
    checkpointing = config.gradient_checkpointing and config.finetune != "head"
    evaluation = {"per_device_eval_batch_size": config.micro_batch_size, "eval_strategy": config.eval_strategy}
    return training_arguments(
        "RewardConfig", config, processes, progress, checkpointing, **evaluation, center_rewards_coefficient=None
    )


def train_verifier(
    config: VerifierTrainConfig, *, overwrite: bool = False, progress: bool = True, say: Say | None = None
) -> TrainResult:
    """Build the data from `config.trajectories`, train, save OUT/model; resume if OUT has
    checkpoints of the same config (see the module docstring)."""
    if config.finetune == "head" and launched_processes() > 1:
        raise ValueError(
            "finetune=head trains from cached features in one process; run it without accelerate launch / torchrun"
        )
    run = start_run(
        config,
        lambda processes: reward_config(config, processes, progress),
        kind="verifier",
        overwrite=overwrite,
        say=say,
        resumable=VERIFIER_RESUMABLE,
    )
    data = prepare_data(config)
    _check_enough(config, data)
    split = {"holdout_fraction": config.holdout_fraction, "seed": config.seed}
    split |= {"train": data.train_ids, "heldout": data.heldout_ids}
    run.save_config(config, **{"split.json": json.dumps(split, indent=2)})
    if run.state.is_main_process:
        export_data(data, run.out / "data")
    run.say(f"train: {data.train_stats.describe()}")
    if data.heldout_ids:
        run.say(f"held out: {len(data.heldout_ids)} problems ({data.heldout_stats.describe()})")
    if config.finetune == "head":
        return _train_head(config, data, run, progress)

    trainer = _build_trainer(config, run.args, data)
    examples = len(trainer.train_dataset)
    run.say_setup(config, config.model, trainer, examples, f"loss {config.loss}; {examples} {_unit(config)}")
    fits = _length_fits(
        run,
        config,
        [fit_ids(trainer.processing_class, c.messages(), config.max_length) for c in _train_candidates(config, data)],
    )
    output, last = train_resuming(trainer, run)
    model_dir = run.out / "model"
    trainer.save_model(str(model_dir))  # weights (or LoRA adapter) + tokenizer, gathered under ZeRO-3 / FSDP
    if run.state.is_main_process:
        _spec(config).save(model_dir)
    return _finish(config, data, run, model_dir, output.global_step, output.training_loss, last, examples, fits)


def _train_head(config: VerifierTrainConfig, data: PreparedData, run: RunStart, progress: bool) -> TrainResult:
    """finetune="head": backbone features once per distinct turn (cached), then the head alone."""
    import torch

    from mucode.verifier.head import FeatureStore, backbone_key, extract_features, fit_head
    from mucode.verifier.model import head, load_backbone

    out = run.out
    model, tokenizer = load_backbone(config.model, dtype=config.dtype, seed=config.seed)
    store = FeatureStore(
        Path(config.feature_cache) if config.feature_cache else out / "features",
        backbone_key(config.model, config.dtype),
    )
    bt = config.loss == "bt"
    train = _train_candidates(config, data)
    candidates = _unique(train + list(data.heldout_rows))  # held-out turns too: `eval` reuses their features
    fitted = [fit_ids(tokenizer, c.messages(), config.max_length) for c in candidates]
    sequences = [f.ids for f in fitted]
    fits = _length_fits(run, config, fitted[: len(train)])
    cached = sum(1 for c in sequences if _cached(store, c))
    run.say(
        f"model {config.model} (head only, {head(model).weight.numel():,} parameters trained): "
        f"features of {len(sequences)} distinct turns, {cached} cached"
    )
    features = extract_features(
        model, sequences, store, pad_id=tokenizer.pad_token_id, batch_size=config.micro_batch_size, progress=progress
    )
    row = {c.ref: i for i, c in enumerate(candidates)}
    writer = _tensorboard(config, out)
    pairs = torch.tensor([[row[p.chosen.ref], row[p.rejected.ref]] for p in data.train_pairs]) if bt else None
    labels = None if bt else torch.tensor([float(bool(c.label)) for c in data.train_rows])
    if not bt:
        features = features[torch.tensor([row[c.ref] for c in data.train_rows])]  # (rows, D)
    weight, history = fit_head(
        features,
        config,
        head(model).weight,
        pairs=pairs,
        labels=labels,
        progress=progress,
        log=(lambda step, entry: [writer.add_scalar(f"train/{k}", v, step) for k, v in entry.items() if k != "step"])
        if writer
        else None,
    )
    if writer is not None:
        writer.close()
    head(model).weight.data.copy_(weight.to(head(model).weight.dtype))
    spec = _spec(config)
    spec.features = str(store.path.resolve())
    model_dir = save_head(model, tokenizer, spec, out / "model")
    (out / "head_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    steps, loss = history[-1]["step"], sum(h["loss"] for h in history) / len(history)
    examples = len(data.train_pairs) if bt else len(data.train_rows)
    return _finish(config, data, run, model_dir, steps, loss, None, examples, fits)


def _finish(
    config: VerifierTrainConfig,
    data: PreparedData,
    run: RunStart,
    model_dir: Path,
    steps: int,
    loss: float,
    resumed: str | None,
    examples: int,
    fits: dict[str, int],
) -> TrainResult:
    pairs, rows = len(data.train_pairs), len(data.train_rows)
    result = TrainResult(model_dir, steps, float(loss), run.seconds(), resumed, examples, pairs=pairs, rows=rows)
    details = {"train_problems": len(data.train_ids), "heldout_problems": len(data.heldout_ids)}
    return run.finish(config, result, **details, train_pairs=pairs, train_rows=rows, length_fit=fits)


def _train_candidates(config: VerifierTrainConfig, data: PreparedData) -> list[Candidate]:
    """The distinct turns training reads: both sides of every pair (bt) or every row (bce)."""
    if config.loss == "bt":
        return _unique([c for p in data.train_pairs for c in (p.chosen, p.rejected)])
    return _unique(data.train_rows)


def _length_fits(run: RunStart, config: VerifierTrainConfig, fits: Sequence[FittedIds]) -> dict[str, int]:
    """How many training sequences fitting to max_length changed (said, and kept in run.json)."""
    counts = length_fit_counts(fits)
    if counts["context_truncated"] or counts["clipped"]:
        run.say(
            f"max_length {config.max_length}: {counts['context_truncated']} of {counts['sequences']} training turns lost "
            f"earlier attempts ({counts['attempts_removed']} in all), {counts['clipped']} had their start clipped"
        )
    return counts


def _unique(candidates: Sequence[Candidate]) -> list[Candidate]:
    return list({c.ref: c for c in candidates}.values())


def _cached(store: Any, ids: Sequence[int]) -> bool:
    from mucode.verifier.head import sequence_key

    return sequence_key(ids) in store


def _tensorboard(config: VerifierTrainConfig, out: Path) -> Any:
    if "tensorboard" not in config.report_targets():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "runs" / "head"))


def _check_enough(config: VerifierTrainConfig, data: PreparedData) -> None:
    if config.loss == "bt" and not data.train_pairs:
        raise ValueError(
            f"no training pairs: {data.train_stats.describe()}. Bradley-Terry needs problems with both a correct and an "
            "incorrect program; collect more rollouts (or use a stronger generator), or train with --loss bce"
        )
    if config.loss == "bce" and not data.train_rows:
        raise ValueError(f"no labeled turns to train on: {data.train_stats.describe()}")


def _build_trainer(config: VerifierTrainConfig, args: Any, data: PreparedData) -> Any:
    from mucode.verifier.model import freeze_backbone, load_backbone

    model, tokenizer = load_backbone(config.model, dtype=config.dtype, seed=config.seed)
    if config.finetune == "head":
        freeze_backbone(model)
    bt_trainer, bce_trainer = _trainer_classes()
    common = dict(
        model=model,
        args=args,
        processing_class=tokenizer,
        callbacks=[_spec_callback(_spec(config))],
        peft_config=lora_config(config, "SEQ_CLS", modules_to_save=["score"]) if config.finetune == "lora" else None,
    )
    evaluating = config.eval_strategy != "no"
    if config.loss == "bt":
        trainer = bt_trainer(
            train_dataset=pair_dataset(data.train_pairs, tokenizer, config.max_length),
            eval_dataset=pair_dataset(data.heldout_pairs, tokenizer, config.max_length) if evaluating else None,
            l2_coefficient=config.l2_coefficient,
            **common,
        )
    else:
        trainer = bce_trainer(
            train_dataset=row_dataset(data.train_rows, tokenizer, config.max_length),
            eval_dataset=row_dataset(data.heldout_rows, tokenizer, config.max_length) if evaluating else None,
            data_collator=LabeledCollator(tokenizer.pad_token_id),
            **common,
        )
    return trainer


def _spec(config: VerifierTrainConfig) -> VerifierSpec:
    from mucode import __version__

    return VerifierSpec(
        loss=config.loss,
        reply_view=config.reply_view,
        context=config.context,
        max_length=config.max_length,
        base_model=config.model,
        finetune=config.finetune,
        mucode_version=__version__,
        dtype=config.dtype,
    )


def _unit(config: VerifierTrainConfig) -> str:
    return "pairs" if config.loss == "bt" else "rows"
