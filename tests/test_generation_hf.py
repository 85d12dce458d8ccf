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
from mucode.generation.base import trim_at_stop
from mucode.generation.factory import make_generator
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
    with pytest.raises(ValueError, match="auto, hf, transformers, openvino, openai, vllm"):
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
    code = "import sys, mucode.generation, mucode.generation.factory; print(sorted({'torch', 'transformers', 'httpx', 'vllm', 'openvino', 'openvino_genai'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# --- the decode loop (engine="loop") against model.generate, the prefix store, per-row seeds ------

LONG_GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)
SAMPLED = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5)


def extend(conversations, outputs, note="It failed; try again."):
    """The next turn of each conversation: its reply, then a new user message."""
    return [[*c, {"role": "assistant", "content": o[0].text}, {"role": "user", "content": note}] for c, o in zip(conversations, outputs)]


@pytest.fixture()
def loop_gen(model_and_tokenizer) -> TransformersGenerator:
    return TransformersGenerator(*model_and_tokenizer, batch_size=3)


@pytest.fixture(scope="module")
def plain_gen(model_and_tokenizer) -> TransformersGenerator:
    return TransformersGenerator(*model_and_tokenizer, batch_size=3, engine="generate")


def test_loop_greedy_equals_model_generate(loop_gen, plain_gen):
    lengths = [len(loop_gen.encode(c)) for c in CONVERSATIONS]
    assert max(lengths) > 4 * min(lengths)  # very different prompt lengths share batches
    out = loop_gen.generate(CONVERSATIONS, LONG_GREEDY)
    assert out == plain_gen.generate(CONVERSATIONS, LONG_GREEDY)
    assert len({o[0].text for o in out}) > 1


def test_prefix_store_reuse_gives_the_cold_result(loop_gen, plain_gen, model_and_tokenizer):
    first = loop_gen.generate(CONVERSATIONS, LONG_GREEDY)
    hits, reused = loop_gen.prefix_store.hits, loop_gen.prefix_store.reused_tokens
    second_turn = extend(CONVERSATIONS, first)
    warm = loop_gen.generate(second_turn, LONG_GREEDY)
    # every second-turn prompt starts with its first-turn prompt and reply, which are in the store
    assert loop_gen.prefix_store.hits - hits == len(CONVERSATIONS)
    assert loop_gen.prefix_store.reused_tokens - reused >= sum(len(loop_gen.encode(c)) for c in CONVERSATIONS)
    cold = TransformersGenerator(*model_and_tokenizer, batch_size=3, prefix_cache_bytes=0)
    assert warm == cold.generate(second_turn, LONG_GREEDY) == plain_gen.generate(second_turn, LONG_GREEDY)
    assert cold.prefix_store.hits == 0 and not cold.prefix_store.entries


def test_prefix_reuse_logits_match_full_encoding(loop_gen, model_and_tokenizer):
    """Reused K/V give the same next-token logits as encoding the whole prompt (float32, to rounding)."""
    model, _ = model_and_tokenizer
    first = loop_gen.generate(CONVERSATIONS[2:3], LONG_GREEDY)
    prompt = torch.tensor(loop_gen.encode(extend(CONVERSATIONS[2:3], first)[0]))
    with torch.inference_mode():
        _, (reused_logits,) = loop_gen._prefill([prompt])
        full = model(input_ids=prompt[None]).logits[0, -1]
    assert loop_gen.prefix_store.reused_tokens > len(prompt) // 2
    torch.testing.assert_close(reused_logits, full, rtol=1e-4, atol=1e-4)


def test_common_prefix_not_exact_match_is_reused(loop_gen, plain_gen):
    """The stored sequence and the new prompt differ after a shared start: only the shared part is reused."""
    loop_gen.generate(CONVERSATIONS[2:3], LONG_GREEDY)
    edited = [[*CONVERSATIONS[2][:3], {"role": "user", "content": "Another message entirely."}]]
    shared = _common(loop_gen.encode(CONVERSATIONS[2]), loop_gen.encode(edited[0]))
    reused = loop_gen.prefix_store.reused_tokens
    out = loop_gen.generate(edited, LONG_GREEDY)
    assert loop_gen.prefix_store.reused_tokens - reused == shared
    assert out == plain_gen.generate(edited, LONG_GREEDY)


