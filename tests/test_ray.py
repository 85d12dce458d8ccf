"""Rollouts on a real local Ray cluster (2 CPUs, loopback, two actor processes) with the tiny random
model and real MBPP problems in the real sandbox: the records equal those of a single-process run
with the same seed, and an actor killed mid-run loses and duplicates nothing. The cluster tests are
marked slow (about 80 s on the shared 2-core machine: Ray start, actor processes importing torch);
run them with `pytest -m slow tests/test_ray.py` after `pip install 'mucode[ray]'`.

The per-trajectory seeding they rely on is checked without Ray in the default run."""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from mucode.cli import main
from mucode.config import load_config
from mucode.execution import Executor, Limits
from mucode.rollouts import RolloutConfig, collect_rollouts, run_rollouts
from mucode.scaling.ray_rollouts import RolloutWorker, WorkerSpec, collect_rollouts_on_ray, start_actors
from mucode.store import TrajectoryStore, read_trajectories


N_PROBLEMS, ROLLOUTS, TURNS = 3, 2, 2


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.2",  # Ray would register 127.0.0.1 under the host's other address
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def config(out: Path, model: Path, mbpp: Path, **overrides) -> RolloutConfig:
    values = dict(
        model=str(model),
        problems="mbpp:train",
        problems_path=str(mbpp),
        limit=N_PROBLEMS,
        rollouts=ROLLOUTS,
        turns=TURNS,
        temperature=1.0,
        max_new_tokens=24,
        seed=5,
        out=str(out),
        workers=1,
        timeout_s=2.0,
        seeding="episode",
    )
    return RolloutConfig(**{**values, **overrides})


def outcomes(folder: Path) -> dict[tuple[str, int], list[tuple]]:
    """Per trajectory: each turn's reply and verdicts (public and private, per test)."""
    return {
        (r["problem_id"], r["rollout"]): [
            (t["reply"], verdicts(t["public"]), verdicts(t["private"]), t["correct"]) for t in r["turns"]
        ]
        for r in read_trajectories(folder)
    }


def verdicts(result: dict | None) -> list[tuple] | None:
    """Status and message of each test (run times differ from run to run)."""
    return None if result is None else [(v["status"], v.get("message")) for v in result["verdicts"]]


