"""Expert iteration for the generator: relabel stored trajectories into SFT examples
(relabel.py: the µCode local search expert and the STaR / Multi-STaR baselines) and train the
generator on them with TRL's SFTTrainer (sft.py, config.py). See docs/training.md."""

from mucode.training.config import PRESETS, GeneratorTrainConfig, generator_config
from mucode.training.relabel import (
    RelabelConfig,
    RelabelOptions,
    RelabelResult,
    RelabelStats,
    SFTExample,
    Trajectory,
    build_sft_data,
    load_trajectories,
    read_scores,
    relabel,
    run_relabel,
    score_final_programs,
    write_examples,
)
from mucode.training.sft import TrainResult, train_generator


__all__ = [
    "PRESETS",
    "GeneratorTrainConfig",
    "generator_config",
    "RelabelConfig",
    "RelabelOptions",
    "RelabelResult",
    "RelabelStats",
    "SFTExample",
    "Trajectory",
    "build_sft_data",
    "load_trajectories",
    "read_scores",
    "relabel",
    "run_relabel",
    "score_final_programs",
    "write_examples",
    "TrainResult",
    "train_generator",
]
