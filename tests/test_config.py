"""Configs: YAML, overrides, unknown keys and wrong types are errors that say what to do."""

from __future__ import annotations

import pytest

from mucode.config import load_config, save_config
from mucode.rollouts import RolloutConfig


def test_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollouts: 4\ntemperature: 1\nmodel: tiny\n")
    config = load_config(RolloutConfig, path, {"rollouts": 2, "seed": None})
    assert (config.rollouts, config.temperature, config.model, config.seed) == (2, 1.0, "tiny", 0)


def test_unknown_key_suggests_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout: 4\n")
    with pytest.raises(ValueError, match=r"unknown key 'rollout'; did you mean 'rollouts'"):
        load_config(RolloutConfig, path)


def test_wrong_type_names_the_key():
    with pytest.raises(ValueError, match=r"turns: expected int, got str"):
        load_config(RolloutConfig, None, {"turns": "three"})


def test_validation_in_the_constructor():
    with pytest.raises(ValueError, match="rollouts=3 with temperature=0"):
        RolloutConfig(rollouts=3, temperature=0.0)


def test_save_and_load_round_trip(tmp_path):
    config = RolloutConfig(model="m", rollouts=5, limit=7)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(RolloutConfig, tmp_path / "config.yaml") == config


def test_exponent_without_a_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("temperature: 7e-1\n")
    assert load_config(RolloutConfig, path).temperature == 0.7
