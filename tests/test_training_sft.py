"""Generator SFT on the tiny random model: the loss mask (prompt masked, completion and its
end-of-turn token trained, padding never hiding it, pad != end-of-turn even when the tokenizer
ships pad = eos), a short real run whose loss falls and whose saved model has learned to reply
and stop, resume, LoRA merged into the saved model, config checks and the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest


pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402

from mucode.cli import app  # noqa: E402
from mucode.config import load_config  # noqa: E402
from mucode.generation.base import SamplingParams  # noqa: E402
from mucode.generation.hf import TransformersGenerator  # noqa: E402
from mucode.training.config import PRESETS, GeneratorTrainConfig, generator_config  # noqa: E402
from mucode.training.sft import (  # noqa: E402
    build_trainer,
    drop_too_long,
    fit_to_length,
    load_generator,
    read_sft_rows,
    sft_config,
    train_generator,
)


PROMPT = [{"role": "user", "content": "Write add(a, b)."}]
REPLY = "def add(a, b):\n    return a + b"
LONG_PROMPT = PROMPT + [
    {"role": "assistant", "content": "def add(a, b): pass"},
    {"role": "user", "content": "assert add(1, 2) == 3 failed"},
]


def row(prompt, reply: str) -> dict:
    return {
        "prompt": prompt,
        "completion": [{"role": "assistant", "content": reply}],
        "problem_id": "p",
        "folder": 0,
        "rollout": 0,
        "state": 0,
        "source": "own",
    }


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(out: Path, data: Path, model: Path, **overrides) -> GeneratorTrainConfig:
    values = dict(
        data=[str(data)],
        model=str(model),
        out=str(out),
        max_steps=4,
        save_steps=2,
        batch_size=4,
        micro_batch_size=2,
        learning_rate=1e-3,
        max_length=256,
        logging_steps=1,
    )
    return GeneratorTrainConfig(**{**values, **overrides})


def trained_tokens(labels) -> list[int]:
    return [int(t) for t in labels if t != -100]


def collated_batch(model_dir: Path, tmp_path: Path):
    """(tokenizer, collated batch) of a short and a longer example, as the trainer feeds them."""
    model, tokenizer = load_generator(str(model_dir))
    config = tiny_config(tmp_path / "out", tmp_path / "unused.jsonl", model_dir, report_to="none")
    rows = [row(PROMPT, REPLY), row(LONG_PROMPT, "def add(a, b):\n    return b + a")]
    trainer = build_trainer(
        config,
        sft_config(config, 1, progress=False),
        [{k: r[k] for k in ("prompt", "completion")} for r in rows],
        model,
        tokenizer,
    )
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    examples.sort(key=lambda e: len(e["input_ids"]))  # the trainer shuffles; short one first
    return (
        tokenizer,
        trainer.data_collator([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]),
        examples,
    )


def check_completion_mask(tokenizer, batch, examples) -> None:
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id != end_of_turn
    for i, (prompt, reply) in enumerate([(PROMPT, REPLY), (LONG_PROMPT, "def add(a, b):\n    return b + a")]):
        ids = examples[i]["input_ids"]
        labels = batch["labels"][i].tolist()
        prompt_ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        assert ids[: len(prompt_ids)] == list(prompt_ids)
        assert all(t == -100 for t in labels[: len(prompt_ids)]), "a prompt token is trained"
        trained = trained_tokens(labels)
        assert trained == ids[len(prompt_ids) :], "every completion token is trained, nothing else"
        assert tokenizer.decode(trained) == reply + "<|im_end|>\n"
        assert end_of_turn in trained, "the end-of-turn token is masked out"
        # padding (the short row) is masked, and the real end-of-turn token right before it is not
        assert labels[len(ids) :] == [-100] * (len(labels) - len(ids))
        assert batch["attention_mask"][i].tolist() == [1] * len(ids) + [0] * (len(labels) - len(ids))
    assert len(batch["labels"][0]) > len(examples[0]["input_ids"]), "the short row was not padded"


def test_loss_mask_covers_the_completion_and_its_end_of_turn_token(tiny_model_dir, tmp_path):
    tokenizer, batch, examples = collated_batch(tiny_model_dir, tmp_path)
    check_completion_mask(tokenizer, batch, examples)


def test_pad_equal_to_end_of_turn_is_replaced_and_never_masks_it(tiny_model_dir, tmp_path):
    # SmolLM2 ships pad = eos = <|im_end|>; the reference code's collator then masked every <|im_end|>
    model_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "pad-is-eos"))
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (model_dir / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<|im_end|>"}))
    model, tokenizer = load_generator(str(model_dir))
    assert tokenizer.pad_token != "<|im_end|>" and model.config.pad_token_id == tokenizer.pad_token_id
    tokenizer, batch, examples = collated_batch(model_dir, tmp_path)
    check_completion_mask(tokenizer, batch, examples)


def test_short_run_learns_to_reply_and_stop_and_saves_a_loadable_model(tiny_model_dir, tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", [row(PROMPT, REPLY)] * 8)
    out = tmp_path / "g"
    config = tiny_config(
        out,
        data,
        tiny_model_dir,
        max_steps=60,  # 30 updates at lr 1e-2 memorized the reply on an AVX-512 CPU, not on an AVX2-only one
        save_steps=60,
        batch_size=4,
        micro_batch_size=4,
        learning_rate=3e-3,
        lr_scheduler="constant",
    )
    result = train_generator(config, progress=False)
    assert result.global_step == 60 and len(result.losses) == 60 and all(math.isfinite(x) for x in result.losses)
    assert result.losses[-1] < 0.1 * result.losses[0], result.losses
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (out / "model").iterdir()}
    assert (out / "checkpoint-60" / "optimizer.pt").is_file()
    assert list(out.glob("runs/**/events.out.tfevents.*")), "no TensorBoard log"
    assert load_config(GeneratorTrainConfig, out / "config.yaml") == config
    run = json.loads((out / "run.json").read_text())
    assert run["examples"] == 8 and run["global_step"] == 60 and run["data"][0]["sha256"]
    # the generation backend loads it; greedy decoding reproduces the reply and stops at <|im_end|>
    generator = TransformersGenerator.from_pretrained(str(out / "model"), device="cpu")
    ((completion,),) = generator.generate([PROMPT], SamplingParams(temperature=0.0, max_new_tokens=40))
    assert completion.text == REPLY and completion.finish_reason == "stop"


def test_resume_from_the_last_checkpoint_and_refuse_a_changed_run(tiny_model_dir, tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", [row(PROMPT, REPLY), row(LONG_PROMPT, REPLY)] * 4)
    out = tmp_path / "g"
    first = train_generator(tiny_config(out, data, tiny_model_dir, report_to="none"), progress=False)
    assert first.global_step == 4 and first.resumed_from is None
    resumed = train_generator(tiny_config(out, data, tiny_model_dir, report_to="none", max_steps=6), progress=False)
    assert resumed.resumed_from.endswith("checkpoint-4") and resumed.global_step == 6
    with pytest.raises(ValueError, match="learning_rate differ"):
        train_generator(tiny_config(out, data, tiny_model_dir, report_to="none", learning_rate=1e-4), progress=False)
    write_rows(data, [row(PROMPT, REPLY)] * 8)
    with pytest.raises(ValueError, match="data contents differ"):
        train_generator(tiny_config(out, data, tiny_model_dir, report_to="none", max_steps=8), progress=False)
    fresh = train_generator(
        tiny_config(out, data, tiny_model_dir, report_to="none", max_steps=2), overwrite=True, progress=False
    )
    assert fresh.resumed_from is None and fresh.global_step == 2


@pytest.mark.parametrize("train", ["generator", "verifier"])
def test_bf16_autocast_trains_on_a_cpu(tiny_model_dir, tmp_path, train):
    """--mixed-precision bf16 without a GPU (the fastest setting on an AVX512-BF16 CPU,
    benchmarks/sft_step.py): transformers refuses bf16 on a CPU unless told to use the CPU."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU path is what is tested")
    if train == "generator":
        data = write_rows(tmp_path / "sft.jsonl", [row(PROMPT, REPLY)] * 4)
        result = train_generator(
            tiny_config(tmp_path / "g", data, tiny_model_dir, report_to="none", mixed_precision="bf16", max_steps=2),
            progress=False,
        )
        assert result.global_step == 2 and result.train_loss == result.train_loss  # finite, not NaN
    else:
        from mucode.verifier.config import VerifierTrainConfig
        from mucode.verifier.trainer import reward_config

        config = VerifierTrainConfig(
            model=str(tiny_model_dir), out=str(tmp_path / "v"), mixed_precision="bf16", report_to="none"
        )
        args = reward_config(config, 1, progress=False)
        assert args.bf16 and args.use_cpu


