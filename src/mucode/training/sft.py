"""Train the generator on relabeled SFT examples with TRL's SFTTrainer (METHOD.md §2, step 4).

    mucode generator train --data runs/sft0.jsonl runs/sft1.jsonl --preset cpu --out runs/g1
    accelerate launch --config_file $(python -m mucode.verifier.launch zero3) \\
        -m mucode generator train --preset paper --data runs/sft1.jsonl --out runs/g1

The loss covers only the target assistant message, including the end-of-turn token that the chat
template writes after it (`<|im_end|>` for SmolLM2 and Qwen, `<|eot_id|>` for Llama 3): TRL tokenizes
`prompt` with the generation prompt and `prompt + completion`, and trains the tokens after their
common prefix. Labels are built before padding and padded with -100, and the pad token is chosen
apart from every end-of-turn token (`set_pad_token`), so padding never hides the end-of-turn token
(the reference code's pad = eos masked it out, so its models never learned to stop; METHOD.md §5).
An example longer than `max_length` tokens loses its oldest attempts first (each earlier reply with
the feedback after it; the problem's first message and the target stay whole); one that is still
too long with no attempt left is left out. Both counts are reported (`fit_to_length`).

Rerunning the same command resumes from the last checkpoint (a changed setting or changed data is
an error; --overwrite starts over). Output folder:

    OUT/config.yaml, data.json   resolved config; the SFT files and their sha256
    OUT/run.json                 versions, data counts, losses, wall time
    OUT/checkpoint-N/            resumable checkpoints (weights or LoRA adapter, tokenizer, optimizer)
    OUT/runs/                    TensorBoard logs
    OUT/model/                   final Hugging Face model + tokenizer (LoRA merged), for `--model OUT/model`
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mucode.training.config import GeneratorTrainConfig

Say = Callable[[str], None]

# Settings that may change between a run and its resumption (they change neither the data nor the model).
RESUMABLE_CHANGES = frozenset({"out", "epochs", "max_steps", "save_steps", "save_total_limit", "logging_steps", "report_to"})
DATA_FILE = "data.json"  # the SFT files and their sha256: resuming on changed data is an error


@dataclass
class TrainResult:
    """What a training run produced: the final model folder, optimizer updates done in total, the
    mean training loss of this run's updates, every logged loss (in order, earlier runs of a
    resumed training included), wall seconds of this run, and the data counts."""

    model_dir: Path
    global_step: int
    train_loss: float
    losses: list[float]
    seconds: float
    resumed_from: str | None
    examples: int
    too_long: int  # left out: too long even with every earlier attempt removed
    truncated: int = 0  # kept with their oldest attempts removed


# ------------------------------------------------------------------------------------------ data


def read_sft_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The prompt/completion pairs of SFT files (JSONL or Parquet, `mucode generator relabel`),
    checked: `prompt` is a list of messages and `completion` one assistant message."""
    if not paths:
        raise ValueError("no SFT data given; pass --data FILE.jsonl [FILE ...] (written by `mucode generator relabel`)")
    rows = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"SFT data file {path} does not exist; write it with `mucode generator relabel --out {path}`")
        for number, row in enumerate(_read_rows(path), 1):
            _check_row(row, path, number)
            rows.append({"prompt": [dict(m) for m in row["prompt"]], "completion": [dict(m) for m in row["completion"]]})
    if not rows:
        raise ValueError(f"the SFT data ({', '.join(map(str, paths))}) holds no examples; relabel more trajectories or another method")
    return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import datasets

        return datasets.Dataset.from_parquet(str(path)).to_list()
    from mucode.folders import read_jsonl

    return read_jsonl(path)


def _check_row(row: Mapping[str, Any], path: Path, number: int) -> None:
    prompt, completion = row.get("prompt"), row.get("completion")
    if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in prompt)):
        raise ValueError(f"{path}: row {number} needs a `prompt` list of {{role, content}} messages (TRL's conversational prompt/completion format)")
    if not (isinstance(completion, list) and len(completion) == 1 and isinstance(completion[0], dict) and completion[0].get("role") == "assistant"):
        raise ValueError(f"{path}: row {number} needs a `completion` of exactly one assistant message")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sequence_length(tokenizer: Any, row: Mapping[str, Any]) -> int:
    """Tokens of prompt + completion as TRL tokenizes a conversational example."""
    return len(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)["input_ids"])


def drop_too_long(rows: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int) -> tuple[list[Mapping[str, Any]], int]:
    """(rows of at most max_length tokens, how many were longer), no row changed."""
    kept = [row for row in rows if sequence_length(tokenizer, row) <= max_length]
    return kept, len(rows) - len(kept)


@dataclass
class LengthFit:
    """What `fit_to_length` did: rows kept (some shortened), how many were shortened, how many
    were left out, and how many earlier attempts were removed in all."""

    rows: list[Mapping[str, Any]]
    truncated: int
    dropped: int
    attempts_removed: int


