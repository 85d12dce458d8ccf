"""`python -m mucode.verifier.launch`: the shipped accelerate configs, and copies sized to the
machines at hand, read back by accelerate's own config loader."""

from __future__ import annotations

import subprocess
import sys

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from mucode.verifier.launch import CONFIGS, accelerate_config, sized_config, write_sized_config


def test_the_shipped_configs_load_in_accelerate():
    for name in CONFIGS:
        loaded = load_config_from_file(str(accelerate_config(name)))
        assert (loaded.num_machines, loaded.num_processes) == (1, 4)


def test_a_sized_config_has_the_clusters_shape(tmp_path):
    out = tmp_path / "fsdp.yaml"
    command = [sys.executable, "-m", "mucode.verifier.launch", "fsdp", "--machines", "2", "--gpus-per-machine", "8"]
    command += ["--machine-rank", "1", "--main-process-ip", "10.1.2.3", "--out", str(out)]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    assert printed == str(out)
    loaded = load_config_from_file(printed)
    assert (loaded.num_machines, loaded.num_processes, loaded.machine_rank) == (2, 16, 1)
    assert (loaded.main_process_ip, loaded.main_process_port, loaded.distributed_type) == ("10.1.2.3", 29500, "FSDP")
    one = load_config_from_file(str(write_sized_config(sized_config("ddp", gpus_per_machine=2), None, "ddp")))
    assert (one.num_machines, one.num_processes) == (1, 2)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="main-process-ip"):
        sized_config("zero3", machines=2, gpus_per_machine=8)
    with pytest.raises(ValueError, match="machine_rank=2 for 2 machines"):
        sized_config("zero3", machines=2, gpus_per_machine=8, machine_rank=2, main_process_ip="h")
    with pytest.raises(ValueError, match="unknown accelerate config"):
        sized_config("zero2", gpus_per_machine=1)
