"""Rollouts with a real (tiny, random) model and the real sandbox: storage, resume, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mucode.execution import Executor, Limits
from mucode.generation.base import SamplingParams
from mucode.metrics import summarize_trajectories as summarize
from mucode.rollouts import RolloutConfig, collect_rollouts, write_run_metadata
from mucode.store import TrajectoryStore, read_trajectories


PROBLEMS = [
    {
        "id": f"p{i}",
        "prompt": f"Return {i} plus x.",
        "public_tests": [f"assert f(1) == {i + 1}"],
        "private_tests": [f"assert f(2) == {i + 2}"],
    }
    for i in range(4)
]


@pytest.fixture
def problems_file(tmp_path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    from mucode.generation.hf import TransformersGenerator

    gen = TransformersGenerator.from_pretrained(str(tiny_model_dir))
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=Limits(timeout_s=2)) as ex:
        yield ex


def load(problems_file):
    from mucode.problems import load_problems

    return list(load_problems(str(problems_file)))


def test_every_trajectory_is_stored_once_and_loads_with_datasets(tmp_path, problems_file, generator, executor):
    store = TrajectoryStore(tmp_path / "out")
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=3)
    stats = collect_rollouts(
        load(problems_file), generator, executor, store, rollouts=3, turns=2, params=params, max_live=5, overlap=True
    )
    store.close()
    records = read_trajectories(tmp_path / "out")
    assert stats.trajectories == len(records) == 12
    assert sorted((r["problem_id"], r["rollout"]) for r in records) == [
        (f"p{i}", k) for i in range(4) for k in range(3)
    ]
    for record in records:
        assert 1 <= record["n_turns"] <= 2 and len(record["turns"]) == record["n_turns"]
        assert record["completion_tokens"] == sum(t["completion_tokens"] for t in record["turns"]) > 0
        assert all(t["prompt_tokens"] > 0 and t["generate_s"] > 0 for t in record["turns"])
        assert "private_tests" not in record["problem"]  # hidden tests never stored with the episode
    import datasets

    dataset = datasets.load_dataset("json", data_files=str(tmp_path / "out" / "trajectories.jsonl"), split="train")
    assert len(dataset) == 12 and set(dataset["problem_id"]) == {f"p{i}" for i in range(4)}
    summary = summarize(records)
    assert summary["trajectories"] == 12 and len(summary["accuracy_by_turn"]) == 2


def test_a_second_run_only_does_what_is_missing(tmp_path, problems_file, generator, executor):
    params = SamplingParams(temperature=1.0, max_new_tokens=8)
    store = TrajectoryStore(tmp_path / "out")
    collect_rollouts(load(problems_file)[:2], generator, executor, store, rollouts=2, turns=1, params=params)
    store.close()
    store = TrajectoryStore(tmp_path / "out")
    stats = collect_rollouts(load(problems_file), generator, executor, store, rollouts=2, turns=1, params=params)
    store.close()
    assert stats.trajectories == 4
    assert len(read_trajectories(tmp_path / "out")) == 8


def test_a_cut_last_line_is_dropped_and_redone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "trajectories.jsonl").write_text(
        '{"problem_id": "p0", "rollout": 0, "correct": true}\n{"problem_id": "p0", "rol'
    )
    store = TrajectoryStore(out)
    assert store.done == {("p0", 0)}
    store.close()
    assert (out / "trajectories.jsonl").read_text() == '{"problem_id": "p0", "rollout": 0, "correct": true}\n'


def test_a_duplicated_record_is_an_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    line = '{"problem_id": "p0", "rollout": 0}\n'
    (out / "trajectories.jsonl").write_text(line * 2)
    with pytest.raises(ValueError, match="line 2 repeats trajectory"):
        TrajectoryStore(out)


def _rollout_command(model: Path, problems: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mucode",
        "rollout",
        "--model",
        str(model),
        "--problems",
        str(problems),
        "--rollouts",
        "6",
        "--turns",
        "2",
        "--temperature",
        "1.0",
        "--max-new-tokens",
        "16",
        "--max-live",
        "4",
        "--workers",
        "1",
        "--timeout-s",
        "2",
        "--out",
        str(out),
    ]


def test_kill_9_then_rerun_loses_and_duplicates_nothing(tmp_path, problems_file, tiny_model_dir):
    out = tmp_path / "run"
    command = _rollout_command(tiny_model_dir, problems_file, out)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    target = out / "trajectories.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if target.exists() and target.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    stored_before = target.read_text().count("\n")
    assert 5 <= stored_before < 24, "the kill should land mid-run"
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    records = read_trajectories(out)
    keys = [(r["problem_id"], r["rollout"]) for r in records]
    assert len(keys) == len(set(keys)) == 24
    assert "24 trajectories over 4 problems" in second.stdout


def test_resuming_with_other_settings_is_refused(tmp_path, problems_file, tiny_model_dir):
    out = tmp_path / "run"
    out.mkdir()
    write_run_metadata(
        RolloutConfig(model=str(tiny_model_dir), problems=str(problems_file), out=str(out)), out, ["p0"]
    )
    machine = json.loads((out / "run.json").read_text())["machine"]  # wall times are read against it
    assert machine["cores"] >= 1 and machine["cpu"] and isinstance(machine["isa"], list)
    # a new replica list (servers come back on other addresses after a restart) resumes; the model must not change
    (out / "served").mkdir()
    served = dict(model="served-model", problems=str(problems_file), out=str(out / "served"), backend="openai")
    write_run_metadata(RolloutConfig(**served, base_url="http://127.0.0.1:8001/v1"), out / "served", ["p0"])
    moved = RolloutConfig(**served, base_url="http://127.0.0.1:9001/v1,http://127.0.0.1:9002/v1")
    write_run_metadata(moved, out / "served", ["p0"])
    with pytest.raises(ValueError, match="model"):
        write_run_metadata(replace(moved, model="another-model"), out / "served", ["p0"])
    changed = RolloutConfig(model=str(tiny_model_dir), problems=str(problems_file), out=str(out), temperature=0.2)
    with pytest.raises(ValueError, match="temperature"):
        write_run_metadata(changed, out, ["p0"])


def test_a_sandbox_failure_reruns_the_program_instead_of_storing_a_false_label(tmp_path, problems_file, generator):
    with Executor(workers=1, limits=Limits(timeout_s=5)) as ex:
        # Kill the worker's sandbox parent: the next program cannot be run, so its turn is an
        # INFRA_ERROR (the pool then replaces the worker).
        worker = ex._workers[0].process.pid
        zygote = int(Path(f"/proc/{worker}/task/{worker}/children").read_text().split()[0])
        os.kill(zygote, signal.SIGKILL)
        store = TrajectoryStore(tmp_path / "out")
        stats = collect_rollouts(
            load(problems_file)[:1],
            generator,
            ex,
            store,
            rollouts=1,
            turns=1,
            params=SamplingParams(temperature=1.0, max_new_tokens=4),
        )
        store.close()
    [record] = read_trajectories(tmp_path / "out")
    assert stats.infra_retries == 1
    assert record["infra_error"] is False
    assert all(v["status"] != "infra_error" for v in record["turns"][0]["public"]["verdicts"])


def test_rollout_command_on_humaneval_ignores_the_mbpp_path(tmp_path, tiny_model_dir, mbpp_dir):
    """--problems-path is the MBPP location; it used to be handed to the HumanEval loader ("not a file")."""
    from mucode.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "rollout",
            "--model",
            str(tiny_model_dir),
            "--problems",
            "humaneval",
            "--problems-path",
            str(mbpp_dir),
            "--limit",
            "1",
            "--turns",
            "1",
            "--temperature",
            "0",
            "--max-new-tokens",
            "4",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert [r["problem_id"] for r in read_trajectories(out)][0].startswith("HumanEval/")


TIMING_FIELDS = {"generate_s", "duration_s", "wall_s"}


def _without_timings(value):
    """A record with its wall-clock fields removed (the only fields allowed to differ)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


