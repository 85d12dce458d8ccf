"""Several replicas of one model behind the OpenAI-compatible backend: two real `transformers serve`
processes on loopback (the tiny model, see test_generation_openai.py), round-robin and
least-loaded routing, a dead replica skipped after its first failure, and the rollout command
spreading its requests over `--base-url URL1,URL2`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_generation_openai import (
    CONVERSATIONS,
    GREEDY,
    STARTUP_TIMEOUT_S,
    closed_port_url,
    counting_client,
    free_port,
    save_sharp_model,
)

from mucode.generation import SamplingParams
from mucode.generation.openai_api import OpenAIGenerator, chat_url
from mucode.generation.replicas import ReplicaSet


pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving] (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="transformers serve needs transformers[serving] (fastapi, uvicorn)")


def start_server(folder: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    cli = Path(sys.executable).parent / "transformers"
    port = free_port()
    cmd = [
        str(cli),
        "serve",
        str(folder),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    proc = subprocess.Popen(
        cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(proc: subprocess.Popen, base: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"transformers serve not healthy after {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def two_servers(tiny_model_dir, tmp_path_factory):
    """([base URL 1, base URL 2], served model name, [log path 1, log path 2]); both start at once."""
    if not (Path(sys.executable).parent / "transformers").exists():
        pytest.skip(f"no transformers CLI next to {sys.executable}")
    root = tmp_path_factory.mktemp("replicas")
    folder = save_sharp_model(tiny_model_dir, root / "tiny-sharp")
    logs = [root / "serve-1.log", root / "serve-2.log"]
    started = [start_server(folder, log) for log in logs]
    try:
        for (proc, base), log in zip(started, logs):
            wait_healthy(proc, base, log)
        yield [f"{base}/v1" for _, base in started], str(folder), logs
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_round_robin_uses_both_replicas_and_matches_one_replica(two_servers):
    urls, name, _ = two_servers
    client, transport = counting_client()
    gen = OpenAIGenerator(urls, name, max_concurrency=2, client=client)
    out = gen.generate(CONVERSATIONS, GREEDY)
    counts = gen.replicas.counts()
    assert [counts[chat_url(u)]["requests"] for u in urls] == [2, 2]
    assert sorted(transport.urls) == sorted([chat_url(u) for u in urls] * 2)  # what actually went over the wire
    single = OpenAIGenerator(urls[0], name)
    assert single.generate(CONVERSATIONS, GREEDY) == out  # the same model: routing does not change replies
    for g in (gen, single):
        g.close()
    client.close()


def test_least_loaded_spreads_concurrent_requests(two_servers):
    urls, name, _ = two_servers
    gen = OpenAIGenerator(",".join(urls), name, max_concurrency=4, routing="least-loaded")  # the --base-url form
    out = gen.generate(CONVERSATIONS * 2, SamplingParams(temperature=1.0, max_new_tokens=8, seed=1))
    counts = gen.replicas.counts()
    assert len(out) == 8 and sum(c["requests"] for c in counts.values()) == 8
    assert all(c["requests"] >= 2 and c["in_flight"] == 0 and c["failures"] == 0 for c in counts.values())
    gen.close()


def test_a_dead_replica_is_skipped_after_its_first_failure(two_servers):
    urls, name, _ = two_servers
    dead = closed_port_url()
    client, transport = counting_client()
    gen = OpenAIGenerator([dead, *urls], name, max_concurrency=1, max_retries=2, backoff_s=60.0, client=client)
    started = time.monotonic()
    out = gen.generate(CONVERSATIONS * 2, GREEDY)
    assert len(out) == 8 and all(len(o) == 1 for o in out)
    counts = gen.replicas.counts()
    assert counts[chat_url(dead)] == {"requests": 1, "failures": 1, "in_flight": 0}
    assert [counts[chat_url(u)]["requests"] for u in urls] == [4, 4]
    assert transport.urls.count(chat_url(dead)) == 1
    assert time.monotonic() - started < 45.0  # the retry went to a live replica at once, not after the 60 s backoff
    gen.close()
    client.close()


def test_rollout_command_spreads_requests_over_replicas(two_servers, mbpp_dir, tmp_path):
    from mucode.cli import main
    from mucode.store import read_trajectories

    urls, name, logs = two_servers
    before = [log.read_text().count("POST /v1/chat/completions") for log in logs]
    argv = [
        "rollout",
        "--backend",
        "openai",
        "--base-url",
        ",".join(urls),
        "--routing",
        "least-loaded",
        "--model",
        name,
        "--problems",
        "mbpp:train",
        "--problems-path",
        str(mbpp_dir),
        "--limit",
        "4",
        "--rollouts",
        "1",
        "--turns",
        "1",
        "--temperature",
        "0",
        "--max-new-tokens",
        "8",
        "--out",
        str(tmp_path / "out"),
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    assert len(read_trajectories(tmp_path / "out")) == 4
    served = [log.read_text().count("POST /v1/chat/completions") - b for log, b in zip(logs, before)]
    assert sum(served) == 4 and min(served) >= 1, served  # counted by the servers themselves (access logs)


def test_replica_set_routing_without_servers():
    replicas = ReplicaSet(["a", "b", "c"], routing="least-loaded", cooldown_s=60)
    first = [replicas.pick() for _ in range(3)]
    assert [r.url for r in first] == ["a", "b", "c"]  # ties go in turn
    replicas.release(first[1], failed=False)
    assert replicas.pick().url == "b"  # the only one with nothing in flight
    replicas.release(first[0], failed=True)
    assert replicas.pick(avoid=first[0]).url != "a" and not any(
        r.url == "a" for r in [replicas.pick() for _ in range(3)]
    )
    assert replicas.counts()["a"]["failures"] == 1
    only = ReplicaSet(["x"], cooldown_s=60)
    replica = only.pick()
    only.release(replica, failed=True)
    assert only.pick().url == "x" and not only.another_is_up(replica)  # every replica down: still tried
    with pytest.raises(ValueError, match="routing"):
        ReplicaSet(["a"], routing="random")  # type: ignore[arg-type]
