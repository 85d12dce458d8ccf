"""The fine-tuning base under both trainers (generator SFT in `mucode.training.sft`, the verifier
in `mucode.verifier.trainer`): the config fields they share, the TRL arguments built from them,
the LoRA config, the start of a run (distributed state, --overwrite, the resume check), training
from the last checkpoint, run.json and `TrainResult`. Each trainer keeps only what is its own:
its data, its loss, its head, its final save.

    class GeneratorTrainConfig(FinetuneConfig): data: list[str] = ...   # plus its own defaults
    run = start_run(config, lambda processes: sft_config(config, processes), kind="generator", ...)
    result, resumed = train_resuming(trainer, run)

A run folder resumes only with the same config, except for `RESUMABLE_CHANGES` (and the
trainer's own additions). Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from mucode.config import option


Say = Callable[[str], None]

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

    out: str = option("runs/finetune", "Output folder: checkpoints, final model, logs.")
    model: str = option("smollm2-135m", "Base causal LM: a preset, hub id or local Hugging Face folder.")
    dtype: str = option("float32", "Dtype the weights are loaded in.", choices=DTYPES)
    finetune: Literal["full", "lora"] = option(
        "full", "full: every weight (paper); lora: LoRA adapters.", choices=["full", "lora"]
    )
    lora_r: int = option(16, "LoRA rank (finetune=lora).")
    lora_alpha: int = option(32, "LoRA alpha (finetune=lora).")
    lora_dropout: float = option(0.0, "LoRA dropout (finetune=lora).")
    lora_target_modules: str = option(
        "all-linear", "LoRA target modules: 'all-linear' or comma-separated module names."
    )
    max_length: int = option(1024, "Most tokens per example.")
    learning_rate: float = option(5e-7, "Peak learning rate (AdamW).")
    epochs: float = option(2.0, "Passes over the training data.")
    max_steps: int = option(-1, "Stop after this many optimizer updates (-1: from epochs).")
    batch_size: int = option(16, "Examples per optimizer update, over all processes.")
    micro_batch_size: int = option(
        4, "Examples per process and forward pass; gradient accumulation makes up the rest."
    )
    lr_scheduler: str = option("linear", "Learning-rate schedule (a transformers scheduler name).", choices=SCHEDULERS)
    warmup: float = option(0.0, "Warmup updates, or a fraction of all updates if < 1.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    mixed_precision: MixedPrecision = option(
        "no", "Mixed precision: no | bf16 | fp16 (GPU).", choices=["no", "bf16", "fp16"]
    )
    gradient_checkpointing: bool = option(
        False, "Recompute activations in the backward pass (less memory, ~20% slower)."
    )
    seed: int = option(0, "Seeds the data order, LoRA initialisation and dropout.")
    save_steps: int = option(100, "Save a resumable checkpoint every this many updates (and at the end).")
    save_total_limit: int = option(2, "Checkpoints kept (the oldest are deleted).")
    logging_steps: int = option(10, "Log the loss and metrics every this many updates.")
    report_to: str = option("tensorboard", "Loggers, comma-separated: tensorboard, wandb (set WANDB_PROJECT), none.")

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
        from mucode.config import report_targets

        return report_targets(self.report_to)


# ----------------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """What a training run produced: the final model folder, optimizer updates done in total, the
    mean training loss of this run's updates, wall seconds of this run, the checkpoint it resumed
    from, and what one epoch trains on (`examples`: SFT examples, or verifier pairs (bt) or rows
    (bce)). SFT also gives every logged loss (in order, earlier runs of a resumed training
    included) and its length fits; the verifier its pair and row counts."""

    model_dir: Path
    global_step: int
    train_loss: float
    seconds: float
    resumed_from: str | None
    examples: int
    losses: list[float] = field(default_factory=list)
    too_long: int = 0  # SFT: left out, too long even with every earlier attempt removed
    truncated: int = 0  # SFT: kept with their oldest attempts removed
    pairs: int = 0  # verifier: training pairs
    rows: int = 0  # verifier: labeled training turns


# ------------------------------------------------------------------------------ TRL arguments


def launched_processes() -> int:
    """Processes of this run: WORLD_SIZE, set by accelerate launch / torchrun (else 1)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation(config: FinetuneConfig, processes: int) -> int:
    """Micro-batches per update so that one update sees `batch_size` examples."""
    per_pass = config.micro_batch_size * processes
    if config.batch_size % per_pass:
        raise ValueError(
            f"batch_size={config.batch_size} is not a multiple of micro_batch_size={config.micro_batch_size} "
            f"x {processes} processes; change --batch-size or --micro-batch-size"
        )
    return config.batch_size // per_pass


