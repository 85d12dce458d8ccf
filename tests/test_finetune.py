"""The fine-tuning base under both trainers: one config base, one TrainResult, one resume check
(a saved config resumes whatever its key order; a changed setting or input is refused), and the
import direction (the base sits below both trainers; SFT takes nothing from the verifier)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from mucode.config import config_to_dict
from mucode.finetune import FinetuneConfig, TrainResult, check_same_run
from mucode.training.config import GeneratorTrainConfig
from mucode.verifier.config import VerifierTrainConfig


SRC = Path(__file__).resolve().parents[1] / "src" / "mucode"


def test_both_trainer_configs_extend_the_base_and_keep_their_own_defaults():
    generator, verifier = GeneratorTrainConfig(), VerifierTrainConfig()
    assert isinstance(generator, FinetuneConfig) and isinstance(verifier, FinetuneConfig)
    assert (generator.learning_rate, generator.batch_size, generator.out) == (5e-7, 16, "runs/generator")
    assert (verifier.learning_rate, verifier.batch_size, verifier.out) == (1e-6, 64, "runs/verifier")
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        VerifierTrainConfig(batch_size=6, micro_batch_size=4)  # the base's check runs for the verifier too


def test_one_train_result_for_both_trainers():
    import mucode.training.sft as sft
    import mucode.verifier.trainer as trainer

    assert sft.TrainResult is trainer.TrainResult is TrainResult


def test_a_saved_config_resumes_in_any_key_order_and_a_changed_one_is_refused(tmp_path):
    config = GeneratorTrainConfig(data=["a.jsonl"], out=str(tmp_path))
    saved = dict(reversed(list(config_to_dict(config).items())))  # e.g. written before the base existed
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    check_same_run(config, tmp_path, kind="generator")
    check_same_run(GeneratorTrainConfig(data=["a.jsonl"], out="elsewhere", max_steps=9), tmp_path, kind="generator")
    with pytest.raises(ValueError, match=r"a generator trained with a different config \(learning_rate differ\)"):
        check_same_run(GeneratorTrainConfig(data=["a.jsonl"], learning_rate=1e-5), tmp_path, kind="generator")
    with pytest.raises(ValueError, match="data contents differ"):
        check_same_run(config, tmp_path, kind="generator", other_changes=lambda out: ["data contents"])


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, lazy imports inside functions included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_base_sits_below_both_trainers():
    base = imported_modules(SRC / "finetune.py")
    assert not {m for m in base if m.startswith(("mucode.training", "mucode.verifier"))}
    for path in (SRC / "training" / "sft.py", SRC / "training" / "config.py"):
        assert not {m for m in imported_modules(path) if m.startswith("mucode.verifier")}, path
    for path in (SRC / "verifier").glob("*.py"):
        assert not {m for m in imported_modules(path) if m.startswith("mucode.training")}, path
