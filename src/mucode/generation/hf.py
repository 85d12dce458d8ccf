"""In-process generation with `transformers`: plain batched `model.generate`, the universal fallback.

    gen = TransformersGenerator.from_pretrained("Qwen/Qwen2.5-Coder-0.5B-Instruct", batch_size=8)
    out = gen.generate([[{"role": "user", "content": "Write fib(n)."}]], SamplingParams(n=4, temperature=0.7))
    out[0][3].text, out[0][3].completion_tokens, out[0][3].finish_reason
    gen.close()

How a call runs: every (conversation, sample) pair is one row; rows are sorted by prompt length
(longest first), cut into batches of `batch_size` rows, and each batch is one left-padded
`model.generate` call that stops a row at an end-of-turn id or a stop string.

Seeds: `generate` samples every row from one global RNG, so a batch would share one seed. Instead
`generate` runs greedy over scores that `SeededSampler` (a logits processor) has reduced to one
token per row, drawn with the row's own `torch.Generator`, seeded `derive_seed(seed of its
conversation, sample index)`. So each request keeps its own seed inside a batch, and a row's reply
does not depend on which rows share its batch, up to the float rounding of batched logits.
Sampling is exactly `temperature` + `top_p` (greedy at 0): the model's generation_config defaults
(top-k, repetition penalty) are not applied.

Precision: `from_pretrained` loads bfloat16 where the hardware computes it natively (a CPU with
AVX512-BF16 or AMX, a CUDA GPU with bf16), else float32; pass dtype="float32" for fp32.
mucode's previous decode loop (prefix K/V reuse) lives on in benchmarks/old_decode_loop.py as the
baseline of benchmarks/generation.py.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from mucode.generation.base import (
    Completion,
    Message,
    SamplingParams,
    conversation_seeds,
    derive_seed,
    trim_at_stop,
)
from mucode.generation.chat import encode_prompt, end_of_turn_ids


__all__ = ["SeededSampler", "TransformersGenerator", "end_of_turn_ids", "preferred_dtype", "sample_rows"]
# end_of_turn_ids: re-exported from chat


def preferred_dtype(device: str | torch.device = "cpu") -> str:
    """ "bfloat16" where `device` computes it natively (a CUDA GPU with bf16 support; a CPU with the
    avx512_bf16 or amx_bf16 flag in /proc/cpuinfo), else "float32"."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type != "cpu":
        return "float32"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap check, stay exact
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


def sample_rows(logits: torch.Tensor, params: SamplingParams, rngs: Sequence[torch.Generator]) -> torch.Tensor:
    """Next token of each row (rows,) from logits (rows, vocab): argmax when greedy, else exactly
    temperature + top_p, by inverting the row's CDF at one uniform draw from the row's own RNG (so a
    row's samples do not depend on the other rows)."""
    if params.greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    order = None
    if params.top_p < 1:
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        probs = probs * ((probs.cumsum(-1) - probs) < params.top_p)  # the smallest top set holding top_p of the mass
    cdf = probs.cumsum(-1)  # (rows, vocab)
    draws = torch.stack([torch.rand((), generator=g, device=g.device) for g in rngs]).to(cdf.device) * cdf[:, -1]
    picked = torch.searchsorted(cdf, draws[:, None], right=True).clamp(max=cdf.shape[-1] - 1)  # (rows, 1)
    return (picked if order is None else order.gather(-1, picked)).squeeze(-1)


class SeededSampler(LogitsProcessor):
    """Draws each row's next token with that row's RNG (`sample_rows`) and leaves it the only
    possible token, so that a greedy `model.generate` takes it: per-row seeds inside one batch."""

    def __init__(self, params: SamplingParams, rngs: Sequence[torch.Generator]):
        self.params, self.rngs = params, list(rngs)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        tokens = sample_rows(scores, self.params, self.rngs)  # (rows,)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, tokens[:, None], 0.0)


