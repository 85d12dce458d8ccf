"""mucode's previous `hf` decode loop (prefix K/V reuse, per-row seeds), kept as the baseline that
benchmarks/generation.py measures (engine "loop"). The package's `hf` backend is plain batched
`model.generate` now (`mucode.generation.hf`); this file is not part of the package.

    from old_decode_loop import OldLoopGenerator          # with benchmarks/ on sys.path
    gen = OldLoopGenerator.from_pretrained("smollm2-135m", batch_size=24, prefix_cache_bytes=2 * 2**30)
    out = gen.generate(conversations, SamplingParams(n=1, temperature=0.7, max_new_tokens=256), seeds=[...])
    gen.prefix_store.hits, gen.prefix_store.reused_tokens   # how much prompt encoding was skipped

How a call runs: every (conversation, sample) pair is one row; rows are sorted by prompt length
(longest first) and cut into batches of `batch_size` rows. For a batch, each distinct prompt is
prefilled once: it reuses the K/V of the longest token prefix it shares with an earlier sequence in
the `PrefixStore` (multi-turn prompts repeat the whole conversation so far) and encodes only the
rest, in chunks of at most `prefill_tokens` (rows x padded width). Then the batch decodes one token
per step over a left-padded cache with room to grow; a row that ends (end-of-turn token, stop
string, `max_new_tokens`) leaves the batch at once and its K/V (prompt + reply) goes to the store.
Each row samples from its own `torch.Generator` seeded `derive_seed(seed of its conversation,
sample index)` (`mucode.generation.hf.sample_rows`: exactly temperature + top_p, greedy at 0).
Models whose layers are not all full attention (sliding windows, recurrent layers) are refused.
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from mucode.generation.base import (
    Completion,
    Message,
    SamplingParams,
    conversation_seeds,
    derive_seed,
    trim_at_stop,
)
from mucode.generation.chat import encode_prompt, end_of_turn_ids
from mucode.generation.hf import sample_rows


logger = logging.getLogger("mucode.generation")

__all__ = ["OldLoopGenerator", "PrefixStore", "choose_pad_id"]


def choose_pad_id(tokenizer: Any, stop_ids: Sequence[int]) -> int:
    """The pad id used for left padding and for rows that finished early.

    The tokenizer's pad token when it has one that does not end a turn. Otherwise (no pad token,
    or pad == eos as many checkpoints ship) the first of unk, bos, or id 0 that is not an
    end-of-turn id. The choice cannot change outputs: padded prompt positions are masked out, and
    replies are cut at the first end-of-turn id; the id only has to exist in the vocabulary and
    must not be an end-of-turn id, so that "finished" and "padding" stay distinguishable.
    """
    stop = set(stop_ids)
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in stop:
        return tokenizer.pad_token_id
    candidates = [tokenizer.unk_token_id, tokenizer.bos_token_id, *range(len(tokenizer))]
    pad_id = next(i for i in candidates if i is not None and i not in stop)
    logger.info(
        "tokenizer pad token is %r (end-of-turn ids %s); padding with id %d (%r) instead",
        tokenizer.pad_token,
        sorted(stop),
        pad_id,
        tokenizer.convert_ids_to_tokens(pad_id),
    )
    return pad_id


class PrefixStore:
    """Key/value states of earlier sequences, kept for reuse by later prompts that start the same way.

    An entry is one sequence's token ids and its K/V, one tensor (layers, 2, kv_heads, tokens,
    head_dim). `lookup` returns the entry with the longest common token prefix with a prompt, not
    only exact prefixes: a chat template may render an earlier reply slightly differently from the
    tokens that were generated, and everything before the first difference is still valid. Least
    recently used entries are evicted once the entries hold more than `budget_bytes`; an entry
    larger than the budget is not kept. Counters: `hits`, `misses`, `reused_tokens`.
    """

    def __init__(self, budget_bytes: int):
        if budget_bytes < 0:
            raise ValueError(f"got prefix cache budget {budget_bytes} bytes; it must be >= 0 (0 disables the cache)")
        self.budget_bytes = budget_bytes
        self.entries: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()  # key -> (ids, kv)
        self.nbytes = 0
        self.hits = self.misses = self.reused_tokens = 0
        self._next_key = 0

    def lookup(self, ids: torch.Tensor) -> tuple[torch.Tensor | None, int]:
        """The K/V (layers, 2, kv_heads, tokens, head_dim) of the entry sharing the longest prefix
        with `ids` (1D), and that prefix length; (None, 0) when no entry shares a first token."""
        best_key, best = None, 0
        for key, (stored, _) in self.entries.items():
            common = _common_prefix(stored, ids)
            if common > best:
                best_key, best = key, common
        if best_key is None:
            self.misses += 1
            return None, 0
        self.entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        return self.entries[best_key][1], best

    def add(self, ids: torch.Tensor, kv: torch.Tensor) -> None:
        """Keep `kv` for the tokens `ids` (it must not be a view of a buffer that is reused).
        Entries that are a prefix of `ids` are replaced; nothing is added when an entry already covers `ids`."""
        size = kv.numel() * kv.element_size()
        if size > self.budget_bytes:
            return
        for key, (stored, _) in list(self.entries.items()):
            common = _common_prefix(stored, ids)
            if common == len(ids):  # already covered: this sequence's states add nothing
                self.entries.move_to_end(key)
                return
            if common == len(stored):
                self._drop(key)
        while self.entries and self.nbytes + size > self.budget_bytes:
            self._drop(next(iter(self.entries)))
        self.entries[self._next_key] = (ids, kv)
        self._next_key += 1
        self.nbytes += size

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = 0

    def _drop(self, key: int) -> None:
        _, kv = self.entries.pop(key)
        self.nbytes -= kv.numel() * kv.element_size()


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the longest common prefix of two 1D id tensors."""
    m = min(len(a), len(b))
    differ = (a[:m] != b[:m]).nonzero()
    return int(differ[0, 0]) if len(differ) else m