def fit_to_length(rows: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int) -> LengthFit:
    """Fit every row to max_length tokens by removing its context's oldest attempts first (an
    assistant reply and the feedback after it), keeping the first user message (and any system
    message) and the target whole; a row still too long with no attempt left is left out.
    Cutting tokens instead would drop the target's end-of-turn token (TRL keeps the start),
    teaching the model not to stop."""
    kept: list[Mapping[str, Any]] = []
    truncated = dropped = removed = 0
    for row in rows:
        prompt = list(row["prompt"])
        head = next(i for i, m in enumerate(prompt) if m["role"] == "user") + 1  # system? + first user message
        cut = 0
        candidate = row
        while sequence_length(tokenizer, candidate) > max_length and head + 2 * cut < len(prompt):
            cut += 1
            candidate = {**row, "prompt": prompt[:head] + prompt[head + 2 * cut :]}
        if sequence_length(tokenizer, candidate) > max_length:
            dropped += 1
            continue
        truncated += cut > 0
        removed += cut
        kept.append(candidate)
    return LengthFit(kept, truncated, dropped, removed)


# ----------------------------------------------------------------------------------------- model


def generator_dir(path: str) -> str:
    """A `mucode generator train` OUT folder means its OUT/model; anything else is itself."""
    folder = Path(path) / "model"
    return str(folder) if (folder / "config.json").is_file() else path


