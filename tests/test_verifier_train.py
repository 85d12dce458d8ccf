"""Verifier training on the tiny random model: 2 updates of Bradley-Terry and of BCE (finite
loss, checkpoints, config, logs), resume, config checks, head-only and LoRA modes, evaluation on
the held-out problems, and the CLI."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest


pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402
from test_verifier_data import make_record, write_folder  # noqa: E402

from mucode.cli.verifier import verifier as verifier_group  # noqa: E402
from mucode.config import load_config  # noqa: E402
from mucode.verifier.config import VerifierTrainConfig  # noqa: E402
from mucode.verifier.trainer import train_verifier  # noqa: E402


@pytest.fixture(scope="module")
def rollout_dir(tmp_path_factory) -> Path:
    """12 problems x 4 trajectories of 1-3 turns with random outcomes."""
    rng = random.Random(0)
    records = [
        make_record(f"p{i:02d}", r, [rng.random() < 0.4 for _ in range(rng.randint(1, 3))])
        for i in range(12)
        for r in range(4)
    ]
    return write_folder(tmp_path_factory.mktemp("rollouts"), records)


def tiny_config(out: Path, rollout_dir: Path, model: Path, **overrides) -> VerifierTrainConfig:
    values = dict(
        trajectories=[str(rollout_dir)],
        model=str(model),
        out=str(out),
        max_steps=2,
        save_steps=1,
        batch_size=4,
        micro_batch_size=2,
        learning_rate=1e-3,
        max_length=128,
        holdout_fraction=0.25,
        logging_steps=1,
    )
    return VerifierTrainConfig(**{**values, **overrides})


def test_bradley_terry_two_updates_then_resume(tmp_path, rollout_dir, tiny_model_dir):
    out = tmp_path / "bt"
    result = train_verifier(tiny_config(out, rollout_dir, tiny_model_dir), progress=False)
    assert result.global_step == 2 and math.isfinite(result.train_loss) and result.resumed_from is None
    for folder in (out / "model", out / "checkpoint-2"):
        assert {"config.json", "tokenizer.json", "verifier.json"} <= {p.name for p in folder.iterdir()}
    assert (out / "checkpoint-2" / "optimizer.pt").is_file()
    assert load_config(VerifierTrainConfig, out / "config.yaml") == tiny_config(out, rollout_dir, tiny_model_dir)
    assert list(out.glob("runs/*/events.out.tfevents.*")), "no TensorBoard log"
    split = json.loads((out / "split.json").read_text())
    assert len(split["heldout"]) == 3 and not set(split["train"]) & set(split["heldout"])
    assert json.loads((out / "model" / "verifier.json").read_text())["loss"] == "bt"
    history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert all(math.isfinite(h["loss"]) and "accuracy" in h and "margin" in h for h in history if "loss" in h)

    resumed = train_verifier(tiny_config(out, rollout_dir, tiny_model_dir, max_steps=3), progress=False)
    assert resumed.resumed_from.endswith("checkpoint-2") and resumed.global_step == 3

    with pytest.raises(ValueError, match="different config \\(learning_rate differ\\)"):
        train_verifier(tiny_config(out, rollout_dir, tiny_model_dir, learning_rate=1e-4), progress=False)
    fresh = train_verifier(
        tiny_config(out, rollout_dir, tiny_model_dir, learning_rate=1e-4, max_steps=1), overwrite=True, progress=False
    )
    assert fresh.resumed_from is None and fresh.global_step == 1


def test_bce_through_the_cli_then_eval_on_held_out_problems(tmp_path, rollout_dir, tiny_model_dir):
    out = tmp_path / "bce"
    args = [
        "train",
        "--trajectories",
        str(rollout_dir),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--loss",
        "bce",
        "--max-steps",
        "2",
        "--save-steps",
        "2",
        "--batch-size",
        "4",
        "--micro-batch-size",
        "2",
        "--learning-rate",
        "1e-3",
        "--max-length",
        "128",
        "--holdout-fraction",
        "0.25",
        "--report-to",
        "none",
    ]
    run = CliRunner().invoke(verifier_group, args, standalone_mode=False)
    assert run.exception is None, run.output
    assert "saved" in run.output and "loss" in run.output and "updates per epoch" in run.output
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and all(math.isfinite(h["loss"]) for h in state["log_history"] if "loss" in h)

    run = CliRunner().invoke(verifier_group, ["eval", "--verifier", str(out), "--json"], standalone_mode=False)
    assert run.exception is None, run.output
    report = json.loads(run.output[run.output.index("{") :])
    assert report["data"]["problems"] == 3 and report["calibration"]["is_probability"] is True
    # the reported ROC-AUC is the one of the written per-candidate scores (a check that can fail,
    # unlike 0 <= roc_auc <= 1)
    from mucode.verifier.metrics import roc_auc

    rows = [json.loads(line) for line in (out / "eval-heldout-scores.jsonl").read_text().splitlines()]
    labeled_rows = [r for r in rows if r["label"] is not None]
    expected = roc_auc([r["score"] for r in labeled_rows], [bool(r["label"]) for r in labeled_rows])
    assert report["roc_auc"] == pytest.approx(expected, nan_ok=True) and len(labeled_rows) > 0
    curve = report["best_of_n"]["first_turn"]
    assert [p["n"] for p in curve] == [1, 2, 3, 4] and curve[0]["verifier"] == pytest.approx(curve[0]["random"])
    assert (out / "eval-heldout.json").is_file() and (out / "eval-heldout-scores.jsonl").is_file()


def test_head_only_training_leaves_the_backbone_unchanged_and_reuses_features(tmp_path, rollout_dir, tiny_model_dir):
    import torch

    from mucode.verifier.data import load_candidates
    from mucode.verifier.model import load_backbone, load_verifier
    from mucode.verifier.scoring import VerifierScorer

    out, cache = tmp_path / "head", tmp_path / "features"
    config = tiny_config(
        out,
        rollout_dir,
        tiny_model_dir,
        finetune="head",
        learning_rate=1e-2,
        feature_cache=str(cache),
        max_steps=-1,
        epochs=3.0,
    )
    said: list[str] = []
    result = train_verifier(config, progress=False, say=said.append)
    assert math.isfinite(result.train_loss) and result.global_step == math.ceil(result.pairs / 4) * 3
    assert list(out.glob("runs/head/events.out.tfevents.*")) and (out / "head_log.jsonl").is_file()
    trained, _, spec = load_verifier(out, device="cpu")
    start, _ = load_backbone(str(tiny_model_dir), seed=0)
    assert spec.finetune == "head" and spec.features.startswith(str(cache))
    # the head alone is saved, not a copy of the backbone
    assert (out / "model" / "head.safetensors").is_file() and not list((out / "model").glob("model*.safetensors"))
    assert spec.base_model == str(tiny_model_dir.resolve())
    before, after = start.state_dict(), trained.state_dict()
    assert not torch.equal(before["score.weight"], after["score.weight"])
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("score."))

    said.clear()
    train_verifier(config, overwrite=True, progress=False, say=said.append)  # a second run encodes nothing again
    n = int(next(m for m in said if "distinct turns" in m).split("features of ")[1].split()[0])
    assert any(m.endswith(f"{n} distinct turns, {n} cached") for m in said)

    turns = load_candidates([rollout_dir])
    cached, forward = (
        VerifierScorer.load(str(out), device="cpu"),
        VerifierScorer.load(str(out), device="cpu", use_features=False),
    )
    assert cached.features is not None and forward.features is None
    conversations = [c.messages() for c in turns]
    assert cached.score_messages(conversations) == pytest.approx(forward.score_messages(conversations), abs=1e-4)


def test_a_head_verifier_scoring_keeps_the_features_it_computes_and_an_interrupted_one_resumes(
    tmp_path, rollout_dir, tiny_model_dir
):
    """keep_features: programs the training never encoded are scored like a backbone forward pass,
    their features land in the cache as the scoring goes (so one killed midway keeps its finished
    batches), and a later scoring of them runs no backbone."""
    from mucode.verifier.scoring import VerifierScorer

    out, cache = tmp_path / "head", tmp_path / "features"
    train_verifier(
        tiny_config(out, rollout_dir, tiny_model_dir, finetune="head", feature_cache=str(cache), max_steps=-1),
        progress=False,
    )
    prompts = [f"Write f{i}." for i in range(12)]
    replies = [f"def f{i}(x):\n    return x + {i} * " + "1 + " * i + "0" for i in range(12)]
    forward = VerifierScorer.load(str(out), device="cpu", use_features=False).score(prompts, replies)

    def count_backbone_calls(scorer, fail_after=None):
        calls = []

        def hook(*_):
            calls.append(1)
            if fail_after is not None and len(calls) > fail_after:
                raise KeyboardInterrupt

        scorer.model.base_model.register_forward_pre_hook(hook)
        return calls

    interrupted = VerifierScorer.load(str(out), device="cpu", batch_size=2, keep_features=True)
    before = len(interrupted.features)
    interrupted.features.save_every = 2
    count_backbone_calls(interrupted, fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.score(prompts, replies)
    resumed = VerifierScorer.load(str(out), device="cpu", batch_size=2, keep_features=True)
    assert len(resumed.features) == before + 6  # the 3 finished batches of 2
    calls = count_backbone_calls(resumed)
    assert resumed.score(prompts, replies) == pytest.approx(forward, abs=1e-4) and len(calls) == 3
    again = VerifierScorer.load(str(out), device="cpu", batch_size=2)
    calls = count_backbone_calls(again)
    assert again.score(prompts, replies) == pytest.approx(forward, abs=1e-4) and calls == []
    assert len(again.features) == before + 12


def test_a_head_only_verifier_whose_backbone_is_gone_names_it(tmp_path, rollout_dir, tiny_model_dir):
    import shutil

    from mucode.verifier.model import load_verifier

    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_model_dir, backbone)
    out = tmp_path / "head"
    train_verifier(
        tiny_config(out, rollout_dir, backbone, finetune="head", max_steps=-1, epochs=1.0), progress=False, say=print
    )
    assert load_verifier(out, device="cpu")[2].base_model == str(backbone.resolve())
    shutil.rmtree(backbone)
    with pytest.raises(FileNotFoundError, match="backbone .*verifier.json base_model"):
        load_verifier(out, device="cpu")


def test_a_verifier_scores_in_the_dtype_it_was_trained_in(tmp_path, rollout_dir, tiny_model_dir):
    """A bf16 head read its features in bf16: scoring loads it in bf16 too (fp32 features would
    be other numbers than the head was fitted on), unless a dtype is asked for."""
    import torch

    from mucode.verifier.model import load_verifier
    from mucode.verifier.scoring import VerifierScorer

    out = tmp_path / "bf16"
    config = tiny_config(out, rollout_dir, tiny_model_dir, finetune="head", dtype="bfloat16", max_steps=-1, epochs=1.0)
    train_verifier(config, progress=False, say=lambda _: None)
    model, _, spec = load_verifier(out, device="cpu")
    assert spec.dtype == "bfloat16" and model.dtype == torch.bfloat16
    assert VerifierScorer.load(str(out), device="cpu").model.dtype == torch.bfloat16
    assert load_verifier(out, device="cpu", dtype="float32")[0].dtype == torch.float32


@pytest.mark.parametrize("finetune", ["head", "full"])
def test_run_json_counts_the_sequences_fitting_shortened(tmp_path, rollout_dir, tiny_model_dir, finetune):
    """With the whole history as context and a short max_length, later turns lose earlier attempts:
    the run says how many and run.json keeps the counts; a roomy max_length changes nothing."""
    counts = {}
    for max_length in (40, 4096):
        out = tmp_path / f"{finetune}{max_length}"
        config = tiny_config(
            out, rollout_dir, tiny_model_dir, finetune=finetune, context="history", max_length=max_length, max_steps=1
        )
        said: list[str] = []
        train_verifier(config, progress=False, say=said.append)
        counts[max_length] = json.loads((out / "run.json").read_text())["length_fit"]
        assert any(f"max_length {max_length}:" in m for m in said) == (max_length == 40)
    assert counts[40]["sequences"] == counts[4096]["sequences"] > 0
    assert counts[40]["context_truncated"] > 0 and counts[40]["clipped"] > 0
    assert counts[4096] == {
        "sequences": counts[4096]["sequences"],
        "context_truncated": 0,
        "attempts_removed": 0,
        "clipped": 0,
    }


def test_fit_head_separates_separable_features():
    import torch

    from mucode.verifier.head import fit_head

    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(8, generator=generator)
    good, bad = (
        torch.randn(20, 8, generator=generator) + direction,
        torch.randn(20, 8, generator=generator) - direction,
    )
    features = torch.cat([good, bad])
    config = VerifierTrainConfig(learning_rate=0.1, epochs=5.0, batch_size=16, micro_batch_size=16, logging_steps=5)
    pairs = torch.tensor([[i, 20 + j] for i in range(20) for j in range(20)])
    weight, history = fit_head(features, config, torch.zeros(1, 8), pairs=pairs, progress=False)
    assert ((good @ weight.T) > (bad @ weight.T).T).float().mean() > 0.95
    assert len(history) == 5 * 400 // 16 // 5 and all(math.isfinite(h["loss"]) and "margin" in h for h in history)
    labels = torch.cat([torch.ones(20), torch.zeros(20)])
    weight_bce, _ = fit_head(
        features,
        VerifierTrainConfig(**{**config.__dict__, "loss": "bce"}),
        torch.zeros(1, 8),
        labels=labels,
        progress=False,
    )
    assert (((features @ weight_bce.T).squeeze(-1) > 0).float() == labels).float().mean() > 0.95
    again, _ = fit_head(features, config, torch.zeros(1, 8), pairs=pairs, progress=False)
    assert torch.equal(again, weight)  # seeded


def test_lora_adapter_is_saved_and_scores(tmp_path, rollout_dir, tiny_model_dir):
    pytest.importorskip("peft")
    from mucode.verifier.scoring import VerifierScorer

    out = tmp_path / "lora"
    train_verifier(
        tiny_config(out, rollout_dir, tiny_model_dir, finetune="lora", max_steps=1, report_to="none"), progress=False
    )
    assert (out / "model" / "adapter_config.json").is_file()
    scores = VerifierScorer.load(str(out), device="cpu").score(["Write f."], ["def f(): pass"])
    assert len(scores) == 1 and math.isfinite(scores[0])


def test_no_pairs_is_an_error_that_says_what_to_do(tmp_path, tiny_model_dir):
    folder = write_folder(tmp_path / "r", [make_record("a", 0, [True]), make_record("b", 0, [False])])
    with pytest.raises(ValueError, match="no training pairs.*--loss bce"):
        train_verifier(
            VerifierTrainConfig(trajectories=[str(folder)], model=str(tiny_model_dir), out=str(tmp_path / "o")),
            progress=False,
        )


@pytest.mark.parametrize("command", ["train", "score", "eval"])
def test_help_renders(command):
    run = CliRunner().invoke(verifier_group, [command, "--help"])
    assert run.exit_code == 0 and "Examples:" in run.output


def test_presets_and_config_errors(tmp_path):
    from mucode.verifier.config import train_config

    paper = VerifierTrainConfig()
    assert (paper.learning_rate, paper.epochs, paper.batch_size, paper.pairs_per_problem, paper.finetune) == (
        1e-6,
        2.0,
        64,
        32,
        "full",
    )
    cpu = train_config("cpu", None, {"learning_rate": 3e-5})
    assert cpu.model == "smollm2-135m" and cpu.learning_rate == 3e-5
    (tmp_path / "v.yaml").write_text("loss: bce\nlearning_rate: 2e-5\n")
    assert train_config("cpu-head", tmp_path / "v.yaml").finetune == "head"
    with pytest.raises(ValueError, match="did you mean 'pairs_per_problem'"):
        train_config(None, None, {"pair_per_problem": 3})
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        VerifierTrainConfig(batch_size=10, micro_batch_size=4)
    run = CliRunner().invoke(
        verifier_group, ["train", "--preset", "cpu", "--batch-size", "10", "--micro-batch-size", "4"]
    )
    assert run.exit_code != 0 and "multiple of micro_batch_size" in run.output


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate_launch(tmp_path, rollout_dir, tiny_model_dir):
    """The same entry point under `accelerate launch` with 2 processes: without GPUs the trainer
    switches to torch.distributed over gloo (accelerate's MULTI_CPU)."""
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "mucode",
        "verifier",
        "train",
        "--trajectories",
        str(rollout_dir),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--micro-batch-size",
        "2",
        "--max-length",
        "128",
        "--report-to",
        "none",
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 processes" in run.stdout and (out / "model" / "verifier.json").is_file()
    assert json.loads((out / "run.json").read_text())["global_step"] == 2