@pytest.mark.parametrize("seeding", ["step", "episode"])
def test_the_same_seeded_rollout_command_twice_gives_identical_records(
    tmp_path, problems_file, tiny_model_dir, seeding
):
    """Seeded reruns on one machine are bit-reproducible apart from wall-clock fields, as long as
    no program runs near the time limit (docs/results.md, "Seeded reruns")."""
    from mucode.cli import main

    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        code = main([
            "rollout", "--model", str(tiny_model_dir), "--problems", str(problems_file), "--rollouts", "2", "--turns", "3",
            "--temperature", "1.0", "--max-new-tokens", "12", "--seed", "7", "--seeding", seeding, "--max-live", "3",
            "--workers", "1", "--out", str(out),
        ])  # fmt: skip
        assert code == 0
        runs.append([_without_timings(r) for r in read_trajectories(out)])
    assert len(runs[0]) == 8 and runs[0] == runs[1]
    assert len({r["turns"][0]["reply"] for r in runs[0]}) > 1  # sampled, not one fixed reply


def test_episode_seeding_gives_the_same_records_whatever_shares_the_batch(tmp_path, problems_file, tiny_model_dir):
    """seeding=episode: each row draws from its own episode's seed inside one batched call,
    so the records do not depend on how many episodes are live together (docs/scaling.md)."""
    from mucode.cli import main

    runs = []
    for max_live in ("1", "5"):
        out = tmp_path / f"live{max_live}"
        code = main([
            "rollout", "--model", str(tiny_model_dir), "--problems", str(problems_file), "--rollouts", "2", "--turns", "2",
            "--temperature", "1.0", "--max-new-tokens", "12", "--seed", "3", "--seeding", "episode",
            "--max-live", max_live, "--workers", "1", "--out", str(out),
        ])  # fmt: skip
        assert code == 0
        runs.append(
            sorted(
                (_without_timings(r) for r in read_trajectories(out)), key=lambda r: (r["problem_id"], r["rollout"])
            )
        )
    assert len(runs[0]) == 8 and runs[0] == runs[1]


