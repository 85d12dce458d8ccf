"""`mucode serve` as a real server: a subprocess on a loopback port with the tiny model, driven with
the official `openai` client and plain HTTP (httpx): a solved problem, an unsolvable one, streaming,
a hostile program in /v1/execute that blocks nothing else, every kind of malformed request (a clear
4xx, the server still up) and concurrent requests batched onto the generator."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving import start_server, stop_server

from mucode.prompts import initial_messages
from mucode.serve.solver import problem_id
from mucode.types import AssertTest, Problem


STATEMENT = "Write f(x) that returns x."
TESTS = ["assert f(1) == 1", "assert f(5) == 5"]
IDENTITY = "def f(x):\n    return x"

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def identity_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model trained to answer STATEMENT + TESTS (as the server renders them) with IDENTITY."""
    from test_search import train_to_reply

    problem = Problem(
        id=problem_id(STATEMENT, TESTS),
        source="serve",
        prompt=STATEMENT,
        public_tests=tuple(AssertTest(t) for t in TESTS),
        private_tests=(),
    )
    return train_to_reply(
        tiny_model_dir, tmp_path_factory.mktemp("serve-identity"), IDENTITY, [initial_messages(problem)]
    )


@pytest.fixture(scope="module")
def server(identity_model, tmp_path_factory):
    args = ["--model", str(identity_model), "--max-new-tokens", "16", "--workers", "2", "--timeout-s", "2",
            "--max-tests", "8", "--max-n-turns", "12", "--max-body-bytes", "20000", "--batch-window-s", "0.5"]  # fmt: skip
    process, base = start_server(args, tmp_path_factory.mktemp("serve") / "server.log")
    yield base
    stop_server(process)


def client(base: str):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused")


def test_health_and_models(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["sandbox"]
    models = client(server).models.list()
    assert [m.id for m in models.data] == [health["model"]]


def test_a_solved_problem_through_the_openai_client(server):
    answer = client(server).chat.completions.create(
        model="mucode",
        messages=[{"role": "user", "content": STATEMENT}],
        extra_body={"tests": TESTS, "mucode": {"turns": 3}},
    )
    assert answer.choices[0].message.content == IDENTITY and answer.choices[0].finish_reason == "stop"
    search = answer.model_extra["mucode"]
    assert search["solved_public"] and search["answer_turn"] == 1 and len(search["turns"]) == 1
    assert search["turns"][0]["candidates"][0]["public_passed"] is True


def test_tests_in_a_fenced_block_when_the_client_cannot_send_extra_fields(server):
    message = STATEMENT + "\n\n```tests\n" + "\n".join(TESTS) + "\n```"
    answer = client(server).chat.completions.create(model="mucode", messages=[{"role": "user", "content": message}])
    assert answer.choices[0].message.content == IDENTITY


def test_an_unsolvable_problem_uses_every_turn_and_reports_private_verdicts(server):
    answer = client(server).chat.completions.create(
        model="mucode",
        messages=[{"role": "user", "content": "Write g(x) that returns 2 * x."}],
        extra_body={"tests": ["assert g(2) == 4"], "private_tests": ["assert g(3) == 6"], "mucode": {"turns": 2}},
    )
    search = answer.model_extra["mucode"]
    assert answer.choices[0].finish_reason == "length" and not search["solved_public"] and len(search["turns"]) == 2
    assert search["correct"] is False


def test_streaming_sends_one_event_per_turn_then_the_program(server):
    stream = client(server).chat.completions.create(
        model="mucode",
        messages=[{"role": "user", "content": "Write h(x)."}],
        stream=True,
        extra_body={"tests": ["assert h(1) == 7"], "mucode": {"turns": 3}},
    )
    chunks = list(stream)
    turns = [c.model_extra["mucode"]["turn"] for c in chunks[:-1]]
    assert turns == [1, 2, 3]
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].choices[0].delta.content is not None


