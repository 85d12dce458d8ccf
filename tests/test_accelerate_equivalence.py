"""Data-parallel verifier training gives the single-process updates: the tiny model trained with
Bradley-Terry for a few steps once in one process (B pairs per pass) and once under
`accelerate launch` with 2 CPU processes over gloo (B/2 pairs per process and pass), same seed and
B pairs per update: the loss curves and the final weights agree within float tolerance.

Why float64: a data-parallel run sums the gradient in another order than one process. In float32
that changes a gradient by ~1e-7 of its summands, and where the summands cancel (a gradient near 0
but above Adam's eps) Adam divides by the gradient's own size, so the noise becomes an update of
up to ±lr: final weights then differ by ~1e-4 for no bug at all (seen: 2.3e-4 under torch 2.14).
In float64 the same noise is ~1e-16 of the summands: measured, it leaves the final weights ~2e-9
apart, while a real difference in the updates (a wrong batch split, a missed gradient all-reduce,
a different learning rate) moves a weight by ~lr = 3e-3. WEIGHT_TOL sits between the two, three
orders of magnitude from each.

About 40 s on the shared 2-core machine (three processes importing torch and TRL)."""

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

from test_verifier_data import make_record, write_folder  # noqa: E402


BATCH, STEPS = 8, 4
LEARNING_RATE = 3e-3
WEIGHT_TOL = 1e-6  # float64 reduction-order noise through Adam ~2e-9; a real update difference ~LEARNING_RATE
LAUNCH_2_CPU = [
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
]  # as in test_verifier_train.py: without GPUs the trainer switches to gloo (accelerate's MULTI_CPU)


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


def launch_training(
    launcher: list[str], command: list[str], out: Path, model: Path, micro_batch: int
) -> tuple[list[dict], str]:
    """Run `mucode COMMAND...` with the shared tiny-run settings: the logged steps and standard output."""
    argv = [
        *launcher,
        "-m",
        "mucode",
        *command,
        "--model",
        str(model),
        "--out",
        str(out),
        "--max-steps",
        str(STEPS),
        "--batch-size",
        str(BATCH),
        "--micro-batch-size",
        str(micro_batch),
        "--learning-rate",
        str(LEARNING_RATE),
        "--dtype",
        "float64",
        "--lr-scheduler",
        "constant",
        "--max-length",
        "128",
        "--logging-steps",
        "1",
        "--save-steps",
        str(STEPS),
        "--report-to",
        "none",
        "--seed",
        "7",
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    history = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())["log_history"]
    return [h for h in history if "loss" in h], run.stdout


def train(launcher: list[str], out: Path, rollout_dir: Path, model: Path, micro_batch: int) -> tuple[list[dict], str]:
    return launch_training(
        launcher, ["verifier", "train", "--trajectories", str(rollout_dir)], out, model, micro_batch
    )


def final_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(next(folder.glob("*.safetensors"))))


def test_two_gloo_processes_follow_the_single_process_loss_curve(tmp_path, rollout_dir, tiny_model_dir):
    single, _ = train([sys.executable], tmp_path / "one", rollout_dir, tiny_model_dir, micro_batch=BATCH)
    double, printed = train(LAUNCH_2_CPU, tmp_path / "two", rollout_dir, tiny_model_dir, micro_batch=BATCH // 2)
    assert "2 processes" in printed
    assert [h["step"] for h in single] == [h["step"] for h in double] == list(range(1, STEPS + 1))
    losses = [(a["loss"], b["loss"]) for a, b in zip(single, double)]
    assert all(math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4) for a, b in losses), losses
    assert abs(losses[-1][0] - losses[0][0]) > 1e-2, losses  # the weights moved: later losses test the updates
    one, two = final_weights(tmp_path / "one" / "model"), final_weights(tmp_path / "two" / "model")
    assert one.keys() == two.keys()
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < WEIGHT_TOL, f"largest weight difference {worst}"


def sft_data(folder: Path) -> Path:
    """16 conversational prompt/completion rows of equal shape (TRL's SFT format)."""
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Write add{i}."}],
            "completion": [{"role": "assistant", "content": f"def add{i}(a, b):\n    return a + b + {i}\n"}],
        }
        for i in range(10, 26)
    ]
    path = folder / "sft.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def train_generator(
    launcher: list[str], out: Path, data: Path, model: Path, micro_batch: int
) -> tuple[list[dict], str]:
    return launch_training(launcher, ["generator", "train", "--data", str(data)], out, model, micro_batch)


def test_generator_sft_under_two_gloo_processes_follows_the_single_process_loss_curve(tmp_path, tiny_model_dir):
    data = sft_data(tmp_path)
    single, _ = train_generator([sys.executable], tmp_path / "one", data, tiny_model_dir, micro_batch=BATCH)
    double, _ = train_generator(LAUNCH_2_CPU, tmp_path / "two", data, tiny_model_dir, micro_batch=BATCH // 2)
    assert [h["step"] for h in single] == [h["step"] for h in double] == list(range(1, STEPS + 1))
    losses = [(a["loss"], b["loss"]) for a, b in zip(single, double)]
    assert all(math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4) for a, b in losses), losses
    assert abs(losses[-1][0] - losses[0][0]) > 1e-2, losses
    one, two = final_weights(tmp_path / "one" / "model"), final_weights(tmp_path / "two" / "model")
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < WEIGHT_TOL, f"largest weight difference {worst}"