def test_a_rollout_is_a_search_with_one_program_per_turn(tmp_path, problems_file, generator, executor):
    """One engine: with per-episode seeds, rollout r of a problem and search r (N = 1) of it draw the
    same replies, run the same programs and get the same feedback."""
    from mucode.search import search_problems

    problems = load(problems_file)
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=4)
    store = TrajectoryStore(tmp_path / "out")
    collect_rollouts(
        problems, generator, executor, store, rollouts=2, turns=2, params=params, max_live=3, seeding="episode"
    )
    store.close()
    searches = search_problems(
        problems, generator, executor, n=1, selector="random", turns=2, searches=2, sampling=params, seed=4, max_live=5
    )
    rollouts = {
        (r["problem_id"], r["rollout"]): [(t["reply"], t["program"], t["feedback"], t["correct"]) for t in r["turns"]]
        for r in read_trajectories(tmp_path / "out")
    }
    assert rollouts == {
        (s.problem_id, s.search): [(t.chosen.reply, t.chosen.program, t.feedback, t.chosen.correct) for t in s.turns]
        for s in searches
    }
    assert len({turns[0][0] for turns in rollouts.values()}) > 1  # sampled, not one fixed reply


def test_a_folder_written_under_the_older_seeding_name_resumes(tmp_path, problems_file, tiny_model_dir):
    from mucode.store import CONFIG_FILE

    out = tmp_path / "run"
    out.mkdir()
    config = RolloutConfig(model=str(tiny_model_dir), problems=str(problems_file), out=str(out), seeding="episode")
    write_run_metadata(config, out, ["p0"])
    saved = out / CONFIG_FILE
    assert "seeding: episode" in saved.read_text()
    saved.write_text(saved.read_text().replace("seeding: episode", "seeding: trajectory"))
    write_run_metadata(config, out, ["p0"])  # the same seeding under its older name
    with pytest.raises(ValueError, match="seeding"):
        stepped = RolloutConfig(model=str(tiny_model_dir), problems=str(problems_file), out=str(out))
        write_run_metadata(stepped, out, ["p0"])


def test_generators_take_their_own_dtype_unless_one_is_asked_for():
    """dtype None (the default) lets the hf backend pick bf16 where the CPU computes it natively
    (`preferred_dtype`) and vLLM its bf16; an explicit dtype reaches the backend as given."""
    from mucode.rollouts import backend_options
    from mucode.search import SearchConfig, generator_options

    for backend in ("hf", "vllm"):
        assert "dtype" not in backend_options(RolloutConfig(backend=backend))
        assert "dtype" not in generator_options(SearchConfig(backend=backend))
        assert backend_options(RolloutConfig(backend=backend, dtype="float32"))["dtype"] == "float32"
        assert generator_options(SearchConfig(backend=backend, dtype="float32"))["dtype"] == "float32"


def test_rollouts_and_searches_build_generator_options_by_one_rule():
    """One rule (EpisodeConfig.generator_options): requests in flight are the replies a step may ask
    for (a search: n per live search), replicas are routed alike, tensor parallelism is vLLM's only."""
    from mucode.search import SearchConfig

    url = "http://127.0.0.1:1/v1,http://127.0.0.1:2/v1"
    search = SearchConfig(backend="openai", base_url=url, routing="least-loaded", n=5, max_live=4)
    assert search.generator_options() == {"base_url": url, "routing": "least-loaded", "max_concurrency": 20}
    rollout = RolloutConfig(backend="openai", base_url=url, max_live=4)
    assert rollout.generator_options() == {"base_url": url, "routing": "round-robin", "max_concurrency": 4}
    assert SearchConfig(backend="hf", n=5, max_live=4).generator_options() == {"batch_size": 5}
    assert SearchConfig(backend="vllm", tensor_parallel_size=2).generator_options() == {"tensor_parallel_size": 2}
    with pytest.raises(ValueError, match="--backend vllm only"):
        SearchConfig(backend="hf", tensor_parallel_size=2).generator_options()
    with pytest.raises(ValueError, match="needs --base-url"):
        SearchConfig(backend="openai").generator_options()