@pytest.fixture(scope="module")
def single_process(tiny_model_dir, mbpp_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    run_rollouts(config(out, tiny_model_dir, mbpp_dir), progress=False)
    return out


@pytest.mark.slow
def test_ray_records_equal_the_single_process_run(ray_cluster, single_process, tiny_model_dir, mbpp_dir, tmp_path):
    reference = outcomes(single_process)
    assert len(reference) == N_PROBLEMS * ROLLOUTS
    assert len({turns[0][0] for turns in reference.values()}) > 1  # sampled, not one reply everywhere
    out = tmp_path / "ray"
    argv = [
        "rollout",
        "--ray",
        "auto",
        "--ray-actors",
        "2",
        "--model",
        str(tiny_model_dir),
        "--problems",
        "mbpp:train",
        "--problems-path",
        str(mbpp_dir),
        "--limit",
        str(N_PROBLEMS),
        "--rollouts",
        str(ROLLOUTS),
        "--turns",
        str(TURNS),
        "--temperature",
        "1.0",
        "--max-new-tokens",
        "24",
        "--seed",
        "5",
        "--workers",
        "1",
        "--timeout-s",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert outcomes(out) == reference
    saved = load_config(RolloutConfig, out / "config.yaml")
    assert (saved.ray, saved.ray_actors, saved.seeding) == ("auto", 2, "episode")


@pytest.mark.slow
def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(
    ray_cluster, single_process, tiny_model_dir, mbpp_dir, tmp_path, caplog
):
    ray = ray_cluster
    cfg = config(
        tmp_path / "killed", tiny_model_dir, mbpp_dir, max_live=1
    )  # one episode at a time: a kill finds work left
    problems = mbpp_problems(cfg)
    actors = start_actors(WorkerSpec.from_config(cfg), 2, max_restarts=2)
    victim = ray.get(actors[0].pid.remote())
    killed: list[int] = []

    def kill_after_first(record, stats):
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    store = TrajectoryStore(cfg.out)
    with caplog.at_level(logging.WARNING, logger="mucode.scaling.ray_rollouts"):
        stats = collect_rollouts_on_ray(
            problems,
            store,
            actors,
            rollouts=ROLLOUTS,
            chunk_size=ROLLOUTS * N_PROBLEMS // 2,
            on_trajectory=kill_after_first,
        )
    store.close()
    assert killed and stats.trajectories == N_PROBLEMS * ROLLOUTS
    assert "queued again" in caplog.text  # the killed actor's unfinished trajectories were run elsewhere
    records = read_trajectories(cfg.out)
    keys = [(r["problem_id"], r["rollout"]) for r in records]
    assert len(keys) == len(set(keys)) == N_PROBLEMS * ROLLOUTS  # none lost, none twice
    assert outcomes(Path(cfg.out)) == outcomes(single_process)  # re-run trajectories drew the same samples
    assert (
        ray.get(actors[0].pid.options(max_task_retries=-1).remote()) != victim
    )  # Ray restarted the actor in a new process
    for actor in actors:
        ray.kill(actor)


def test_ray_needs_per_episode_seeds():
    with pytest.raises(ValueError, match="use --seeding episode"):
        RolloutConfig(ray="auto", seeding="step")
    assert RolloutConfig(ray="auto").seeding == "episode" and RolloutConfig().seeding == "step"
    assert RolloutConfig(ray="auto", seeding="trajectory").seeding == "episode"  # the older name


def mbpp_problems(cfg: RolloutConfig) -> list:
    from mucode.problems import load_problems
    from mucode.store import select_problems

    return select_problems(list(load_problems(cfg.problems, path=cfg.problems_path)), cfg.limit, cfg.seed)


def test_trajectory_seeds_make_records_independent_of_batching_and_order(tiny_model_dir, mbpp_dir, tmp_path):
    """What lets Ray shards (or a resumed run) reproduce a local run: each turn's sample depends on
    (seed, problem, rollout, turn) only, not on which episodes share the generator call."""
    from mucode.generation.hf import TransformersGenerator

    cfg = config(tmp_path, tiny_model_dir, mbpp_dir, limit=2, max_new_tokens=12)
    problems = mbpp_problems(cfg)
    generator = TransformersGenerator.from_pretrained(str(tiny_model_dir), dtype="float32", device="cpu")

    def run(name: str, order: list, max_live: int, seeding: str) -> dict:
        store = TrajectoryStore(tmp_path / name)
        collect_rollouts(
            order,
            generator,
            executor,
            store,
            rollouts=ROLLOUTS,
            turns=TURNS,
            params=cfg.sampling(),
            max_live=max_live,
            seeding=seeding,
        )
        store.close()
        return outcomes(tmp_path / name)

    with Executor(workers=1, limits=Limits(timeout_s=2)) as executor:
        batched = run("batched", problems, 4, "episode")
        one_by_one = run("one-by-one", problems[::-1], 1, "trajectory")  # the older name of the same seeding
        per_step = run("per-step", problems, 4, "step")
    generator.close()
    assert len(batched) == len(problems) * ROLLOUTS and batched == one_by_one
    assert per_step != batched  # step seeds depend on the batching: the equality above is not a given
    with pytest.raises(ValueError, match="seeding"):
        collect_rollouts(  # type: ignore[arg-type]
            problems, generator, None, None, rollouts=1, turns=1, params=cfg.sampling(), seeding="per-call"
        )


def test_vllm_tensor_parallel_size_reaches_the_engine_options():
    from mucode.rollouts import backend_options

    vllm = RolloutConfig(backend="vllm", tensor_parallel_size=4, dtype="bfloat16")
    assert backend_options(vllm) == {"dtype": "bfloat16", "tensor_parallel_size": 4}
    with pytest.raises(ValueError, match="--backend vllm only"):
        backend_options(RolloutConfig(backend="hf", tensor_parallel_size=2))
    with pytest.raises(ValueError, match="tensor_parallel_size=0"):
        RolloutConfig(backend="vllm", tensor_parallel_size=0)


def test_a_ray_actor_runs_with_the_configs_preamble_feedback_and_time_limits(tiny_model_dir, mbpp_dir, tmp_path):
    """The body of each Ray actor (run here without Ray) gets --preamble, --feedback and the sandbox's
    --timeout-s / --timeout-scope; it used to run with the defaults whatever the config said. Its
    records equal those of a local run."""
    cfg = config(
        tmp_path / "local",
        tiny_model_dir,
        mbpp_dir,
        limit=1,
        rollouts=1,
        max_new_tokens=12,
        backend="hf",
        preamble="none",
        feedback="reference",
        timeout_scope="suite",
    )
    run_rollouts(cfg, progress=False)
    local = read_trajectories(cfg.out)
    spec = WorkerSpec.from_config(cfg)
    assert (spec.preamble, spec.feedback) == ("none", "reference")
    worker = RolloutWorker(spec)
    assert (worker.executor.limits.timeout_s, worker.executor.limits.timeout_scope) == (cfg.timeout_s, "suite")
    try:
        problems = mbpp_problems(cfg)
        streamed = list(worker.run(problems, [(problems[0].id, 0)]))
    finally:
        worker.close()
    assert [(r["preamble"], r["prompt_config"]["feedback"]) for r in streamed] == [("none", "reference")]
    assert turns_seen(streamed) == turns_seen(local)


def turns_seen(records: list[dict]) -> list[list[tuple]]:
    """Per trajectory, each turn's reply, feedback and public verdicts."""
    return [[(t["reply"], t["feedback"], verdicts(t["public"])) for t in r["turns"]] for r in records]


def test_a_relative_model_path_reaches_the_actors_absolute(tiny_model_dir, mbpp_dir, tmp_path, monkeypatch):
    """`--model runs/g0/model` (the docs' next-iteration form) failed at actor start: an actor resolves
    paths in its raylet's folder. The driver now ships the absolute path."""
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "runs" / "g0" / "model")
    monkeypatch.chdir(tmp_path)
    cfg = config(tmp_path / "out", "runs/g0/model", mbpp_dir, limit=1, rollouts=1, max_new_tokens=4, backend="hf")
    spec = WorkerSpec.from_config(cfg)
    assert spec.model == str(tmp_path / "runs" / "g0" / "model")
    assert WorkerSpec.from_config(replace(cfg, model="smollm2-135m")).model == "smollm2-135m"  # a preset name stays
    elsewhere = tmp_path / "raylet-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # where an actor starts
    worker = RolloutWorker(spec)
    try:
        problems = mbpp_problems(cfg)
        assert len(list(worker.run(problems, [(problems[0].id, 0)]))) == 1
    finally:
        worker.close()


def pipeline_config_for(tiny_model_dir, mbpp_dir, out: Path, **rollout):
    from mucode.pipeline import PipelineConfig

    return PipelineConfig(
        out=str(out), model=str(tiny_model_dir), problems="mbpp:train", problems_path=str(mbpp_dir),
        limit=N_PROBLEMS, rollouts=ROLLOUTS, turns=TURNS, temperature=1.0, max_new_tokens=24, seed=5, timeout_s=2.0,
        rollout={"seeding": "episode", "workers": 1, **rollout},
    )  # fmt: skip


def test_a_pipeline_rollout_stage_with_ray_set_needs_the_callers_ray_runner(tiny_model_dir, mbpp_dir, tmp_path):
    from mucode.pipeline import Pipeline

    config = pipeline_config_for(tiny_model_dir, mbpp_dir, tmp_path / "run", ray="auto")
    with pytest.raises(ValueError, match="mucode run --ray ADDRESS"):
        Pipeline(config, progress=False).rollouts(str(tiny_model_dir), tmp_path / "run" / "iter0" / "rollouts")


@pytest.mark.slow
def test_the_pipelines_rollout_stages_run_on_ray_with_the_records_of_one_process(
    ray_cluster, tiny_model_dir, mbpp_dir, tmp_path
):
    """`mucode run --ray ADDRESS`: the pipeline's rollout stages go to the Ray actors through the
    runner the CLI passes; the stage's trajectories equal a one-process pipeline's."""
    from mucode.pipeline import Pipeline
    from mucode.scaling.ray_rollouts import run_rollouts_on_ray

    local_cfg = pipeline_config_for(tiny_model_dir, mbpp_dir, tmp_path / "local")
    ray_cfg = pipeline_config_for(tiny_model_dir, mbpp_dir, tmp_path / "ray", ray="auto", ray_actors=2)
    local = Pipeline(local_cfg, progress=False)
    on_ray = Pipeline(ray_cfg, progress=False, run_rollouts=run_rollouts_on_ray)
    local_info = local.rollouts(str(tiny_model_dir), tmp_path / "local" / "stage")
    ray_info = on_ray.rollouts(str(tiny_model_dir), tmp_path / "ray" / "stage")
    assert local_info["trajectories"] == ray_info["trajectories"] == N_PROBLEMS * ROLLOUTS
    assert outcomes(tmp_path / "ray" / "stage") == outcomes(tmp_path / "local" / "stage")
    assert json.loads((tmp_path / "ray" / "stage" / "run.json").read_text())["ray_actors"] == 2
