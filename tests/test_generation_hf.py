"""The transformers backend on the tiny random chat model, and the backend factory.

The tiny model's own weights are so flat that greedy decoding repeats one token for any prompt;
`sharp_model` redraws its matrices with a larger spread so that replies depend on the prompt, which
is what the batching and ordering tests need to mean anything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mucode.generation import Completion, Generator, SamplingParams
from mucode.generation.factory import make_generator
from mucode.generation.base import trim_at_stop
from mucode.generation.hf import TransformersGenerator, choose_pad_id, end_of_turn_ids

# Deliberately not sorted by length, with a multi-turn one, so that sorting and restoring order shows.
CONVERSATIONS = [
    [{"role": "user", "content": "Write a Python function add(a, b)."}],
    [{"role": "user", "content": "def"}],
    [
        {"role": "system", "content": "You write Python code."},
        {"role": "user", "content": "Write a Python function. assert add(1, 2) == 3"},
        {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
        {"role": "user", "content": "The test failed; fix it."},
    ],
    [{"role": "user", "content": "code code"}],
    [{"role": "user", "content": "```python\nreturn a + b\n```"}],
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)


def sharpen(model: torch.nn.Module, seed: int = 0, std: float = 0.5) -> torch.nn.Module:
    """Redraw every weight matrix from N(0, std^2): peaked, prompt-dependent logits."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
    return model


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return sharpen(model), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def gen(model_and_tokenizer) -> TransformersGenerator:
    model, tokenizer = model_and_tokenizer
    return TransformersGenerator(model, tokenizer, batch_size=3, device="cpu")


def test_is_a_generator(gen):
    assert isinstance(gen, Generator)
    assert gen.stop_ids == [gen.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert gen.pad_id == gen.tokenizer.pad_token_id


def test_batched_left_padded_greedy_matches_one_at_a_time(gen, model_and_tokenizer):
    batched = gen.generate(CONVERSATIONS, GREEDY)
    single = TransformersGenerator(*model_and_tokenizer, batch_size=1)
    alone = [single.generate([c], GREEDY)[0] for c in CONVERSATIONS]
    assert batched == alone
    assert len({out[0].text for out in batched}) > 1, "replies should depend on the prompt (sharpened model)"


def test_order_preserved_after_length_sorting(gen):
    lengths = [len(gen.encode(c)) for c in CONVERSATIONS]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
    out = gen.generate(CONVERSATIONS, GREEDY)
    assert [o[0].prompt_tokens for o in out] == lengths


def test_n_samples(gen):
    out = gen.generate(CONVERSATIONS[:2], SamplingParams(n=4, temperature=1.0, max_new_tokens=8))
    assert [len(o) for o in out] == [4, 4]
    assert all(isinstance(c, Completion) for o in out for c in o)
    assert len({c.text for c in out[0]}) > 1


def test_seeded_sampling_is_reproducible(gen):
    params = SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=7)
    first = gen.generate(CONVERSATIONS, params)
    assert gen.generate(CONVERSATIONS, params) == first
    other = gen.generate(CONVERSATIONS, SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=8))
    assert other != first


def test_sampling_does_not_touch_global_rng(gen):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gen.generate(CONVERSATIONS[:1], SamplingParams(temperature=1.0, max_new_tokens=4))
    assert torch.equal(torch.rand(3), expected)


def test_stop_string_trims_the_reply(gen):
    full = gen.generate(CONVERSATIONS[:1], GREEDY)[0][0].text
    stop = next(full[k : k + 2] for k in range(2, len(full) - 1) if full[k : k + 2].isalnum())  # an ASCII piece inside
    params = SamplingParams(temperature=0.0, max_new_tokens=16, stop=(stop,))
    out = gen.generate(CONVERSATIONS[:1], params)[0][0]
    assert out.text == full[: full.index(stop)]
    assert out.finish_reason == "stop"
    assert out.completion_tokens < 16
    assert gen.generate(CONVERSATIONS, params)[0][0] == out  # the same inside a padded batch


def test_end_of_turn_token_stops_and_is_counted(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    gen = TransformersGenerator(model, tokenizer)
    prompt = torch.tensor([gen.encode(CONVERSATIONS[0])])
    ids = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=8,
                         pad_token_id=gen.pad_id)[0, prompt.shape[1] :].tolist()
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])  # first token not seen before position k
    gen.stop_ids = [ids[k]]  # pretend it is the end-of-turn token
    out = gen.generate(CONVERSATIONS[:1], SamplingParams(temperature=0.0, max_new_tokens=8))[0][0]
    assert out.text == tokenizer.decode(ids[:k], skip_special_tokens=True)
    assert (out.completion_tokens, out.finish_reason) == (k + 1, "stop")


def test_length_finish_and_token_counts(gen):
    out = gen.generate(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=5))
    for conversation, (c,) in zip(CONVERSATIONS, out):
        assert (c.completion_tokens, c.finish_reason) == (5, "length")
        assert c.prompt_tokens == len(gen.encode(conversation))


@pytest.mark.parametrize("pad", ["eos", "none"])
def test_pad_token_never_equals_end_of_turn(tiny_model_dir, model_and_tokenizer, pad):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token if pad == "eos" else None
    stop = end_of_turn_ids(tokenizer)
    assert choose_pad_id(tokenizer, stop) not in stop
    gen = TransformersGenerator(model_and_tokenizer[0], tokenizer, batch_size=5)
    reference = TransformersGenerator(*model_and_tokenizer, batch_size=1)
    assert gen.generate(CONVERSATIONS, GREEDY) == reference.generate(CONVERSATIONS, GREEDY)


def test_trim_at_stop():
    assert trim_at_stop("abc```def", ("```", "c")) == ("ab", True)
    assert trim_at_stop("abc", ("x", "")) == ("abc", False)


def test_from_pretrained_and_close(tiny_model_dir):
    gen = make_generator("transformers", str(tiny_model_dir), dtype="bfloat16", device="cpu", batch_size=2)
    assert isinstance(gen, TransformersGenerator) and gen.model.dtype == torch.bfloat16
    out = gen.generate(CONVERSATIONS[:3], SamplingParams(n=2, temperature=0.7, max_new_tokens=3))
    assert [len(o) for o in out] == [2, 2, 2]
    gen.close()
    assert gen.model is None


def test_factory_errors():
    with pytest.raises(ValueError, match="hf, transformers, openai, vllm"):
        make_generator("llamacpp", "m")
    with pytest.raises(ValueError, match="base_url"):
        make_generator("openai", "m")


def test_vllm_missing_gives_install_hint():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(ImportError, match=r"pip install 'mucode\[vllm\]'"):
        make_generator("vllm", "m")


def test_import_is_cheap():
    code = "import sys, mucode.generation, mucode.generation.factory; print(sorted({'torch', 'transformers', 'httpx', 'vllm'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