def load_generator(ref: str, *, dtype: str = "float32") -> tuple[Any, Any]:
    """A causal LM (preset, hub id or folder) for training, and its tokenizer with a pad token
    that is no end-of-turn token, padding on the right."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mucode.generation.models import resolve_model
    from mucode.verifier.model import set_pad_token

    resolved = resolve_model(generator_dir(ref))
    if resolved.kind == "gguf":
        raise ValueError(f"{ref!r} is a GGUF file; training needs a Hugging Face folder: use a preset name or convert it once (`mucode models pull`)")
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"the tokenizer of {ref!r} has no chat template; the generator is trained on chats (use an instruct/chat model)")
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=getattr(torch, dtype))
    set_pad_token(tokenizer, model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def lora_config(config: GeneratorTrainConfig) -> Any:
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
    )


# -------------------------------------------------------------------------------------- training


def sft_config(config: GeneratorTrainConfig, processes: int, progress: bool = True) -> Any:
    """TRL's SFTConfig for `config`. Created before the model is loaded: under DeepSpeed ZeRO-3
    it is what makes `from_pretrained` partition the weights while loading."""
    import dataclasses

    import torch
    from trl import SFTConfig

    from mucode.verifier.trainer import gradient_accumulation  # same batch arithmetic as the verifier

    # transformers >= 5.23 renamed gradient_checkpointing (TRL defaults the old name to True, which warns)
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    if "activation_checkpointing" in names:
        checkpointing = {"activation_checkpointing": config.gradient_checkpointing, "gradient_checkpointing": None}
    else:
        checkpointing = {"gradient_checkpointing": config.gradient_checkpointing}
    return SFTConfig(
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
        **checkpointing,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to=config.report_targets() or "none",
        seed=config.seed,
        completion_only_loss=True,
        packing=False,
        max_length=None,  # over-long examples are left out beforehand (drop_too_long), never cut
        disable_tqdm=not progress,
        dataloader_pin_memory=torch.cuda.is_available(),
        # several processes without GPUs: torch.distributed over gloo (accelerate's MULTI_CPU)
        use_cpu=processes > 1 and not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
    )


def build_trainer(config: GeneratorTrainConfig, args: Any, rows: Sequence[Mapping[str, Any]], model: Any, tokenizer: Any) -> Any:
    """An SFTTrainer on conversational prompt/completion rows (tokenized, labels built)."""
    from datasets import Dataset
    from trl import SFTTrainer

    return SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(list(rows)), processing_class=tokenizer,
        peft_config=lora_config(config) if config.finetune == "lora" else None,
    )


def check_same_run(config: GeneratorTrainConfig, out: Path, data: list[dict[str, Any]]) -> None:
    """Refuse to resume a run whose saved config or data differ in what changes the result."""
    import yaml

    from mucode.config import config_to_dict

    path = out / "config.yaml"
    if not path.is_file():
        return
    previous = yaml.safe_load(path.read_text()) or {}
    current = config_to_dict(config)
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and previous.get(k) != current[k])
    saved = out / DATA_FILE
    if saved.is_file() and [d["sha256"] for d in json.loads(saved.read_text())] != [d["sha256"] for d in data]:
        changed.append("data contents")
    if changed:
        raise ValueError(
            f"{out} holds a generator trained with a different config ({', '.join(changed)} differ); "
            "rerun with the same settings and data to resume, pass --overwrite to start over, or choose another --out"
        )


def train_generator(config: GeneratorTrainConfig, *, overwrite: bool = False, progress: bool = True, say: Say | None = None) -> TrainResult:
    """SFT of `config.model` (or `config.init_from`) on `config.data`; saves OUT/model and
    resumes if OUT has checkpoints of the same config and data (see the module docstring)."""
    from accelerate import PartialState
    from transformers.trainer_utils import get_last_checkpoint

    started = time.perf_counter()
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    args = sft_config(config, processes, progress)  # sets up the (distributed) state
    state = PartialState()
    if state.num_processes != processes:
        raise RuntimeError(f"WORLD_SIZE={processes} but the distributed state has {state.num_processes} processes; launch with accelerate launch or torchrun")
    say = say if (say is not None and state.is_main_process) else (lambda message: None)
    out = Path(config.out)
    rows = read_sft_rows(config.data)
    data = [{"path": str(p), "sha256": file_sha256(p)} for p in config.data]
    if overwrite and state.is_main_process and out.exists():
        shutil.rmtree(out)
    state.wait_for_everyone()
    check_same_run(config, out, data)
    state.wait_for_everyone()  # every process has read the old config before the main one writes
    if state.is_main_process:
        from mucode.config import save_config

        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        (out / DATA_FILE).write_text(json.dumps(data, indent=2))

    model, tokenizer = load_generator(config.init_from or config.model, dtype=config.dtype)
    fit = fit_to_length(rows, tokenizer, config.max_length)
    rows, too_long = fit.rows, fit.dropped
    if not rows:
        raise ValueError(f"every example is longer than max_length={config.max_length} tokens even without earlier attempts; raise --max-length")
    trainer = build_trainer(config, args, rows, model, tokenizer)
    _say_setup(say, config, args, trainer, processes, len(rows), too_long, fit.truncated)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last:
        say(f"resuming from {last}")
    result = trainer.train(resume_from_checkpoint=last)
    model_dir = _save_final(trainer, config, out, state)
    seconds = time.perf_counter() - started
    losses = [float(entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    if state.is_main_process:
        _write_run(config, out, data, result, losses, seconds, last, len(rows), too_long, fit.truncated)
    state.wait_for_everyone()
    return TrainResult(model_dir, result.global_step, float(result.training_loss), losses, seconds, last, len(rows), too_long, fit.truncated)


def _save_final(trainer: Any, config: GeneratorTrainConfig, out: Path, state: Any) -> Path:
    """OUT/model: the trained weights and tokenizer. A LoRA adapter is saved to OUT/adapter and
    merged into a fresh copy of the base there (merging the live model would not work with
    weights partitioned by ZeRO-3), so generation loads OUT/model like any other folder."""
    model_dir = out / "model"
    if config.finetune == "full":
        trainer.save_model(str(model_dir))  # gathered under ZeRO-3 / FSDP
        return model_dir
    adapter_dir = out / "adapter"
    trainer.save_model(str(adapter_dir))
    state.wait_for_everyone()
    if state.is_main_process:
        from peft import PeftModel

        base, tokenizer = load_generator(config.init_from or config.model, dtype=config.dtype)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        merged.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    state.wait_for_everyone()
    return model_dir


def _say_setup(say: Say, config: GeneratorTrainConfig, args: Any, trainer: Any, processes: int, n_examples: int, too_long: int, truncated: int) -> None:
    from mucode.verifier.model import count_parameters

    trainable, total = count_parameters(trainer.model)
    per_pass = config.micro_batch_size * processes
    updates_per_epoch = math.ceil(math.ceil(n_examples / per_pass) / args.gradient_accumulation_steps)
    total_updates = args.max_steps if args.max_steps > 0 else math.ceil(updates_per_epoch * config.epochs)
    source = config.init_from or config.model
    say(
        f"model {source} ({config.finetune}): {trainable:,} of {total:,} parameters trained; {n_examples} examples "
        f"({truncated} shortened to {config.max_length} tokens by removing their oldest attempts, {too_long} still longer "
        f"left out), {config.batch_size} per update = "
        f"{config.micro_batch_size} x {processes} processes x {args.gradient_accumulation_steps} accumulation steps; "
        f"{updates_per_epoch} updates per epoch, {total_updates} in total"
    )


def _write_run(
    config: GeneratorTrainConfig, out: Path, data: list[dict[str, Any]], result: Any, losses: list[float],
    seconds: float, resumed: str | None, examples: int, too_long: int, truncated: int,
) -> None:
    import torch
    import transformers
    import trl

    from mucode import __version__

    run = {
        "mucode": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "trl": trl.__version__, "seed": config.seed,
        "base_model": config.model, "init_from": config.init_from, "finetune": config.finetune,
        "data": data, "examples": examples, "too_long": too_long, "truncated": truncated,
        "global_step": result.global_step, "train_loss": result.training_loss, "losses": losses,
        "seconds": round(seconds, 1), "resumed_from": resumed,
    }
    (out / "run.json").write_text(json.dumps(run, indent=2))