def _common(a: list[int], b: list[int]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_sampled_row_independent_of_batch_and_order(model_and_tokenizer):
    alone = [TransformersGenerator(*model_and_tokenizer, batch_size=3).generate([c], SAMPLED, seeds=[100 + k])[0]
             for k, c in enumerate(CONVERSATIONS)]
    for batch_size in (1, 4, 15):
        gen = TransformersGenerator(*model_and_tokenizer, batch_size=batch_size)
        order = [3, 0, 4, 2, 1]
        out = gen.generate([CONVERSATIONS[k] for k in order], SAMPLED, seeds=[100 + k for k in order])
        assert [out[order.index(k)] for k in range(len(CONVERSATIONS))] == alone
    assert all(len({c.text for c in samples}) > 1 for samples in alone[:2])  # n samples differ from each other


def test_seeds_default_to_params_seed_and_index(loop_gen):
    from mucode.generation.base import derive_seed

    default = loop_gen.generate(CONVERSATIONS[:3], SAMPLED)
    explicit = loop_gen.generate(CONVERSATIONS[:3], SAMPLED, seeds=[derive_seed(SAMPLED.seed, i) for i in range(3)])
    assert default == explicit
    assert loop_gen.generate(CONVERSATIONS[:3], SAMPLED, seeds=[1, 2, 3]) != default
    with pytest.raises(ValueError, match="2 seeds for 3 conversations"):
        loop_gen.generate(CONVERSATIONS[:3], SAMPLED, seeds=[1, 2])


def test_sampled_with_store_equals_without(loop_gen, model_and_tokenizer):
    """Prefix reuse does not change what a seeded row samples (same logits to rounding, same draws)."""
    first = loop_gen.generate(CONVERSATIONS, GREEDY)
    second_turn = extend(CONVERSATIONS, first)
    cold = TransformersGenerator(*model_and_tokenizer, batch_size=3, prefix_cache_bytes=0)
    assert loop_gen.generate(second_turn, SAMPLED) == cold.generate(second_turn, SAMPLED)
    assert loop_gen.prefix_store.hits >= len(CONVERSATIONS)


def test_top_p_restricts_to_the_top_token(loop_gen):
    """A tiny top_p keeps only the most likely token: sampling then equals greedy decoding."""
    greedy = loop_gen.generate(CONVERSATIONS, GREEDY)
    narrow = loop_gen.generate(CONVERSATIONS, SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=16, seed=3))
    assert narrow == greedy


def test_loop_stop_string_and_max_new_tokens(loop_gen, plain_gen):
    full = loop_gen.generate(CONVERSATIONS[:1], GREEDY)[0][0].text
    stop = next(full[k : k + 2] for k in range(2, len(full) - 1) if full[k : k + 2].isalnum())
    params = SamplingParams(temperature=0.0, max_new_tokens=16, stop=(stop,))
    batch = loop_gen.generate(CONVERSATIONS, params)
    assert batch[0][0].text == full[: full.index(stop)]
    assert batch[0][0].finish_reason == "stop" and batch[0][0].completion_tokens < 16
    for (mine,), (theirs,) in zip(batch, plain_gen.generate(CONVERSATIONS, params)):
        assert (mine.text, mine.finish_reason) == (theirs.text, theirs.finish_reason)
    for k in (1, 7):
        out = loop_gen.generate(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=k))
        assert all((c.completion_tokens, c.finish_reason) == (k, "length") for (c,) in out)


def test_finished_rows_leave_the_batch(model_and_tokenizer):
    """A row that hits the end-of-turn token early ends there while the others go on, as with model.generate."""
    model, _ = model_and_tokenizer
    gen = TransformersGenerator(*model_and_tokenizer, batch_size=5)
    prompt = torch.tensor([gen.encode(CONVERSATIONS[1])])
    ids = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=24,
                         pad_token_id=gen.pad_id)[0, prompt.shape[1] :].tolist()
    k = next(k for k in range(2, len(ids)) if ids[k] not in ids[:k])
    gen.stop_ids = [ids[k]]  # pretend it is the end-of-turn token: conversation 1 ends after k + 1 tokens
    out = gen.generate(CONVERSATIONS, LONG_GREEDY)
    assert (out[1][0].completion_tokens, out[1][0].finish_reason) == (k + 1, "stop")
    assert any(o[0].completion_tokens > k + 1 for o in out)
    reference = TransformersGenerator(*model_and_tokenizer, batch_size=5, engine="generate")
    reference.stop_ids = gen.stop_ids
    assert out == reference.generate(CONVERSATIONS, LONG_GREEDY)


