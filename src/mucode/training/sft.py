"""Train the generator on relabeled SFT examples with TRL's SFTTrainer (METHOD.md §2, step 4).

    mucode generator train --data runs/sft0.jsonl runs/sft1.jsonl --preset cpu --out runs/g1
    accelerate launch --config_file $(python -m mucode.verifier.launch zero3) \\
        -m mucode generator train --preset paper --data runs/sft1.jsonl --out runs/g1

The loss covers only the target assistant message, including the end-of-turn token that the chat
template writes after it (`<|im_end|>` for SmolLM2 and Qwen, `<|eot_id|>` for Llama 3): TRL tokenizes
`prompt` with the generation prompt and `prompt + completion`, and trains the tokens after their
common prefix. Labels are built before padding and padded with -100, and the pad token is chosen
apart from every end-of-turn token (`mucode.generation.padding`), so padding never hides the end-of-turn token
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

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mucode.finetune import Say, TrainResult, logged_losses, lora_config, start_run, train_resuming, training_arguments
from mucode.training.config import GeneratorTrainConfig


DATA_FILE = "data.json"  # the SFT files and their sha256: resuming on changed data is an error


# ------------------------------------------------------------------------------------------ data


def read_sft_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The prompt/completion pairs of SFT files (JSONL or Parquet, `mucode generator relabel`),
    checked: `prompt` is a list of messages and `completion` one assistant message."""
    if not paths:
        raise ValueError(
            "no SFT data given; pass --data FILE.jsonl [FILE ...] (written by `mucode generator relabel`)"
        )
    rows = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(
                f"SFT data file {path} does not exist; write it with `mucode generator relabel --out {path}`"
            )
        for number, row in enumerate(_read_rows(path), 1):
            _check_row(row, path, number)
            rows.append(
                {"prompt": [dict(m) for m in row["prompt"]], "completion": [dict(m) for m in row["completion"]]}
            )
    if not rows:
        raise ValueError(
            f"the SFT data ({', '.join(map(str, paths))}) holds no examples; relabel more trajectories or another method"
        )
    return rows


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import datasets

        return datasets.Dataset.from_parquet(str(path)).to_list()
    from mucode.store import read_jsonl

    return read_jsonl(path)


def _check_row(row: Mapping[str, Any], path: Path, number: int) -> None:
    prompt, completion = row.get("prompt"), row.get("completion")
    if not (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in prompt)
    ):
        raise ValueError(
            f"{path}: row {number} needs a `prompt` list of {{role, content}} messages (TRL's conversational prompt/completion format)"
        )
    if not (
        isinstance(completion, list)
        and len(completion) == 1
        and isinstance(completion[0], dict)
        and completion[0].get("role") == "assistant"
    ):
        raise ValueError(f"{path}: row {number} needs a `completion` of exactly one assistant message")


def sequence_length(tokenizer: Any, row: Mapping[str, Any]) -> int:
    """Tokens of prompt + completion as TRL tokenizes a conversational example."""
    return len(
        tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)["input_ids"]
    )


def drop_too_long(
    rows: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int
) -> tuple[list[Mapping[str, Any]], int]:
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
    from mucode.generation.padding import set_pad_token

    resolved = resolve_model(generator_dir(ref))
    if resolved.kind == "gguf":
        raise ValueError(
            f"{ref!r} is a GGUF file; training needs a Hugging Face folder: use a preset name or convert it once (`mucode models pull`)"
        )
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {ref!r} has no chat template; the generator is trained on chats (use an instruct/chat model)"
        )
    model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=getattr(torch, dtype))
    set_pad_token(tokenizer, model, padding_side="right")
    return model, tokenizer


# -------------------------------------------------------------------------------------- training


def sft_config(config: GeneratorTrainConfig, processes: int, progress: bool = True) -> Any:
    """TRL's SFTConfig for `config` (see `mucode.finetune.training_arguments`)."""
    return training_arguments("SFTConfig", config, processes, progress, completion_only_loss=True, packing=False)


def build_trainer(
    config: GeneratorTrainConfig, args: Any, rows: Sequence[Mapping[str, Any]], model: Any, tokenizer: Any
) -> Any:
    """An SFTTrainer on conversational prompt/completion rows (tokenized, labels built)."""
    from datasets import Dataset
    from trl import SFTTrainer

    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        processing_class=tokenizer,
        peft_config=lora_config(config, "CAUSAL_LM") if config.finetune == "lora" else None,
    )


