"""The OpenAI-compatible backend against a real `transformers serve` process on loopback.

The session fixture `server` saves a sharpened copy of the tiny model (see test_generation_hf.py;
`do_sample=True` in its generation_config, because `transformers serve` samples only when the model's
generation_config asks for it and otherwise decodes greedily whatever the temperature), starts
`transformers serve <folder> --host 127.0.0.1 --port <free port>`, waits for GET /health (the
forced model is loaded before the server listens) and terminates the process at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mucode.generation import Generator, SamplingParams
from mucode.generation.openai_api import OpenAIGenerator, OpenAIServerError, chat_url, parse_choices


pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving] (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="transformers serve needs transformers[serving] (fastapi, uvicorn)")

CONVERSATIONS = [
    [{"role": "user", "content": "Write a Python function add(a, b)."}],
    [{"role": "user", "content": "def"}],
    [
        {"role": "system", "content": "You write Python code."},
        {"role": "user", "content": "assert add(1, 2) == 3"},
        {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
        {"role": "user", "content": "The test failed; fix it."},
    ],
    [{"role": "user", "content": "code code"}],
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)
STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_sharp_model(source: Path, dest: Path) -> Path:
    """A copy of the tiny model with peaked random weights and sampling on by default."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    model.generation_config.do_sample = True
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(source).save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def server(tiny_model_dir, tmp_path_factory):
    """(base_url, model name, model folder) of a running `transformers serve`."""
    cli = Path(sys.executable).parent / "transformers"
    if not cli.exists():
        pytest.skip(f"no transformers CLI next to {sys.executable}")
    root = tmp_path_factory.mktemp("serve")
    folder = save_sharp_model(tiny_model_dir, root / "tiny-sharp")
    port = free_port()
    log = (root / "serve.log").open("w")
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
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"transformers serve exited with {proc.returncode}:\n{(root / 'serve.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"transformers serve not healthy after {STARTUP_TIMEOUT_S}s:\n{(root / 'serve.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield f"{base}/v1", str(folder), folder
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class CountingTransport(httpx.HTTPTransport):
    """Records every request's URL and the most requests ever in flight at once."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.urls.append(str(request.url))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return super().handle_request(request)
        finally:
            with self._lock:
                self.in_flight -= 1


def counting_client() -> tuple[httpx.Client, CountingTransport]:
    transport = CountingTransport()
    return httpx.Client(transport=transport, timeout=60.0), transport


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there once free_port() has closed it


def test_greedy_matches_the_transformers_backend(server):
    from mucode.generation.hf import TransformersGenerator

    url, name, folder = server
    gen = OpenAIGenerator(url, name, max_concurrency=4)
    assert isinstance(gen, Generator)
    remote = gen.generate(CONVERSATIONS, GREEDY)
    local = TransformersGenerator.from_pretrained(str(folder), dtype="float32", device="cpu").generate(
        CONVERSATIONS, GREEDY
    )
    assert remote == local  # same text, token counts and finish reasons
    assert len({o[0].text for o in remote}) > 1
    gen.close()


def test_n_samples_fall_back_to_separate_requests(server):
    url, name, _ = server
    gen = OpenAIGenerator(url, name)
    out = gen.generate(CONVERSATIONS[:2], SamplingParams(n=3, temperature=1.0, max_new_tokens=6))
    assert [len(o) for o in out] == [3, 3]
    assert gen.n_mode == "repeat"  # transformers serve ignores `n`: detected on the first request
    assert len({c.text for c in out[0]}) > 1
    gen.close()


def test_seeded_sampling_is_reproducible(server):
    url, name, _ = server
    gen = OpenAIGenerator(url, name, max_concurrency=1)  # transformers serve seeds one global RNG per request
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8, seed=3)
    first = gen.generate(CONVERSATIONS, params)
    assert gen.generate(CONVERSATIONS, params) == first
    assert gen.generate(CONVERSATIONS, SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8, seed=4)) != first
    gen.close()


def test_stop_string_trims_the_reply(server):
    url, name, _ = server
    gen = OpenAIGenerator(url, name)
    full = gen.generate(CONVERSATIONS[:1], GREEDY)[0][0].text
    stop = next(full[k : k + 2] for k in range(2, len(full) - 1) if full[k : k + 2].isalnum())
    out = gen.generate(CONVERSATIONS[:1], SamplingParams(temperature=0.0, max_new_tokens=12, stop=(stop,)))[0][0]
    assert (out.text, out.finish_reason) == (full[: full.index(stop)], "stop")
    gen.close()


def test_length_and_usage_counts(server):
    url, name, _ = server
    gen = OpenAIGenerator(url, name)
    out = gen.generate(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=4))
    assert all((o[0].completion_tokens, o[0].finish_reason) == (4, "length") for o in out)
    assert all(o[0].prompt_tokens > 0 for o in out)
    gen.close()


def test_concurrency_is_bounded(server):
    url, name, _ = server
    client, transport = counting_client()
    gen = OpenAIGenerator(url, name, max_concurrency=2, client=client)
    gen.generate(CONVERSATIONS * 2, SamplingParams(temperature=0.0, max_new_tokens=16))
    assert len(transport.urls) == 8
    assert transport.peak == 2
    gen.close()
    client.close()


def test_client_error_is_not_retried(server):
    url, _, _ = server
    client, transport = counting_client()
    gen = OpenAIGenerator(url, "not-the-served-model", max_retries=3, backoff_s=0.01, client=client)
    with pytest.raises(OpenAIServerError, match="pinned") as err:
        gen.generate(CONVERSATIONS[:1], GREEDY)
    assert err.value.status == 400 and len(transport.urls) == 1
    gen.close()


def test_connection_errors_are_retried_with_backoff():
    client, transport = counting_client()
    gen = OpenAIGenerator(closed_port_url(), "m", max_retries=2, backoff_s=0.05, client=client)
    start = time.monotonic()
    with pytest.raises(OpenAIServerError, match="giving up after 3 attempts") as err:
        gen.generate(CONVERSATIONS[:1], GREEDY)
    assert err.value.status is None and len(transport.urls) == 3
    assert time.monotonic() - start >= 0.05 + 0.10  # backoff 0.05 s, then 0.10 s
    gen.close()


def test_round_robin_retries_on_the_next_replica(server):
    url, name, _ = server
    dead = closed_port_url()
    client, transport = counting_client()
    gen = OpenAIGenerator([dead, url], name, max_concurrency=1, max_retries=1, backoff_s=0.01, client=client)
    out = gen.generate(CONVERSATIONS[:2], GREEDY)
    assert [len(o) for o in out] == [1, 1]
    assert {u.rsplit("/v1", 1)[0] for u in transport.urls} == {dead.rsplit("/v1", 1)[0], url.rsplit("/v1", 1)[0]}
    gen.close()


def test_parse_choices_without_usage_and_with_several_choices():
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=10, stop=("```",))
    data = {
        "choices": [
            {"index": 1, "message": {"content": "a```b"}, "finish_reason": "stop"},
            {"index": 0, "message": {"content": "x" * 9}, "finish_reason": "length"},
            {"index": 2, "message": {"content": "c"}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 17},
    }
    out = parse_choices(data, params)
    assert [(c.text, c.completion_tokens, c.finish_reason) for c in out] == [
        ("x" * 9, 10, "length"),
        ("a", 4, "stop"),
        ("c", 3, "stop"),
    ]
    assert all(c.prompt_tokens == 5 for c in out)
    bare = parse_choices({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}, SamplingParams())
    assert (bare[0].prompt_tokens, bare[0].completion_tokens) == (0, 0)


def test_chat_url():
    assert chat_url("http://h:8000") == chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"


def test_constructor_validates():
    with pytest.raises(ValueError, match="max_concurrency=0"):
        OpenAIGenerator("http://h", "m", max_concurrency=0)
    with pytest.raises(ValueError, match="n_mode"):
        OpenAIGenerator("http://h", "m", n_mode="sometimes")