def test_store_stays_within_a_small_budget(model_and_tokenizer):
    gen = TransformersGenerator(*model_and_tokenizer, batch_size=5)
    gen.generate(CONVERSATIONS, LONG_GREEDY)
    sizes = [kv.numel() * kv.element_size() for _, kv in gen.prefix_store.entries.values()]
    assert len(sizes) == len(CONVERSATIONS) and gen.prefix_store.nbytes == sum(sizes)
    budget = sum(sizes) // 2
    small = TransformersGenerator(*model_and_tokenizer, batch_size=5, prefix_cache_bytes=budget)
    assert small.generate(CONVERSATIONS, LONG_GREEDY) == gen.generate(CONVERSATIONS, LONG_GREEDY)
    assert 1 <= len(small.prefix_store.entries) < len(CONVERSATIONS) and small.prefix_store.nbytes <= budget


def test_store_evicts_least_recently_used():
    from mucode.generation.hf import PrefixStore

    kv = torch.zeros(2, 2, 1, 4, 4)  # (layers, k/v, heads, tokens, dim)
    store = PrefixStore(budget_bytes=2 * kv.numel() * kv.element_size())
    store.add(torch.tensor([1, 2, 3, 4]), kv.clone())
    store.add(torch.tensor([5, 6, 7, 8]), kv.clone())
    assert store.lookup(torch.tensor([1, 2, 3, 4, 9]))[1] == 4  # [1, 2, 3, 4] is now the most recently used
    store.add(torch.tensor([9, 9, 9, 9]), kv.clone())
    assert [ids.tolist() for ids, _ in store.entries.values()] == [[1, 2, 3, 4], [9, 9, 9, 9]]
    store.add(torch.tensor(list(range(20))), torch.zeros(2, 2, 1, 20, 4))  # larger than the budget: not kept
    assert len(store.entries) == 2 and store.nbytes == 2 * kv.numel() * kv.element_size()


def test_store_replaces_prefixes_and_skips_covered():
    from mucode.generation.hf import PrefixStore

    store = PrefixStore(budget_bytes=10**6)
    kv = lambda n: torch.zeros(2, 2, 1, n, 4)  # (layers, k/v, heads, tokens, dim)
    store.add(torch.tensor([1, 2, 3]), kv(3))
    store.add(torch.tensor([1, 2, 3, 4, 5]), kv(5))  # extends the first: replaces it
    store.add(torch.tensor([1, 2]), kv(2))  # covered by the second: not added
    assert [ids.tolist() for ids, _ in store.entries.values()] == [[1, 2, 3, 4, 5]]
    assert store.nbytes == kv(5).numel() * 4
    assert store.lookup(torch.tensor([1, 2, 9]))[1] == 2 and store.lookup(torch.tensor([7]))[0] is None
    assert (store.hits, store.misses, store.reused_tokens) == (1, 1, 2)
    with pytest.raises(ValueError, match="0 disables"):
        PrefixStore(-1)


def test_close_releases_the_store(model_and_tokenizer):
    import gc
    import weakref

    gen = TransformersGenerator(*model_and_tokenizer, batch_size=3)
    gen.generate(CONVERSATIONS, GREEDY)
    refs = [weakref.ref(kv) for _, kv in gen.prefix_store.entries.values()]
    assert refs and gen.prefix_store.nbytes > 0
    gen.close()
    gc.collect()
    assert gen.model is None and gen.prefix_store.nbytes == 0
    assert all(r() is None for r in refs)


def test_engine_validation(model_and_tokenizer):
    with pytest.raises(ValueError, match="engine='beam'"):
        TransformersGenerator(*model_and_tokenizer, engine="beam")


def test_progress_reports_finished_conversations_per_batch(model_and_tokenizer):
    from mucode.generation.base import attach_progress

    gen = TransformersGenerator(*model_and_tokenizer, batch_size=2)
    seen: list[tuple[int, int]] = []
    assert attach_progress(gen, lambda done, total: seen.append((done, total)))
    gen.generate(CONVERSATIONS, SamplingParams(n=2, temperature=1.0, max_new_tokens=8))
    assert len(seen) == 5 and seen[-1] == (5, 5) and [d for d, _ in seen] == sorted(d for d, _ in seen)
