"""`mucode run --ray` on a real two-node Ray cluster on loopback (`ray start --head` and a second
`ray start --address`, two raylets on this machine): a worker node is killed while the first
rollout stage runs, then the driver itself is killed, a new node joins and the same command
resumes. Every record (both rollout stages, every evaluation) equals a one-process run's with the
same seed. Slow (Ray start, actor processes importing torch); run it with
`pytest -m slow tests/test_ray_cluster.py` after `pip install 'mucode[ray]'`."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mucode.cli import main


pytestmark = pytest.mark.slow

# Ray (2.60) registers a node given 127.0.0.1 under the host's other address; 127.0.0.2 stays on lo.
LOOPBACK = "127.0.0.2"
TIMING_KEYS = {"generate_s", "duration_s", "wall_s"}  # seconds differ from run to run
# Enough rollouts that the node loss lands while the first rollout stage still has work left; the
# one-process run seeds per episode too (Ray needs it; a one-process pipeline's default is per step);
# float32, because in bf16 (the default on a CPU with AVX512-BF16) a batch of other rows can flip a
# near-tie of the tiny random model's logits.
SETTINGS = "limit: 12\nrollouts: 4\nrollout: {seeding: episode, dtype: float32}\nsearch: {dtype: float32}\n"


class LoopbackCluster:
    """A head node and worker nodes started with the `ray` command, all on LOOPBACK, one CPU each."""

    def __init__(self, head_cpus: int = 1) -> None:
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self._ray_start(["--head", "--port", str(self.port), "--include-dashboard", "false"], cpus=head_cpus)

    def _ray_start(self, args: list[str], cpus: int = 1, hide: Path | None = None, gpus: int = 0) -> None:
        command = [self.ray, "start", "--node-ip-address", LOOPBACK, "--disable-usage-stats"]
        command += [*args, "--num-cpus", str(cpus), "--num-gpus", str(gpus)]  # GPUs declared: Ray schedules by them
        if hide is not None:  # the node's processes live in a mount namespace where `hide` is an empty tmpfs
            script = f"mount -t tmpfs none {shlex.quote(str(hide))} && exec {shlex.join(command)}"
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        started = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, f"{shlex.join(command)}:\n{started.stdout[-2000:]}{started.stderr[-2000:]}"

    def add_worker(self, hide: Path | None = None, gpus: int = 0) -> int:
        """Start a worker node (one that cannot see the folder `hide`); its node-manager port names it."""
        port = free_port()
        self._ray_start(["--address", self.address, "--node-manager-port", str(port)], hide=hide, gpus=gpus)
        return port

    def node_processes(self, port: int) -> list:
        """The worker node's raylet and everything it started (its actors)."""
        import psutil

        raylets = [
            p for p in psutil.process_iter(["cmdline"]) if f"--node_manager_port={port}" in (p.info["cmdline"] or [])
        ]
        assert len(raylets) == 1, f"found {len(raylets)} raylets of the worker node"
        return [raylets[0], *raylets[0].children(recursive=True)]

    def running(self, port: int, method: str) -> bool:
        """Whether an actor of the worker node is running `method` (Ray titles its process so)."""
        import psutil

        try:
            return any(" ".join(p.cmdline()).startswith(f"ray::{method}") for p in self.node_processes(port))
        except psutil.NoSuchProcess:
            return False

    def kill_worker(self, port: int) -> int:
        """SIGKILL the worker node's processes: the node is lost."""
        victims = self.node_processes(port)
        for process in victims:
            process.kill()
        return len(victims)

    def stop(self) -> None:
        subprocess.run([self.ray, "stop", "--force"], env=self.env, capture_output=True, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_cluster(head_cpus: int = 1):
    pytest.importorskip("ray")
    # Ray >= 2.5x turns token auth on for a head that finds ~/.ray/auth_token (which a local
    # `ray.init` may leave behind) unless told otherwise: one mode for every process of the test.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "disabled")
        cluster = LoopbackCluster(head_cpus)
        try:
            yield cluster
        finally:
            import ray

            ray.shutdown()  # a run in this process joined the cluster
            cluster.stop()


@pytest.fixture
def cluster():
    with loopback_cluster() as cluster:
        yield cluster


def run_command(mbpp_dir: Path, out: Path, *extra: str) -> list[str]:
    larger = out.with_name("larger.yaml")
    larger.write_text(SETTINGS)
    return [
        "run", "--preset", "smoke", "--config", str(larger), "--problems-path", str(mbpp_dir), "--out", str(out),
        "--quiet", *extra,
    ]  # fmt: skip


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def records(run: Path) -> dict[str, dict]:
    """Every stage's records, keyed by stage folder and (problem, rollout or search), timing removed."""
    found = {}
    for name in ("trajectories.jsonl", "searches.jsonl"):
        for path in sorted(run.rglob(name)):
            text = path.read_text().replace(str(run), "RUN")  # the tiny model is built in each run folder
            rows = [json.loads(line) for line in text.splitlines()]
            key = "rollout" if name == "trajectories.jsonl" else "search"
            found[str(path.parent.relative_to(run))] = {(r["problem_id"], r[key]): without_timing(r) for r in rows}
    return found


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def wait_until(condition, process: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_mucode_run_on_two_nodes_survives_a_lost_node_and_resumes_after_the_driver_dies(cluster, mbpp_dir, tmp_path):
    reference = tmp_path / "one-process"
    assert main(run_command(mbpp_dir, reference)) == 0

    worker = cluster.add_worker()
    out, log = tmp_path / "on-ray", tmp_path / "driver.log"
    command = [sys.executable, "-m", "mucode", *run_command(mbpp_dir, out, "--ray", cluster.address)]
    with open(log, "w") as handle:
        driver = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = out / "iter0/rollouts/trajectories.jsonl"
        busy = lambda: cluster.running(worker, "RolloutWorker.run")  # noqa: E731
        wait_until(busy, driver, log, 300, "chunk on the worker node")
        assert cluster.kill_worker(worker) >= 2  # the raylet and at least one actor process
        stored_at_kill = lines(first)
        wait_until(lambda: (out / "iter0/rollouts/.done.json").is_file(), driver, log, 180, "end of the rollouts")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver dies too (a lost allocation)
        driver.wait()
    assert stored_at_kill < 48  # the node was lost while the stage still had work
    assert "queued again" in log.read_text()  # the lost node's unfinished trajectories ran elsewhere
    assert not (out / "eval").exists()

    cluster.add_worker()  # a new node joins; the same command resumes from the stage markers
    assert main(run_command(mbpp_dir, out, "--ray", cluster.address)) == 0
    stages = json.loads((out / "stages.json").read_text())
    assert stages["iter0/rollouts"]["skipped"] and not stages["iter1/rollouts"]["skipped"]

    expected, got = records(reference), records(out)
    assert set(got) == set(expected) and "iter1/rollouts" in got and any(k.startswith("eval/") for k in got)
    assert len(got["iter0/rollouts"]) == 48  # 12 problems x 4 rollouts, none lost, none twice
    for stage in expected:
        assert got[stage] == expected[stage], stage


def rollout_command(model: Path, mbpp_dir: Path, out: Path, address: str) -> list[str]:
    return [
        sys.executable, "-m", "mucode", "rollout", "--ray", address, "--ray-actors", "2", "--model", str(model),
        "--problems", "mbpp:train", "--problems-path", str(mbpp_dir), "--limit", "3", "--rollouts", "2",
        "--turns", "1", "--max-new-tokens", "8", "--seed", "5", "--out", str(out),
    ]  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="hiding a folder from one node needs a mount namespace (root)")
def test_a_node_that_cannot_see_the_model_is_named_and_the_other_nodes_go_on(tiny_model_dir, mbpp_dir, tmp_path):
    shared = tmp_path / "shared"
    shutil.copytree(tiny_model_dir, shared / "model")
    with loopback_cluster() as cluster:
        cluster.add_worker(hide=shared)  # its actor cannot see shared/model
        run = subprocess.run(
            rollout_command(shared / "model", mbpp_dir, tmp_path / "out", cluster.address),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert lines(tmp_path / "out" / "trajectories.jsonl") == 6  # all of them, on the head's actor
    assert f"the model {shared / 'model'} is not visible on node" in run.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="hiding a folder from one node needs a mount namespace (root)")
def test_a_run_whose_nodes_cannot_see_the_model_fails_saying_so(tiny_model_dir, mbpp_dir, tmp_path):
    shared = tmp_path / "shared"
    shutil.copytree(tiny_model_dir, shared / "model")
    with loopback_cluster(head_cpus=0) as cluster:  # every actor runs on the worker node
        cluster.add_worker(hide=shared)
        run = subprocess.run(
            rollout_command(shared / "model", mbpp_dir, tmp_path / "out", cluster.address),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]  # a one-line error, no traceback
    assert "Traceback" not in run.stderr.split("Error: every Ray actor died for good")[0][-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error: every Ray actor died for good")]
    assert len(errors) == 1 and "is not visible on node" in errors[0], run.stderr[-3000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="hiding a folder from one node needs a mount namespace (root)")
def test_a_preset_is_shipped_once_to_a_node_whose_cache_lacks_it(tiny_model_dir, mbpp_dir, tmp_path, monkeypatch):
    """The driver's cached copy of a preset goes through the object store to a node that has neither
    the registry nor the driver's cache (hidden), which checks and caches it and generates."""
    from mucode.generation.models import PRESETS, file_records, populate_cache, preset_dir

    cache = tmp_path / "cache"

    def build(dest: Path) -> dict:  # the tiny model as the cached registry copy of smollm2-135m
        shutil.copytree(tiny_model_dir, dest, dirs_exist_ok=True)
        return {"preset": "smollm2-135m", "sha256": PRESETS["smollm2-135m"].sha256, "files": file_records(dest)}

    populate_cache(preset_dir("smollm2-135m", cache), build)
    for name, value in {"MUCODE_CACHE": str(cache), "MUCODE_PRESET_SOURCE": "registry", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)  # for the driver and for both nodes
    with loopback_cluster(head_cpus=0) as cluster:  # the only actor runs on the worker node
        cluster.add_worker(hide=cache)
        run = subprocess.run(
            rollout_command(Path("smollm2-135m"), mbpp_dir, tmp_path / "out", cluster.address),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert lines(tmp_path / "out" / "trajectories.jsonl") == 6
    assert f"preset smollm2-135m: cached on node {LOOPBACK} from the driver's copy" in run.stderr


def test_accelerate_configs_are_sized_from_the_clusters_gpu_nodes(tmp_path):
    """Two nodes declaring 2 GPUs each (and a head without): 2 machines x 2 processes, machine 0 at
    the first GPU node's address; accelerate's own loader reads the written file."""
    from accelerate.commands.config.config_args import load_config_from_file

    from mucode.scaling.launch import cluster_config, main

    with loopback_cluster() as cluster:
        cluster.add_worker(gpus=2)
        cluster.add_worker(gpus=2)
        out = tmp_path / "zero3.yaml"
        assert main(["zero3", "--ray", cluster.address, "--machine-rank", "1", "--out", str(out)]) == 0
        loaded = load_config_from_file(str(out))
        assert (loaded.num_machines, loaded.num_processes, loaded.machine_rank) == (2, 4, 1)
        assert loaded.main_process_ip == LOOPBACK and loaded.distributed_type == "DEEPSPEED"
        cluster.add_worker(gpus=1)
        with pytest.raises(ValueError, match="different GPU counts"):
            cluster_config("ddp", cluster.address)