def test_cli_lora_run_saves_a_merged_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    data = write_rows(tmp_path / "sft.jsonl", [row(PROMPT, REPLY)] * 4)
    out = tmp_path / "lora"
    args = [
        "generator",
        "train",
        "--data",
        str(data),
        "--model",
        str(tiny_model_dir),
        "--lora",
        "--max-steps",
        "3",
        "--batch-size",
        "4",
        "--micro-batch-size",
        "4",
        "--learning-rate",
        "1e-2",
        "--report-to",
        "none",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args, standalone_mode=False)
    assert result.exception is None, result.output
    assert "(lora)" in result.output and "saved" in result.output
    assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "model" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not (merged.state_dict()[name] == base.state_dict()[name]).all(), "the adapter was not merged"
    # a run folder that kept only the adapter gets the same merged model back
    import torch

    from mucode.training.sft import restore_model

    assert restore_model(out) == out / "model"  # present: nothing is done
    shutil.rmtree(out / "model")
    again = AutoModelForCausalLM.from_pretrained(restore_model(out))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in merged.state_dict().items())
    assert not (out / "model.partial").exists()
    conflict = CliRunner().invoke(app, [*args, "--finetune", "full"], standalone_mode=False)
    assert conflict.exception is not None and "--lora conflicts" in str(conflict.exception)


