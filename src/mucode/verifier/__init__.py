"""The learned verifier R(problem, program) of µCode (METHOD.md §1-§2): data from stored
trajectories, Bradley-Terry or BCE training of a scalar head on a causal LM (TRL's
RewardTrainer; full, LoRA or head-only), batched scoring, and evaluation on held-out problems.

    mucode verifier train --trajectories runs/r0 --preset cpu --holdout-fraction 0.2 --out runs/v0
    mucode verifier eval --verifier runs/v0
    mucode verifier score --verifier runs/v0 --input runs/r1 --out runs/r1/scores.jsonl

    from mucode.verifier import VerifierScorer
    reward = VerifierScorer.load("runs/v0")          # reward(prompts, completions) -> list[float]

Importing this package is cheap: torch, transformers and trl load when a function needs them.
Modules: config (dataclasses, presets), data (labels, pairs, split, export), losses, model
(backbone, pad token, encoding, verifier.json), trainer, scoring, metrics, evaluate, launch
(accelerate configs). See docs/verifier.md.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {
    "VerifierDataConfig": "config",
    "VerifierTrainConfig": "config",
    "VerifierScoreConfig": "config",
    "VerifierEvalConfig": "config",
    "PRESETS": "config",
    "train_config": "config",
    "Candidate": "data",
    "Pair": "data",
    "DataStats": "data",
    "load_candidates": "data",
    "candidates_from_records": "data",
    "labeled": "data",
    "build_pairs": "data",
    "split_problems": "data",
    "prepare_data": "data",
    "export_data": "data",
    "turn_label": "data",
    "pair_records": "data",
    "row_record": "data",
    "write_records": "data",
    "bradley_terry_loss": "losses",
    "bce_loss": "losses",
    "VerifierSpec": "model",
    "load_backbone": "model",
    "load_verifier": "model",
    "train_verifier": "trainer",
    "TrainResult": "trainer",
    "VerifierScorer": "scoring",
    "score_inputs": "scoring",
    "evaluate_verifier": "evaluate",
    "accelerate_config": "launch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"mucode.verifier.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
