"""`mucode generator grpo`: TRL's GRPOTrainer with the real sandbox as the reward, end to end on a
tiny model (a few updates), resumed, with `mucode generator train`'s output layout."""

from __future__ import annotations

import json

import pytest


pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402

from mucode.cli import app  # noqa: E402
from mucode.execution import Executor, Limits  # noqa: E402
from mucode.problems import load_humaneval  # noqa: E402
from mucode.training.grpo import GRPOTrainConfig, SandboxReward  # noqa: E402


def fenced(program: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": f"Here it is:\n```python\n{program}\n```"}]


def test_the_reward_is_the_sandbox_on_the_public_tests_and_correct_adds_the_private_ones():
    problems = list(load_humaneval())[:2]
    solution = problems[0].reference_solution
    # HumanEval/0's public (docstring) examples have 3 and 6 numbers, answers False and True
    public_only = "def has_close_elements(numbers, threshold):\n    return len(numbers) == 6"
    completions = [
        fenced(solution),
        fenced(public_only),
        fenced("def nothing():\n    pass"),
        fenced("while True:\n    pass"),
    ]
    ids = [problems[0].id] * 4
    with Executor(workers=2, limits=Limits(timeout_s=5.0)) as executor:
        reward = SandboxReward(problems, executor, "problem")
        public, correct = reward.public(completions, ids), reward.correct(completions, ids)
    assert public == [1.0, 1.0, 0.0, 0.0]  # a program that never ends is timed out, not hung
    assert correct == [1.0, 0.0, 0.0, 0.0]


def test_batch_size_must_hold_whole_groups():
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOTrainConfig(num_generations=3, batch_size=4, micro_batch_size=4)
    with pytest.raises(ValueError, match="num_generations=1"):
        GRPOTrainConfig(num_generations=1)


def test_grpo_runs_end_to_end_on_a_tiny_model_and_resumes(tiny_model_dir, tmp_path):
    out = tmp_path / "grpo"
    args = [
        "generator", "grpo", "--model", str(tiny_model_dir), "--problems", "humaneval", "--limit", "2",
        "--lora", "--num-generations", "2", "--batch-size", "2", "--micro-batch-size", "2",
        "--max-new-tokens", "8", "--max-steps", "2", "--save-steps", "1", "--logging-steps", "1",
        "--learning-rate", "1e-3", "--report-to", "none", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args, standalone_mode=False)
    assert result.exception is None, result.output
    assert "2 problems x 2 completions" in result.output and "saved" in result.output
    assert (out / "model" / "config.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["global_step"] == 2 and len(run["problems"]) == 2
    assert run["rewards"] and all(0.0 <= r["public"] <= 1.0 and "correct" in r for r in run["rewards"])

    more = CliRunner().invoke(app, [*args[:-4], "--max-steps", "3", "--out", str(out)], standalone_mode=False)
    assert more.exception is None, more.output
    assert "resuming from" in more.output and "checkpoint-2" in more.output
    assert json.loads((out / "run.json").read_text())["global_step"] == 3
    changed = CliRunner().invoke(app, [*args[:-2], "--temperature", "0.1", "--out", str(out)], standalone_mode=False)
    assert changed.exception is not None and "temperature" in str(changed.exception)
