"""Accelerate configs shipped with mucode, for multi-GPU verifier and generator training, sized
to the machines at hand.

    accelerate launch --config_file $(python -m mucode.verifier.launch zero3) \\
        -m mucode verifier train --preset paper --trajectories runs/r0 --out runs/v0
    # 2 machines x 8 GPUs: on machine R (0 and 1), the same command with
    python -m mucode.verifier.launch zero3 --machines 2 --gpus-per-machine 8 --machine-rank R \\
        --main-process-ip NODE0 --out zero3-2x8.yaml
    # sized from a Ray cluster's nodes and GPUs (docs/scaling.md):
    python -m mucode.scaling.launch zero3 --ray auto --machine-rank R --out zero3.yaml

Names: zero3 (DeepSpeed ZeRO-3, bf16), fsdp (FSDP2, full state dict, bf16), ddp (plain data
parallel). The shipped files assume one machine with 4 GPUs (the paper's); with `--machines`,
`--gpus-per-machine` (default: this machine's CUDA devices) or `--machine-rank` a sized copy is
written (`--out`, default: a file in the temporary folder) and its path printed. `batch_size` in
the training config is per update over all processes, so the same config gives the same updates
on any number of GPUs.

Several processes on a machine without GPUs (gloo): `accelerate launch --multi_gpu
--num_processes 2 -m mucode verifier train ...` or `torchrun --nproc_per_node 2 -m
mucode verifier train ...`; the trainer sees WORLD_SIZE > 1 and no CUDA and runs on CPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any


CONFIGS = {"zero3": "deepspeed_zero3.yaml", "fsdp": "fsdp.yaml", "ddp": "multi_gpu.yaml"}


def accelerate_config(name: str) -> Path:
    """Path of a shipped accelerate config (see CONFIGS)."""
    from importlib.resources import files

    if name not in CONFIGS:
        raise ValueError(f"unknown accelerate config {name!r}; choose one of {', '.join(CONFIGS)}")
    return Path(str(files("mucode").joinpath("configs", "accelerate", CONFIGS[name])))


def sized_config(
    name: str,
    *,
    machines: int = 1,
    gpus_per_machine: int,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int = 29500,
) -> dict[str, Any]:
    """The shipped config `name` for `machines` x `gpus_per_machine` processes, as machine
    `machine_rank` of them sees it (several machines need the first one's address)."""
    import yaml

    if machines < 1 or gpus_per_machine < 1:
        raise ValueError(f"got {machines} machines x {gpus_per_machine} GPUs; both must be >= 1")
    if not 0 <= machine_rank < machines:
        raise ValueError(f"got machine_rank={machine_rank} for {machines} machines; it must be in [0, {machines})")
    if machines > 1 and not main_process_ip:
        raise ValueError("several machines need --main-process-ip: the address of machine 0, where rank 0 listens")
    config = yaml.safe_load(accelerate_config(name).read_text())
    config.update(num_machines=machines, num_processes=machines * gpus_per_machine, machine_rank=machine_rank)
    if machines > 1:
        config.update(main_process_ip=main_process_ip, main_process_port=main_process_port)
    return config


def write_sized_config(config: dict[str, Any], out: str | Path | None, name: str) -> Path:
    import yaml

    path = Path(out) if out else Path(tempfile.mkdtemp(prefix="mucode-accelerate-")) / CONFIGS[name]
    path.write_text(yaml.safe_dump(config, sort_keys=True))
    return path


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def parser(description: str = "Print the path of a shipped accelerate config, sized if asked.") -> Any:
    args = argparse.ArgumentParser(description=description)
    args.add_argument("name", nargs="?", default="zero3", choices=list(CONFIGS))
    args.add_argument("--machine-rank", type=int, default=0)
    args.add_argument("--main-process-ip", default=None)
    args.add_argument("--main-process-port", type=int, default=29500)
    args.add_argument("--out", default=None, help="Where to write the sized config (default: a temporary file).")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parser()
    args.add_argument("--machines", type=int, default=None)
    args.add_argument("--gpus-per-machine", type=int, default=None, help="Default: this machine's CUDA devices.")
    given = args.parse_args(argv)
    if given.machines is None and given.gpus_per_machine is None and given.machine_rank == 0 and not given.out:
        print(accelerate_config(given.name))  # the shipped file as it is
        return 0
    gpus = given.gpus_per_machine or local_gpus()
    if gpus < 1:
        raise SystemExit("error: no CUDA device here; give --gpus-per-machine")
    config = sized_config(
        given.name,
        machines=given.machines or 1,
        gpus_per_machine=gpus,
        machine_rank=given.machine_rank,
        main_process_ip=given.main_process_ip,
        main_process_port=given.main_process_port,
    )
    print(write_sized_config(config, given.out, given.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
