"""Accelerate configs sized from a Ray cluster: one training process per GPU of every node that
has GPUs (`mucode.verifier.launch` for the configs themselves).

    python -m mucode.scaling.launch zero3 --ray auto --machine-rank R --out zero3.yaml
    accelerate launch --config_file zero3.yaml -m mucode generator train ...    # on every GPU node, R = 0, 1, ...

The first GPU node (by node id) is machine 0 and its address the main process's; every node must
hold the same GPU count (accelerate's static rendezvous starts the same number of processes on each).
"""

from __future__ import annotations

import logging
from typing import Any

from mucode.verifier.launch import parser, sized_config, write_sized_config


def cluster_gpu_nodes(address: str) -> list[tuple[str, int]]:
    """(address, GPUs) of every live node of the Ray cluster at `address` that has GPUs, in node-id order."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)
    nodes = sorted((n for n in ray.nodes() if n["Alive"]), key=lambda n: n["NodeID"])
    return [(n["NodeManagerAddress"], int(n["Resources"].get("GPU", 0))) for n in nodes if n["Resources"].get("GPU")]


def cluster_config(name: str, address: str, **options: Any) -> dict[str, Any]:
    """The accelerate config `name` sized to the GPU nodes of the Ray cluster at `address`."""
    nodes = cluster_gpu_nodes(address)
    if not nodes:
        raise ValueError(f"the Ray cluster at {address} has no node with GPUs; train with accelerate on CPUs instead")
    counts = {gpus for _, gpus in nodes}
    if len(counts) > 1:
        raise ValueError(
            f"the GPU nodes hold different GPU counts ({', '.join(f'{ip}: {gpus}' for ip, gpus in nodes)}); "
            "accelerate starts the same number of processes on every machine"
        )
    main_ip = nodes[0][0] if len(nodes) > 1 else None
    return sized_config(name, machines=len(nodes), gpus_per_machine=counts.pop(), main_process_ip=main_ip, **options)


def main(argv: list[str] | None = None) -> int:
    args = parser("Write an accelerate config sized to a Ray cluster's GPU nodes; print its path.")
    args.add_argument("--ray", required=True, help="Ray cluster address: auto or HOST:PORT.")
    given = args.parse_args(argv)
    options = {"machine_rank": given.machine_rank, "main_process_port": given.main_process_port}
    config = cluster_config(given.name, given.ray, **options)
    if given.main_process_ip:
        config["main_process_ip"] = given.main_process_ip
    print(write_sized_config(config, given.out, given.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