def data_changes(out: Path, data: list[dict[str, Any]]) -> list[str]:
    """["data contents"] when OUT was trained on SFT files with other contents, else []."""
    saved = out / DATA_FILE
    if saved.is_file() and [d["sha256"] for d in json.loads(saved.read_text())] != [d["sha256"] for d in data]:
        return ["data contents"]
    return []


def train_generator(
    config: GeneratorTrainConfig, *, overwrite: bool = False, progress: bool = True, say: Say | None = None
) -> TrainResult:
    """SFT of `config.model` (or `config.init_from`) on `config.data`; saves OUT/model and
    resumes if OUT has checkpoints of the same config and data (see the module docstring)."""
    from mucode.generation.models import file_sha256

    rows = read_sft_rows(config.data)
    data = [{"path": str(p), "sha256": file_sha256(Path(p))} for p in config.data]
    run = start_run(
        config,
        lambda processes: sft_config(config, processes, progress),
        kind="generator",
        overwrite=overwrite,
        say=say,
        other_changes=lambda out: data_changes(out, data),
    )
    run.save_config(config, **{DATA_FILE: json.dumps(data, indent=2)})

    base = config.init_from or config.model
    model, tokenizer = load_generator(base, dtype=config.dtype)
    fit = fit_to_length(rows, tokenizer, config.max_length)
    if not fit.rows:
        raise ValueError(
            f"every example is longer than max_length={config.max_length} tokens even without earlier attempts; raise --max-length"
        )
    trainer = build_trainer(config, run.args, fit.rows, model, tokenizer)
    what = (
        f"{len(fit.rows)} examples ({fit.truncated} shortened to {config.max_length} tokens by removing their "
        f"oldest attempts, {fit.dropped} still longer left out)"
    )
    run.say_setup(config, base, trainer, len(fit.rows), what)
    output, last = train_resuming(trainer, run)
    model_dir = save_final(trainer, run.out, run.state, finetune=config.finetune, base=base, dtype=config.dtype)
    losses = logged_losses(trainer)
    counts = {"too_long": fit.dropped, "truncated": fit.truncated}
    result = TrainResult(
        model_dir,
        output.global_step,
        float(output.training_loss),
        run.seconds(),
        last,
        len(fit.rows),
        losses,
        **counts,
    )
    details = {"init_from": config.init_from, "finetune": config.finetune, "data": data, "examples": len(fit.rows)}
    return run.finish(config, result, base_model=config.model, **details, **counts, losses=losses)


def save_final(trainer: Any, out: Path, state: Any, *, finetune: str, base: str, dtype: str) -> Path:
    """OUT/model: the trained weights and tokenizer. A LoRA adapter is saved to OUT/adapter and
    merged into a fresh copy of `base` there (merging the live model would not work with weights
    partitioned by ZeRO-3), so generation loads OUT/model like any other folder."""
    model_dir = out / "model"
    if finetune == "full":
        trainer.save_model(str(model_dir))  # gathered under ZeRO-3 / FSDP
        return model_dir
    adapter_dir = out / "adapter"
    trainer.save_model(str(adapter_dir))
    state.wait_for_everyone()
    if state.is_main_process:
        merge_adapter(adapter_dir, base, model_dir, dtype=dtype)
    state.wait_for_everyone()
    return model_dir


def merge_adapter(adapter_dir: Path, base: str, model_dir: Path, *, dtype: str = "float32") -> Path:
    """Write `base` with the LoRA adapter merged in to `model_dir` (weights and tokenizer)."""
    from peft import PeftModel

    model, tokenizer = load_generator(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def restore_model(out: str | Path) -> Path:
    """OUT/model of a finished training run; when only OUT/adapter is left (a kept or copied run folder
    may drop the merged copy: it is as large as the base), it is merged again from the adapter and
    the base named in OUT/config.yaml, as the run wrote it."""
    from mucode.config import read_yaml_mapping

    out = Path(out)
    model_dir = out / "model"
    if (model_dir / "config.json").is_file() or not (out / "adapter" / "adapter_config.json").is_file():
        return model_dir
    config = read_yaml_mapping(out / "config.yaml")  # of `generator train` or `generator grpo`
    partial = model_dir.with_name("model.partial")
    shutil.rmtree(partial, ignore_errors=True)
    merge_adapter(out / "adapter", config.get("init_from") or config["model"], partial, dtype=config["dtype"])
    partial.rename(model_dir)
    return model_dir
