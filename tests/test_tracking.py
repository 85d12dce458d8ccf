"""Final metrics of rollouts and searches reach TensorBoard (and W&B) through `--report-to`, the
trainers' switch: the event files are read back with TensorBoard's own reader."""

from __future__ import annotations

import importlib.util
import json

import pytest
from click.testing import CliRunner

from mucode.cli import app
from mucode.reports.tracking import report_metrics, scalars
from mucode.rollouts import RolloutConfig
from mucode.search import SearchConfig


def read_scalars(folder) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


def test_summaries_flatten_to_scalars():
    flat = scalars({"accuracy": 0.5, "accuracy_by_turn": [0.25, 0.5], "ci": {"low": 0.1}, "ok": True, "m": "x"}, "s")
    assert flat == {"s/accuracy": 0.5, "s/accuracy_by_turn/1": 0.25, "s/accuracy_by_turn/2": 0.5, "s/ci/low": 0.1}


def test_report_to_none_writes_nothing_and_tensorboard_writes_events(tmp_path):
    assert report_metrics("none", tmp_path, {"accuracy": 0.5}, tag="search") == []
    assert not (tmp_path / "runs").exists()
    report_metrics("tensorboard", tmp_path, {"accuracy": 0.5, "by_turn": [0.25]}, tag="search")
    assert read_scalars(tmp_path / "runs" / "search") == {"search/accuracy": 0.5, "search/by_turn/1": 0.25}


def test_unknown_or_missing_targets_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="tensorboard, wandb, none"):
        RolloutConfig(report_to="mlflow")
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ValueError, match="pip install wandb"):
            SearchConfig(report_to="tensorboard,wandb")
    else:
        SearchConfig(report_to="tensorboard,wandb")


@pytest.fixture
def problems(tmp_path):
    path = tmp_path / "problems.jsonl"
    rows = [
        {
            "id": f"p{i}",
            "prompt": f"Return {i}.",
            "public_tests": [f"assert f() == {i}"],
            "private_tests": [f"assert f() + 1 == {i + 1}"],
        }
        for i in range(2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_rollout_reports_its_summary_to_tensorboard(tmp_path, tiny_model_dir, problems):
    out = tmp_path / "rollouts"
    args = ["rollout", "--model", str(tiny_model_dir), "--problems", str(problems), "--rollouts", "2", "--turns", "2",
            "--max-new-tokens", "8", "--backend", "hf", "--report-to", "tensorboard", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args, standalone_mode=False)
    assert result.exception is None, result.output
    summary = json.loads((out / "summary.json").read_text())
    logged = read_scalars(out / "runs" / "rollouts")
    assert logged["rollouts/trajectories"] == summary["trajectories"] == 4
    assert logged["rollouts/correct"] == pytest.approx(summary["correct"])


def test_a_search_reports_its_summary_to_tensorboard(tmp_path, tiny_model_dir, problems):
    out = tmp_path / "search"
    args = ["search", "--model", str(tiny_model_dir), "--problems", str(problems), "--n", "2", "--turns", "2",
            "--selector", "random", "--max-new-tokens", "8", "--backend", "hf", "--report-to", "tensorboard",
            "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args, standalone_mode=False)
    assert result.exception is None, result.output
    summary = json.loads((out / "summary.json").read_text())
    logged = read_scalars(out / "runs" / "search")
    assert logged["search/searches"] == summary["searches"] == 2
    assert logged["search/accuracy"] == pytest.approx(summary["accuracy"])
    assert logged["search/accuracy_by_turn/1"] == pytest.approx(summary["accuracy_by_turn"][0])