def test_execute_returns_the_exec_json_and_a_hostile_program_blocks_nothing(server):
    good = httpx.post(f"{server}/v1/execute", json={"program": IDENTITY, "tests": TESTS}, timeout=60).json()
    assert (
        good["passed"] is True
        and [v["status"] for v in good["verdicts"]] == ["passed", "passed"]
        and good["tests"] == TESTS
    )
    finished: list[str] = []

    def hostile() -> None:
        reply = httpx.post(
            f"{server}/v1/execute", json={"program": "while True:\n    pass\n", "tests": ["assert True"]}, timeout=120
        ).json()
        finished.append(reply["verdicts"][0]["status"])

    slow = threading.Thread(target=hostile)
    slow.start()
    time.sleep(0.3)
    quick = httpx.post(
        f"{server}/v1/execute",
        json={"batch": [{"program": IDENTITY, "tests": TESTS}, {"program": "x = 1", "tests": ["assert x == 2"]}]},
        timeout=60,
    )
    assert not finished, "the quick request waited for the hostile one"
    results = quick.json()["results"]
    assert [r["passed"] for r in results] == [True, False]
    slow.join()
    assert finished == ["timeout"]
    assert httpx.get(f"{server}/health").status_code == 200


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, "no tests"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tests": ["assert ("]},
            400,
            "not valid Python",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tests": ["assert 1"] * 9},
            413,
            "the limit is 8",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tests": ["assert 1"], "n": 5, "mucode": {"turns": 3}},
            413,
            "n x turns",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tests": ["assert 1"], "mucode": {"selector": "lv"}},
            400,
            "needs a verifier",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tests": ["assert 1"], "n": 2, "temperature": 0},
            400,
            "greedy",
        ),
        ("/v1/execute", {"program": "x = 1"}, 400, "give `program` and `tests`"),
        (
            "/v1/execute",
            {"program": "x = 1", "tests": ["assert x"], "setup_code": "y" * 30000},
            413,
            "the limit is 20000",
        ),
        ("/v1/score", {"pairs": [{"problem": "p", "program": "x = 1"}]}, 409, "no verifier"),
        ("/v1/score", {"pairs": [{"problem": "p"}]}, 400, "give problem and program, or messages and reply"),
        (
            "/v1/score",
            {
                "pairs": [
                    {"problem": "p", "program": "x", "messages": [{"role": "user", "content": "p"}], "reply": "x"}
                ]
            },
            400,
            "not both",
        ),
    ],
)
def test_malformed_requests_get_a_clear_4xx_and_the_server_stays_up(server, path, body, status, message):
    reply = httpx.post(f"{server}{path}", json=body, timeout=60)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]["message"]
    assert httpx.get(f"{server}/health").status_code == 200


def test_not_json_is_a_400(server):
    reply = httpx.post(
        f"{server}/v1/execute", content=b"{not json", headers={"content-type": "application/json"}, timeout=30
    )
    assert reply.status_code == 400 and "JSON" in reply.json()["error"]["message"]


def test_concurrent_requests_are_batched_onto_the_generator(server):
    before = httpx.get(f"{server}/health").json()["solve_batches"]
    prompts = [f"Write k{i}(x)." for i in range(4)]
    replies: list[int] = []

    def ask(prompt: str) -> None:
        body = {"messages": [{"role": "user", "content": prompt}], "tests": ["assert False"], "mucode": {"turns": 1}}
        replies.append(httpx.post(f"{server}/v1/chat/completions", json=body, timeout=120).status_code)

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    health = httpx.get(f"{server}/health").json()
    assert replies == [200] * 4
    assert (
        health["solve_batches"] - before < 4 and health["largest_batch"] >= 2
    )  # fewer generator batches than requests


def test_the_documented_trl_reward_function_scores_completions_through_the_server(server):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "reward_sandbox.py"
    spec = importlib.util.spec_from_file_location("reward_sandbox", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.MUCODE_URL = server
    completions = [
        [{"role": "assistant", "content": f"```python\n{IDENTITY}\n```"}],
        [{"role": "assistant", "content": "def f(x):\n    return 1"}],
    ]
    assert module.sandbox_reward(completions, tests=[TESTS, TESTS]) == [1.0, 0.5]


def test_an_api_key_is_required_on_every_endpoint_but_health():
    from starlette.testclient import TestClient

    from mucode.execution import Executor
    from mucode.serve import ServeConfig, create_app
    from mucode.serve.app import Services

    with Executor(workers=1) as executor:
        app = create_app(ServeConfig(api_key="sesame"), Services(solver=None, executor=executor))
        with TestClient(app) as http:
            assert http.get("/health").status_code == 200
            body = {"program": "x = 1", "tests": ["assert x == 1"]}
            assert http.post("/v1/execute", json=body).status_code == 401
            assert http.post("/v1/execute", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
            reply = http.post("/v1/execute", json=body, headers={"Authorization": "Bearer sesame"})
            assert reply.status_code == 200 and reply.json()["passed"] is True


def test_serving_beyond_loopback_without_a_key_warns():
    run = subprocess.run(
        [sys.executable, "-m", "mucode", "serve", "--host", "0.0.0.0", "--model", "no-such-model"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "without --api-key" in run.stderr and "unknown model 'no-such-model'" in run.stderr
