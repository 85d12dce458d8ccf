"""In-process generation with `transformers`: batched, left-padded, seeded `model.generate`.

    gen = TransformersGenerator.from_pretrained("Qwen/Qwen2.5-Coder-0.5B-Instruct", batch_size=8)
    out = gen.generate([[{"role": "user", "content": "Write fib(n)."}]], SamplingParams(n=4, temperature=0.7))
    out[0][3].text, out[0][3].completion_tokens, out[0][3].finish_reason
    gen.close()

How a call runs: every (conversation, sample) pair is one row; rows are sorted by prompt length
(longest first) and cut into batches of `batch_size` rows, so a batch wastes little padding; each
batch is one `model.generate` call, seeded from `params.seed` and the batch index; results go back
to input order. Sampling is exactly `temperature` + `top_p` (the model's own `generation_config`
defaults for top-k and repetition penalty are switched off so that all backends sample alike).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from typing import Any

import torch

from mucode.generation.base import Completion, Message, SamplingParams, derive_seed, trim_at_stop

logger = logging.getLogger("mucode.generation")



def end_of_turn_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's eos, the model's `generation_config`
    eos (an int or a list), and the special token the chat template writes right after an
    assistant message (e.g. `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.extend([config_eos] if isinstance(config_eos, int) else list(config_eos or []))
    template_eot = _template_end_of_turn(tokenizer)
    if template_eot is not None:
        ids.append(template_eot)
    return list(dict.fromkeys(ids))


def _template_end_of_turn(tokenizer: Any) -> int | None:
    """The first token after an assistant message in the chat template, if it is a special token."""
    marker = "MUCODE_END_MARKER"
    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # templates that reject this conversation shape: rely on eos only
        return None
    tail = rendered.split(marker, 1)[-1] if marker in rendered else ""
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    if tail_ids and tail_ids[0] in set(tokenizer.all_special_ids) | _added_special_ids(tokenizer):
        return tail_ids[0]
    return None


def _added_special_ids(tokenizer: Any) -> set[int]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {i for i, tok in decoder.items() if getattr(tok, "special", False)}


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
    logger.warning(
        "tokenizer pad token is %r (end-of-turn ids %s); padding with id %d (%r) instead",
        tokenizer.pad_token, sorted(stop), pad_id, tokenizer.convert_ids_to_tokens(pad_id),
    )
    return pad_id



class TransformersGenerator:
    """A `Generator` over a loaded `transformers` causal LM and its tokenizer.

    batch_size: rows (one row = one sample of one conversation) per `model.generate` call.
    device: where the model runs; None keeps the model where it is.
    Holds `model`, `tokenizer`, `stop_ids` (end-of-turn token ids) and `pad_id` (see `choose_pad_id`).
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, device: str | torch.device | None = None):
        if batch_size < 1:
            raise ValueError(f"got batch_size={batch_size}; it must be >= 1")
        self.model = model.to(device) if device is not None else model
        self.model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_ids = end_of_turn_ids(tokenizer, model)
        if not self.stop_ids:
            raise ValueError("the tokenizer has no eos token and the chat template no end-of-turn token; set tokenizer.eos_token")
        self.pad_id = choose_pad_id(tokenizer, self.stop_ids)

    @classmethod
    def from_pretrained(
        cls,
        ref: str,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | None = None,
        batch_size: int = 8,
    ) -> TransformersGenerator:
        """Load any model reference: a preset name (`smollm2-135m`, ...), a hub id, a local folder or
        a .gguf file (see `mucode.generation.models.resolve_model`). dtype: "auto" (as stored),
        "float32", "bfloat16", ... or a torch.dtype. device: None = "cuda" when available, else "cpu"."""
        from mucode.generation.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(ref, dtype=dtype, device=device)
        return cls(model, tokenizer, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, conversation: Sequence[Message]) -> list[int]:
        """Prompt token ids: the chat template with the assistant header appended."""
        text = self.tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template already holds bos, if any

    def generate(self, conversations: Sequence[Sequence[Message]], params: SamplingParams) -> list[list[Completion]]:
        """`params.n` completions for each conversation, in input order."""
        prompts = [self.encode(c) for c in conversations]
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]  # (conversation, sample)
        rows.sort(key=lambda r: -len(prompts[r[0]]))  # stable: samples of one conversation stay together
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        for b, start in enumerate(range(0, len(rows), self.batch_size)):
            batch = rows[start : start + self.batch_size]
            completions = self._generate_batch([prompts[i] for i, _ in batch], params, seed=derive_seed(params.seed, b))
            for (i, j), completion in zip(batch, completions):
                out[i][j] = completion
        return out  # type: ignore[return-value]  # every slot is filled above

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[Completion]:
        """One `model.generate` call over left-padded prompts."""
        input_ids, attention_mask = self._left_pad(prompts)  # (batch, longest prompt) each
        sampling: dict[str, Any] = (
            {"do_sample": False}
            if params.greedy
            else {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        )  # top_k=0 switches off a top-k default from the model's generation_config: temperature + top_p only
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():  # seed without touching global RNG state
            torch.manual_seed(seed)
            sequences = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=params.max_new_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                stop_strings=list(params.stop) or None,
                tokenizer=self.tokenizer if params.stop else None,
                repetition_penalty=1.0,  # likewise ignore a penalty from the model's generation_config
                **sampling,
            )  # (batch, longest prompt + generated)
        generated = sequences[:, input_ids.shape[1] :].tolist()
        return [self._completion(len(p), ids, params) for p, ids in zip(prompts, generated)]

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            input_ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[row, width - len(p) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _completion(self, prompt_tokens: int, ids: list[int], params: SamplingParams) -> Completion:
        """Decode one generated row. Counts include the end-of-turn token and exclude padding.

        `ids` is as wide as the longest reply of the batch; a row that ended early is filled with
        `pad_id` after its last token. A row without an end-of-turn id ended early only on a stop
        string: then, and only then, trailing `pad_id`s are padding.
        """
        stop_at = next((k for k, t in enumerate(ids) if t in self.stop_ids), None)
        if stop_at is not None:
            body, used = ids[:stop_at], stop_at + 1
        else:
            body = ids
            unpadded = list(ids)
            while unpadded and unpadded[-1] == self.pad_id:
                unpadded.pop()
            if len(ids) < params.max_new_tokens or (params.stop and self._has_stop(unpadded, params.stop)):
                body = unpadded
            used = len(body)
        text, hit_stop_string = trim_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), params.stop)
        stopped = stop_at is not None or hit_stop_string or used < params.max_new_tokens
        return Completion(text, prompt_tokens, used, "stop" if stopped else "length")

    def _has_stop(self, ids: list[int], stop: Sequence[str]) -> bool:
        return trim_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop)[1]

    def close(self) -> None:
        """Drop the model and free its memory (CUDA cache included)."""
        on_cuda = getattr(self, "model", None) is not None and self.device.type == "cuda"
        self.model = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
