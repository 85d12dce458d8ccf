"""Fitting verifier inputs to max_length: the context loses its oldest attempts first, the
problem and the scored reply stay whole; only problem + reply alone too long is cut at the start."""

from __future__ import annotations

import pytest


pytest.importorskip("transformers")

from mucode.verifier.model import encode, fit_ids, length_fit_counts  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def history(attempts: int) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": "PROBLEM: write add(a, b) that returns the sum."}]
    for i in range(attempts):
        messages += [
            {"role": "assistant", "content": f"attempt {i} " + "x = 1\n" * 20},
            {"role": "user", "content": f"feedback {i}: AssertionError " * 5},
        ]
    return messages + [{"role": "assistant", "content": "def add(a, b):\n    return a + b  # FINAL"}]


def text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids)


def test_a_sequence_that_fits_is_the_chat_template_unchanged(tokenizer):
    messages = history(2)
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    fitted = fit_ids(tokenizer, messages, len(full))
    assert fitted.ids == list(full) and fitted.attempts_removed == 0 and fitted.tokens_clipped == 0


def test_too_long_drops_the_oldest_attempts_and_keeps_problem_and_reply_whole(tokenizer):
    messages = history(3)
    keep_one = len(encode(tokenizer, [messages[0], *messages[5:]], 10**6))  # problem, attempt 2, reply
    fitted = fit_ids(tokenizer, messages, keep_one)
    decoded = text(tokenizer, fitted.ids)
    assert fitted.attempts_removed == 2 and fitted.tokens_clipped == 0
    assert "PROBLEM" in decoded and "FINAL" in decoded and "attempt 2" in decoded
    assert "attempt 0" not in decoded and "attempt 1" not in decoded


def test_problem_and_reply_alone_too_long_keep_the_end(tokenizer):
    messages = history(1)
    fitted = fit_ids(tokenizer, messages, 12)
    assert len(fitted.ids) == 12 and fitted.attempts_removed == 1 and fitted.tokens_clipped > 0
    assert "FINAL" in text(tokenizer, fitted.ids)  # the reward is read at the end
    counts = length_fit_counts([fitted, fit_ids(tokenizer, messages, 10**6)])
    assert counts == {"sequences": 2, "context_truncated": 1, "attempts_removed": 1, "clipped": 1}
