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


def test_a_generation_budget_stops_grpo_and_a_larger_one_resumes_the_count(tiny_model_dir, tmp_path):
    """Each update samples 2 completions of <= 8 tokens: a budget of 20 tokens stops after the
    update that reaches it (with a checkpoint), a rerun trains no further, and a larger budget read
    from a rollout folder's summary goes on from the saved count."""
    out = tmp_path / "grpo"
    args = [
        "generator", "grpo", "--model", str(tiny_model_dir), "--problems", "humaneval", "--limit", "2",
        "--lora", "--num-generations", "2", "--batch-size", "2", "--micro-batch-size", "2",
        "--max-new-tokens", "8", "--epochs", "50", "--save-steps", "100", "--logging-steps", "1",
        "--report-to", "none", "--out", str(out),
    ]  # fmt: skip

    def run_with(*budget: str) -> dict:
        result = CliRunner().invoke(app, [*args, *budget], standalone_mode=False)
        assert result.exception is None, result.output
        return json.loads((out / "run.json").read_text())

    first = run_with("--max-generated-tokens", "20")
    assert first["budget_reached"] and 20 <= first["generated_tokens"] <= 20 + 16 - 1
    assert 2 <= first["global_step"] <= 20 and (out / f"checkpoint-{first['global_step']}").is_dir()
    again = run_with("--max-generated-tokens", "20")
    assert (again["global_step"], again["generated_tokens"]) == (first["global_step"], first["generated_tokens"])

    rollouts = tmp_path / "rollouts"
    rollouts.mkdir()
    (rollouts / "summary.json").write_text(json.dumps({"completion_tokens": 60}))
    more = run_with("--budget-from", str(rollouts))
    assert more["budget_reached"] and 60 <= more["generated_tokens"] <= 60 + 16 - 1
    assert more["global_step"] > first["global_step"] and more["max_generated_tokens"] == 60


def test_a_budget_folder_without_a_token_count_is_named(tmp_path):
    from mucode.training.grpo import generation_budget

    with pytest.raises(FileNotFoundError, match="summary.json does not exist"):
        generation_budget(GRPOTrainConfig(budget_from=str(tmp_path)))
    (tmp_path / "summary.json").write_text(json.dumps({"trajectories": 3}))
    with pytest.raises(ValueError, match="summary.json: field completion_tokens is None"):
        generation_budget(GRPOTrainConfig(budget_from=str(tmp_path)))
    with pytest.raises(ValueError, match="not both"):
        GRPOTrainConfig(budget_from=str(tmp_path), max_generated_tokens=5)


def test_the_budget_example_reads_the_replications_iteration_0_token_count():
    from pathlib import Path

    from mucode.config import load_config
    from mucode.training.grpo import generation_budget

    root = Path(__file__).resolve().parent.parent
    config = load_config(GRPOTrainConfig, root / "examples" / "grpo-budget.yaml")
    config.budget_from = str(root / config.budget_from)
    summary = json.loads((root / "replication" / "iter0-rollouts" / "summary.json").read_text())
    assert generation_budget(config) == summary["completion_tokens"] == 1_105_374