class _BufferLayer(DynamicLayer):
    """One layer's K/V for a batch, (batch, kv_heads, columns, head_dim), in a buffer with spare
    columns: a decode step writes in place, where `DynamicLayer` would `torch.cat` (copy) the
    whole cache every step. Grows by `room` columns when full."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int, room: int = 128):
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self._k, self._v, self.length, self.room = keys, values, length, room
        self._views()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        if end > self._k.shape[-2]:
            self._k, self._v = (_widen(t, end + self.room) for t in (self._k, self._v))
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._views()

    def drop_columns(self, count: int) -> None:
        """Forget the first `count` columns (padding that no remaining row needs)."""
        self._k, self._v = self._k[:, :, count:], self._v[:, :, count:]
        self.length -= count
        self._views()

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]


def _widen(t: torch.Tensor, columns: int) -> torch.Tensor:
    out = t.new_zeros(*t.shape[:2], columns, t.shape[3])
    out[:, :, : t.shape[2]] = t
    return out


@dataclass
class _Row:
    """One sample being decoded: its prompt (index into the call's prompts), sample index, RNG and tokens so far."""

    prompt: int
    sample: int
    rng: torch.Generator
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None  # "stop" | "length" once done


class OldLoopGenerator:
    """A `Generator` over a loaded `transformers` causal LM and its tokenizer: the old decode loop.

    batch_size: rows (one row = one sample of one conversation) decoded together.
    prefix_cache_bytes: budget of the prefix store (see `PrefixStore`); 0 disables it.
    prefill_tokens: most (rows x padded width) tokens encoded in one forward pass when prompts are
        prefilled; bounds the attention memory of long prompts.
    progress: set it to a callable (finished conversations, conversations of the call); called
        after each batch of rows.
    device: where the model runs; None keeps the model where it is.
    Holds `model`, `tokenizer`, `stop_ids` (end-of-turn token ids), `pad_id` (see `choose_pad_id`)
    and `prefix_store`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        device: str | torch.device | None = None,
        prefix_cache_bytes: int = 2 * 2**30,
        prefill_tokens: int = 8192,
    ):
        if batch_size < 1:
            raise ValueError(f"got batch_size={batch_size}; it must be >= 1")
        if prefill_tokens < 1:
            raise ValueError(f"got prefill_tokens={prefill_tokens}; it must be >= 1")
        if not _all_full_attention(model.config):
            raise ValueError(
                f"{type(model).__name__} has sliding-window or recurrent layers, "
                "which the old decode loop does not support"
            )
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.prefill_tokens = prefill_tokens
        self.prefix_store = PrefixStore(prefix_cache_bytes)
        self.stop_ids = end_of_turn_ids(tokenizer, model)
        if not self.stop_ids:
            raise ValueError(
                "the tokenizer has no eos token and the chat template no end-of-turn token; set tokenizer.eos_token"
            )
        self.pad_id = choose_pad_id(tokenizer, self.stop_ids)
        self.progress: Callable[[int, int], None] | None = None  # (finished conversations, conversations), per batch

    @classmethod
    def from_pretrained(
        cls,
        ref: str,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | None = None,
        batch_size: int = 8,
        **options: Any,
    ) -> OldLoopGenerator:
        """Load any model reference: a preset name (`smollm2-135m`, ...), a hub id, a local folder or
        a .gguf file (see `mucode.generation.models.resolve_model`). dtype: "auto" (as stored),
        "float32", "bfloat16", ... or a torch.dtype. device: None = "cuda" when available, else "cpu".
        options: prefix_cache_bytes, prefill_tokens (see the class)."""
        from mucode.generation.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(ref, dtype=dtype, device=device)
        return cls(model, tokenizer, batch_size=batch_size, **options)

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
        rows.sort(key=lambda r: -len(prompts[r[0]]))  # similar lengths share a batch: less padding
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        with torch.inference_mode():
            for start in range(0, len(rows), self.batch_size):
                batch = [
                    _Row(i, j, self._rng(derive_seed(seeds[i], j))) for i, j in rows[start : start + self.batch_size]
                ]
                for row in self._decode(prompts, batch, params):
                    out[row.prompt][row.sample] = self._finish(row, len(prompts[row.prompt]), params)
                if self.progress is not None:
                    self.progress(sum(all(c is not None for c in samples) for samples in out), len(out))
        return out  # type: ignore[return-value]  # every slot is filled above

    def _rng(self, seed: int) -> torch.Generator:
        rng = torch.Generator(device=self.device)
        rng.manual_seed(seed)
        return rng

    # --- the decode loop -------------------------------------------------------------------------

    def _decode(self, prompts: list[list[int]], rows: list[_Row], params: SamplingParams) -> list[_Row]:
        """Decode `rows` to the end; finished rows leave the batch (and go to the prefix store)."""
        used = sorted({r.prompt for r in rows})
        ids = {i: torch.tensor(prompts[i], dtype=torch.long) for i in used}
        kv, logits = self._prefill([ids[i] for i in used])  # per prompt: (layers, 2, heads, tokens, dim), (vocab,)
        slot = {i: k for k, i in enumerate(used)}
        cache, mask = self._batch_cache([kv[slot[r.prompt]] for r in rows], room=min(params.max_new_tokens, 128))
        positions = mask.sum(1)  # (rows,) position of the next token
        next_logits = torch.stack([logits[slot[r.prompt]] for r in rows])  # (rows, vocab)
        live = list(rows)
        stop_window = max((len(s) for s in params.stop), default=0) + 8  # tokens decoded to look for a stop string
        while True:
            tokens = sample_rows(next_logits, params, [r.rng for r in live])  # (live,)
            for row, token in zip(live, tokens.tolist()):
                row.tokens.append(token)
                row.finish = self._finish_reason(row, params, stop_window)
            keep = [k for k, r in enumerate(live) if r.finish is None]
            if len(keep) < len(live):
                self._store_finished(ids, live, cache, mask, keep)
                if not keep:
                    return rows
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                live, mask, positions, tokens = [live[k] for k in keep], mask[index], positions[index], tokens[index]
                mask = _drop_leading_padding(cache, mask)
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            output = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            next_logits, positions = output.logits[:, -1].float(), positions + 1

    def _finish_reason(self, row: _Row, params: SamplingParams, stop_window: int) -> str | None:
        if row.tokens[-1] in self.stop_ids:
            return "stop"
        if params.stop and self._has_stop(row.tokens[-stop_window:], params.stop):
            return "stop"
        return "length" if len(row.tokens) >= params.max_new_tokens else None

    def _prefill(self, prompts: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """K/V (layers, 2, kv_heads, tokens, head_dim) and next-token logits (vocab,) of each prompt.
        Each prompt reuses its longest stored prefix and encodes only the rest; prompts are encoded
        in chunks of similar remaining length, at most `prefill_tokens` (rows x width) per chunk."""
        found = [self.prefix_store.lookup(p) for p in prompts]
        # the last token is always encoded: it gives the logits
        reused = [min(n, len(p) - 1) for p, (_, n) in zip(prompts, found)]
        order = sorted(range(len(prompts)), key=lambda k: reused[k] - len(prompts[k]))  # longest remainder first
        kv: list[torch.Tensor | None] = [None] * len(prompts)
        logits: list[torch.Tensor | None] = [None] * len(prompts)
        while order:
            width = len(prompts[order[0]]) - reused[order[0]]
            chunk, order = order[: max(1, self.prefill_tokens // width)], order[max(1, self.prefill_tokens // width) :]
            chunk_kv, chunk_logits = self._prefill_chunk(
                [prompts[k] for k in chunk], [found[k][0] for k in chunk], width
            )
            for k, states, row_logits in zip(chunk, chunk_kv, chunk_logits):
                kv[k], logits[k] = states, row_logits
        return kv, logits  # type: ignore[return-value]  # every slot is filled above

    def _prefill_chunk(
        self, prompts: list[torch.Tensor], stored: list[torch.Tensor | None], width: int
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encode the last `width` tokens of each prompt over its stored K/V for the tokens before them.

        Layout, left-aligned: row r is [padding | prompt r], `total` columns; the cache holds the
        first `total - width` columns (stored K/V, right-aligned, zeros for padding) and the input
        the last `width`. A row whose stored prefix is longer than `len(prompt) - width` encodes
        those extra tokens again: the chunk costs rows x width whatever the row."""
        total = max(len(p) for p in prompts)
        cached = total - width
        cache = self._empty_cache(len(prompts), cached, room=width)
        layers = cache.layers
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), total), dtype=torch.long)
        for r, (p, kv) in enumerate(zip(prompts, stored)):
            before = len(p) - width  # tokens of this row that come from the store
            if before > 0:
                for layer, states in zip(layers, kv):
                    layer._k[r, :, cached - before : cached] = states[0, :, :before]
                    layer._v[r, :, cached - before : cached] = states[1, :, :before]
            input_ids[r, max(0, -before) :] = p[max(0, before) :]
            mask[r, total - len(p) :] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)[:, cached:]  # RoPE positions = real token positions
        output = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        states = [
            torch.stack([torch.stack((layer.keys[r], layer.values[r])) for layer in layers])
            for r in range(len(prompts))
        ]
        return [s[..., total - len(p) :, :] for s, p in zip(states, prompts)], output.logits[:, -1].float()

    def _empty_cache(self, rows: int, columns: int, room: int) -> DynamicCache:
        """A cache of zeros, `columns` long, with space for `room` more columns before it grows."""
        config = self.model.config.get_text_config(decoder=True)
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (rows, heads, columns + room, dim)
        cache = DynamicCache()
        cache.layers = [
            _BufferLayer(
                torch.zeros(shape, dtype=self.model.dtype, device=self.device),
                torch.zeros(shape, dtype=self.model.dtype, device=self.device),
                columns,
            )
            for _ in range(config.num_hidden_layers)
        ]
        return cache

    def _batch_cache(self, kv: list[torch.Tensor], room: int) -> tuple[DynamicCache, torch.Tensor]:
        """A decode batch from per-row K/V, right-aligned (left padding), and its attention mask (rows, columns)."""
        width = max(s.shape[-2] for s in kv)
        cache = self._empty_cache(len(kv), width, room)
        mask = torch.zeros((len(kv), width), dtype=torch.long, device=self.device)
        for r, states in enumerate(kv):
            length = states.shape[-2]
            for layer, (keys, values) in zip(cache.layers, states):
                layer._k[r, :, width - length : width] = keys
                layer._v[r, :, width - length : width] = values
            mask[r, width - length :] = 1
        return cache, mask

    def _store_finished(
        self, ids: dict[int, torch.Tensor], live: list[_Row], cache: DynamicCache, mask: torch.Tensor, keep: list[int]
    ) -> None:
        """Copy each finished row's K/V (prompt + reply but its last token, which was never encoded) into the store."""
        if self.prefix_store.budget_bytes == 0:
            return
        kept = set(keep)
        for k, row in enumerate(live):
            if k in kept:
                continue
            length = int(mask[k].sum())
            kv = torch.stack(
                [torch.stack((layer.keys[k, :, -length:], layer.values[k, :, -length:])) for layer in cache.layers]
            )
            tokens = torch.cat([ids[row.prompt], torch.tensor(row.tokens[:-1], dtype=torch.long)])
            self.prefix_store.add(tokens, kv)

    def _finish(self, row: _Row, prompt_tokens: int, params: SamplingParams) -> Completion:
        """A finished row as a Completion: the end-of-turn token is counted but not decoded."""
        body = row.tokens[:-1] if row.tokens[-1] in self.stop_ids else row.tokens
        text, _ = trim_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), params.stop)
        return Completion(text, prompt_tokens, len(row.tokens), row.finish or "length")

    def _has_stop(self, ids: list[int], stop: Sequence[str]) -> bool:
        return trim_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop)[1]

    def close(self) -> None:
        """Drop the model and the prefix store and free their memory (CUDA cache included)."""
        on_cuda = getattr(self, "model", None) is not None and self.device.type == "cuda"
        self.model = None
        self.prefix_store.clear()
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()


def _drop_leading_padding(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every remaining row (after the longest rows left)."""
    lead = int(mask.any(0).int().argmax())  # first column some row uses
    if lead == 0:
        return mask
    for layer in cache.layers:
        layer.drop_columns(lead)
    return mask[:, lead:]


def _all_full_attention(config: Any) -> bool:
    """Whether every layer attends to the whole sequence (no sliding window, no recurrent state)."""
    text = config.get_text_config(decoder=True)
    types = getattr(text, "layer_types", None) or ["full_attention"]
    return all(t == "full_attention" for t in types) and not getattr(text, "use_sliding_window", False)