def test_over_long_examples_are_left_out_not_cut(tiny_model_dir):
    _, tokenizer = load_generator(str(tiny_model_dir))
    rows = [row(PROMPT, REPLY), row(PROMPT, REPLY * 40)]
    kept, too_long = drop_too_long(rows, tokenizer, max_length=64)
    assert kept == rows[:1] and too_long == 1
    fit = fit_to_length(rows, tokenizer, max_length=64)  # no earlier attempt to remove: left out
    assert fit.rows == rows[:1] and (fit.truncated, fit.dropped) == (0, 1)


def test_long_contexts_lose_their_oldest_attempts_first_and_keep_the_target_whole(tiny_model_dir):
    from mucode.training.sft import sequence_length

    _, tokenizer = load_generator(str(tiny_model_dir))
    attempts = []
    for k in range(3):  # three earlier attempts, the oldest first
        attempts += [{"role": "assistant", "content": f"def add(a, b):\n    return {k}  # attempt {k} " + "x" * 60},
                     {"role": "user", "content": f"Feedback: attempt {k} failed " + "y" * 60}]  # fmt: skip
    long_row = row(PROMPT + attempts, REPLY)
    full = sequence_length(tokenizer, long_row)
    one_attempt = sequence_length(tokenizer, row(PROMPT + attempts[4:], REPLY))
    fit = fit_to_length([long_row], tokenizer, max_length=one_attempt)
    assert full > one_attempt and (fit.truncated, fit.dropped, fit.attempts_removed) == (1, 0, 2)
    (kept,) = fit.rows
    assert kept["prompt"] == PROMPT + attempts[4:]  # the newest attempt stays, the problem stays
    assert kept["completion"] == long_row["completion"]  # the target is whole


def test_bad_data_and_configs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_sft_rows([tmp_path / "missing.jsonl"])
    bad = write_rows(tmp_path / "bad.jsonl", [{"prompt": PROMPT, "completion": "just text"}])
    with pytest.raises(ValueError, match="row 1 needs a `completion` of exactly one assistant message"):
        read_sft_rows([bad])
    with pytest.raises(ValueError, match="holds no examples"):
        read_sft_rows([write_rows(tmp_path / "empty.jsonl", [])])
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        GeneratorTrainConfig(batch_size=6, micro_batch_size=4)
    with pytest.raises(ValueError, match="unknown preset"):
        generator_config("gpu")
    paper = generator_config("paper")
    assert (paper.learning_rate, paper.epochs, paper.batch_size, paper.finetune) == (5e-7, 2.0, 16, "full")
    assert generator_config("cpu").model == "smollm2-135m" and set(PRESETS) == {"paper", "cpu"}
