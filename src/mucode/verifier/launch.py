"""Accelerate configs shipped with mucode, for multi-GPU verifier training.

    accelerate launch --config_file $(python -m mucode.verifier.launch zero3) \\
        -m mucode verifier train --preset paper --trajectories runs/r0 --out runs/v0

Names: zero3 (DeepSpeed ZeRO-3, bf16), fsdp (FSDP2, full state dict, bf16), ddp (plain data
parallel) each assume one machine with 4 GPUs (the paper's); change `num_processes` to yours
(or pass --num_processes). `batch_size` in the verifier config is per update over all
processes, so the same config gives the same updates on any number of GPUs.

Several processes on a machine without GPUs (gloo): `accelerate launch --multi_gpu
--num_processes 2 -m mucode verifier train ...` or `torchrun --nproc_per_node 2 -m
mucode verifier train ...`; the trainer sees WORLD_SIZE > 1 and no CUDA and runs on CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path


CONFIGS = {"zero3": "deepspeed_zero3.yaml", "fsdp": "fsdp.yaml", "ddp": "multi_gpu.yaml"}


def accelerate_config(name: str) -> Path:
    """Path of a shipped accelerate config (see CONFIGS)."""
    from importlib.resources import files

    if name not in CONFIGS:
        raise ValueError(f"unknown accelerate config {name!r}; choose one of {', '.join(CONFIGS)}")
    return Path(str(files("mucode").joinpath("configs", "accelerate", CONFIGS[name])))


if __name__ == "__main__":
    print(accelerate_config(sys.argv[1] if len(sys.argv) > 1 else "zero3"))
