"""The old decode loop, kept in benchmarks/old_decode_loop.py as the baseline of
benchmarks/generation.py: it must still give the hf backend's replies (so its tokens/s compare like
with like), and its prefix store must still work. Not part of the package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_generation_hf import CONVERSATIONS, LONG_GREEDY, SAMPLED, sharpen

from mucode.generation.hf import TransformersGenerator


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from old_decode_loop import OldLoopGenerator, PrefixStore  # noqa: E402


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return sharpen(model), AutoTokenizer.from_pretrained(tiny_model_dir)


def extend(conversations, outputs, note="It failed; try again."):
    """The next turn of each conversation: its reply, then a new user message."""
    return [
        [*c, {"role": "assistant", "content": o[0].text}, {"role": "user", "content": note}]
        for c, o in zip(conversations, outputs)
    ]


def test_loop_gives_the_hf_backends_replies_greedy_and_seeded(model_and_tokenizer):
    loop = OldLoopGenerator(*model_and_tokenizer, batch_size=3)
    hf = TransformersGenerator(*model_and_tokenizer, batch_size=3)
    first = loop.generate(CONVERSATIONS, LONG_GREEDY)
    assert first == hf.generate(CONVERSATIONS, LONG_GREEDY)
    assert len({o[0].text for o in first}) > 1
    assert loop.generate(CONVERSATIONS, SAMPLED) == hf.generate(CONVERSATIONS, SAMPLED)  # same per-row draws
    second_turn = extend(CONVERSATIONS, first)
    warm = loop.generate(second_turn, LONG_GREEDY)  # reuses the first turn's K/V
    assert loop.prefix_store.hits >= len(CONVERSATIONS)
    assert loop.prefix_store.reused_tokens >= sum(len(loop.encode(c)) for c in CONVERSATIONS)
    assert warm == hf.generate(second_turn, LONG_GREEDY)


def test_store_evicts_least_recently_used():
    kv = torch.zeros(2, 2, 1, 4, 4)  # (layers, k/v, heads, tokens, dim)
    store = PrefixStore(budget_bytes=2 * kv.numel() * kv.element_size())
    store.add(torch.tensor([1, 2, 3, 4]), kv.clone())
    store.add(torch.tensor([5, 6, 7, 8]), kv.clone())
    assert store.lookup(torch.tensor([1, 2, 3, 4, 9]))[1] == 4  # [1, 2, 3, 4] is now the most recently used
    store.add(torch.tensor([9, 9, 9, 9]), kv.clone())
    assert [ids.tolist() for ids, _ in store.entries.values()] == [[1, 2, 3, 4], [9, 9, 9, 9]]
    store.add(torch.tensor(list(range(20))), torch.zeros(2, 2, 1, 20, 4))  # larger than the budget: not kept
    assert len(store.entries) == 2 and store.nbytes == 2 * kv.numel() * kv.element_size()