def training_arguments(
    args_name: str,
    config: FinetuneConfig,
    processes: int,
    progress: bool,
    checkpointing: bool | None = None,
    **own: Any,
) -> Any:
    """TRL's arguments class `args_name` (SFTConfig, RewardConfig, GRPOConfig) for `config`, plus the
    trainer's `own` arguments. Created before the model is loaded: under DeepSpeed ZeRO-3 it is what
    makes `from_pretrained` partition the weights while loading."""
    import dataclasses

    import torch
    import trl

    args_class = getattr(trl, args_name)
    checkpointing = config.gradient_checkpointing if checkpointing is None else checkpointing

    # transformers >= 5.23 renamed gradient_checkpointing (TRL defaults the old name to True, which warns)
    known = {f.name for f in dataclasses.fields(args_class)}
    if "max_length" in known:  # every example is fitted to config.max_length beforehand, by the trainer's own rule
        own = {"max_length": None, **own}
    if "activation_checkpointing" in known:
        checkpointing_args = {"activation_checkpointing": checkpointing, "gradient_checkpointing": None}
    else:
        checkpointing_args = {"gradient_checkpointing": checkpointing}
    return args_class(
        output_dir=config.out,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation(config, processes),
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        bf16=config.mixed_precision == "bf16",  # TRL would default bf16 to True
        fp16=config.mixed_precision == "fp16",
        **checkpointing_args,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=config.report_targets() or "none",
        seed=config.seed,
        disable_tqdm=not progress,
        dataloader_pin_memory=torch.cuda.is_available(),
        # several processes without GPUs: torch.distributed over gloo (accelerate's MULTI_CPU); bf16
        # autocast on a CPU: transformers refuses bf16 without a GPU unless told to use the CPU
        use_cpu=not torch.cuda.is_available() and (processes > 1 or config.mixed_precision == "bf16"),
        ddp_find_unused_parameters=False,  # every trainable weight takes part in every forward pass
        **own,
    )


def lora_config(config: FinetuneConfig, task_type: str, modules_to_save: list[str] | None = None) -> Any:
    """peft LoraConfig of `config` for `task_type` (CAUSAL_LM, SEQ_CLS)."""
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
        modules_to_save=modules_to_save,
    )


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def update_plan(config: FinetuneConfig, args: Any, processes: int, examples: int) -> str:
    """How `examples` are batched: `B per update = M x P processes x A accumulation steps; U
    updates per epoch, T in total` (for the trainer's setup line)."""
    import math

    per_pass = config.micro_batch_size * processes
    per_epoch = math.ceil(math.ceil(examples / per_pass) / args.gradient_accumulation_steps)
    total = args.max_steps if args.max_steps > 0 else math.ceil(per_epoch * config.epochs)
    return (
        f"{config.batch_size} per update = {config.micro_batch_size} x {processes} processes x "
        f"{args.gradient_accumulation_steps} accumulation steps; {per_epoch} updates per epoch, {total} in total"
    )


# ------------------------------------------------------------------------------ run lifecycle

# Settings that may change between a run and its resumption (they change neither the data nor the model).
RESUMABLE_CHANGES = frozenset(
    {"out", "epochs", "max_steps", "save_steps", "save_total_limit", "logging_steps", "report_to"}
)


def check_same_run(
    config: FinetuneConfig,
    out: Path,
    *,
    kind: str,
    resumable: frozenset[str] = RESUMABLE_CHANGES,
    other_changes: Callable[[Path], list[str]] | None = None,
) -> None:
    """Refuse to resume a run whose saved OUT/config.yaml differs in a setting that changes the
    result (keys outside `resumable`), or whose inputs changed (`other_changes(out)` names them)."""
    import yaml

    from mucode.config import config_to_dict

    path = out / "config.yaml"
    if not path.is_file():
        return
    previous = yaml.safe_load(path.read_text()) or {}
    current = config_to_dict(config)
    changed = sorted(k for k in current if k not in resumable and previous.get(k) != current[k])
    changed += other_changes(out) if other_changes else []
    if changed:
        raise ValueError(
            f"{out} holds a {kind} trained with a different config ({', '.join(changed)} differ); "
            "rerun with the same settings and data to resume, pass --overwrite to start over, or choose another --out"
        )