class TransformersGenerator:
    """A `Generator` over a loaded `transformers` causal LM and its tokenizer.

    batch_size: rows (one row = one sample of one conversation) in one `model.generate` call.
    progress: set it to a callable (finished conversations, conversations of the call); called after
        each batch.
    device: where the model runs; None keeps the model where it is.
    A tokenizer without a pad token gets one from `mucode.generation.models.prepare_tokenizer`; which
    id pads cannot change a reply (padded prompt positions are masked, a reply ends at its first
    end-of-turn id or stop string). Holds `model`, `tokenizer`, `stop_ids` (end-of-turn token ids)
    and `pad_id`.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, device: str | torch.device | None = None):
        if batch_size < 1:
            raise ValueError(f"got batch_size={batch_size}; it must be >= 1")
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        if tokenizer.pad_token_id is None:
            from mucode.generation.models import prepare_tokenizer

            prepare_tokenizer(tokenizer, model)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_ids = end_of_turn_ids(tokenizer, model)
        if not self.stop_ids:
            raise ValueError(
                "the tokenizer has no eos token and the chat template no end-of-turn token; set tokenizer.eos_token"
            )
        self.pad_id: int = tokenizer.pad_token_id
        self.progress: Callable[[int, int], None] | None = None  # (finished conversations, conversations), per batch

    @classmethod
    def from_pretrained(
        cls,
        ref: str,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | None = None,
        batch_size: int = 8,
    ) -> TransformersGenerator:
        """Load any model reference: a preset name (`smollm2-135m`, ...), a hub id, a local folder or
        a .gguf file (see `mucode.generation.models.resolve_model`). dtype: None = `preferred_dtype`
        of the device (bfloat16 where native, else float32), "auto" (as stored), "float32",
        "bfloat16", ... or a torch.dtype. device: None = "cuda" when available, else "cpu"."""
        from mucode.generation.models import load_model_and_tokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_model_and_tokenizer(ref, dtype=dtype or preferred_dtype(device), device=device)
        return cls(model, tokenizer, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, conversation: Sequence[Message]) -> list[int]:
        """Prompt token ids: the chat template with the assistant header appended."""
        return encode_prompt(self.tokenizer, conversation)

    def generate(
        self, conversations: Sequence[Sequence[Message]], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions for each conversation, in input order. Sample j of conversation i
        is drawn with seed `derive_seed(seeds[i], j)`; seeds=None means seeds[i] = derive_seed(params.seed, i)."""
        seeds = conversation_seeds(len(conversations), params, seeds)
        prompts = [self.encode(c) for c in conversations]
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]  # (conversation, sample)
        rows.sort(key=lambda r: -len(prompts[r[0]]))  # stable: similar lengths share a batch, less padding
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            row_seeds = [derive_seed(seeds[i], j) for i, j in batch]
            completions = self._generate_batch([prompts[i] for i, _ in batch], params, row_seeds)
            for (i, j), completion in zip(batch, completions):
                out[i][j] = completion
            if self.progress is not None:
                self.progress(sum(all(c is not None for c in samples) for samples in out), len(out))
        return out  # type: ignore[return-value]  # every slot is filled above

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        """One `model.generate` call over left-padded prompts, row r sampled with its own RNG seeded `seeds[r]`."""
        input_ids, attention_mask = self._left_pad(prompts)  # (batch, longest prompt) each
        sampler = [] if params.greedy else [SeededSampler(params, [self._rng(s) for s in seeds])]
        with torch.inference_mode():
            sequences = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=params.max_new_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                stop_strings=list(params.stop) or None,
                tokenizer=self.tokenizer if params.stop else None,
                logits_processor=LogitsProcessorList(sampler),
                do_sample=False,  # SeededSampler has already drawn the token: greedy takes it
                temperature=None,
                top_p=None,
                top_k=None,  # the model's generation_config sampling defaults: off
                repetition_penalty=1.0,  # likewise a penalty from the model's generation_config
            )  # (batch, longest prompt + generated)
        generated = sequences[:, input_ids.shape[1] :].tolist()
        return [self._completion(len(p), ids, params) for p, ids in zip(prompts, generated)]

    def _rng(self, seed: int) -> torch.Generator:
        rng = torch.Generator(device=self.device)
        rng.manual_seed(seed)
        return rng

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            input_ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[row, width - len(p) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _completion(self, prompt_tokens: int, ids: list[int], params: SamplingParams) -> Completion:
        """Decode one generated row (as wide as the batch's longest reply; padded after its end).

        The row ends at its first end-of-turn id (counted, not decoded) or after the shortest
        prefix whose text holds a stop string, whichever comes first; found from the tokens alone,
        so the pad id may equal an end-of-turn id."""
        stop_at = next((k for k, t in enumerate(ids) if t in self.stop_ids), None)
        body = ids if stop_at is None else ids[:stop_at]
        cut = self._stop_string_end(body, params.stop)
        if cut is not None:
            body, used = body[:cut], cut
        else:
            used = len(ids) if stop_at is None else stop_at + 1
        text, _ = trim_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), params.stop)
        stopped = cut is not None or stop_at is not None or used < params.max_new_tokens
        return Completion(text, prompt_tokens, used, "stop" if stopped else "length")

    def _stop_string_end(self, ids: list[int], stop: Sequence[str]) -> int | None:
        """Length of the shortest prefix of `ids` whose text holds a stop string (None: none does);
        a binary search, as holding one only grows with the prefix."""
        if not stop or not self._has_stop(ids, stop):
            return None
        low, high = 1, len(ids)  # the prefix of length `high` holds one
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if self._has_stop(ids[:mid], stop) else (mid + 1, high)
        return high

    def _has_stop(self, ids: list[int], stop: Sequence[str]) -> bool:
        return trim_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop)[1]

    def close(self) -> None:
        """Drop the model and free its memory (CUDA cache included)."""
        on_cuda = getattr(self, "model", None) is not None and self.device.type == "cuda"
        self.model = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