@dataclass
class RunStart:
    """A started run: TRL arguments, accelerate's PartialState, `say` (silent off the main
    process), the output folder, the process count, and when it started."""

    args: Any
    state: Any
    say: Say
    out: Path
    processes: int
    started: float

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def save_config(self, config: FinetuneConfig, **files: str) -> None:
        """OUT/config.yaml and the run's other input `files` (name -> text), by the main process."""
        from mucode.config import save_config

        if self.state.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(config, self.out / "config.yaml")
            for name, text in files.items():
                (self.out / name).write_text(text)
        self.state.wait_for_everyone()

    def say_setup(self, config: FinetuneConfig, model: str, trainer: Any, examples: int, what: str) -> None:
        """The setup line: what is trained of `model`, on `what`, batched how."""
        trainable, total = count_parameters(trainer.model)
        self.say(
            f"model {model} ({config.finetune}): {trainable:,} of {total:,} parameters trained; {what}, "
            f"{update_plan(config, self.args, self.processes, examples)}"
        )

    def finish(self, config: FinetuneConfig, result: TrainResult, **details: Any) -> TrainResult:
        """Write OUT/run.json of `result` and the trainer's `details` (the main process), wait for
        every process, and return `result`."""
        if self.state.is_main_process:
            write_run(
                self.out,
                config,
                global_step=result.global_step,
                train_loss=result.train_loss,
                seconds=result.seconds,
                resumed=result.resumed_from,
                **details,
            )
        self.state.wait_for_everyone()
        return result


def start_run(
    config: FinetuneConfig,
    make_args: Callable[[int], Any],
    *,
    kind: str,
    overwrite: bool,
    say: Say | None,
    resumable: frozenset[str] = RESUMABLE_CHANGES,
    other_changes: Callable[[Path], list[str]] | None = None,
) -> RunStart:
    """Set up the (distributed) state through `make_args(processes)`, delete OUT on --overwrite,
    and check that OUT holds nothing but a resumable run of the same config (`check_same_run`);
    every process has read the old config when this returns, so the main one may write."""
    from accelerate import PartialState

    started = time.perf_counter()
    processes = launched_processes()
    args = make_args(processes)  # sets up the (distributed) state
    state = PartialState()
    if state.num_processes != processes:
        raise RuntimeError(
            f"WORLD_SIZE={processes} but the distributed state has {state.num_processes} processes; "
            "launch with accelerate launch or torchrun"
        )
    out = Path(config.out)
    if overwrite and state.is_main_process and out.exists():
        shutil.rmtree(out)
    state.wait_for_everyone()
    check_same_run(config, out, kind=kind, resumable=resumable, other_changes=other_changes)
    state.wait_for_everyone()
    speak = say if (say is not None and state.is_main_process) else (lambda message: None)
    return RunStart(args, state, speak, out, processes, started)


def train_resuming(trainer: Any, run: RunStart) -> tuple[Any, str | None]:
    """(TRL's TrainOutput, the checkpoint resumed from): train from OUT's last checkpoint, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(run.out)) if run.out.is_dir() else None
    if last:
        run.say(f"resuming from {last}")
    return trainer.train(resume_from_checkpoint=last), last


def logged_losses(trainer: Any) -> list[float]:
    """Every logged training loss of `trainer`, in order (a resumed run's earlier ones included)."""
    return [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]


def write_run(
    out: Path,
    config: FinetuneConfig,
    *,
    global_step: int,
    train_loss: float,
    seconds: float,
    resumed: str | None,
    **details: Any,
) -> None:
    """OUT/run.json: package versions, the seed, the trainer's `details`, updates, loss, time."""
    import torch
    import transformers
    import trl

    from mucode import __version__

    run = {
        "mucode": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "seed": config.seed,
        **details,
        "global_step": global_step,
        "train_loss": train_loss,
        "seconds": round(seconds, 1),
        "resumed_from": resumed,
    }
    (out / "run.json").write_text(json.dumps(run, indent=2))
