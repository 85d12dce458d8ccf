"""Chat-template helpers shared by the in-process backends (transformers, OpenVINO): prompt token
ids of a conversation and the token ids that end an assistant turn. Needs a tokenizer, not torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mucode.generation.base import Message


def encode_prompt(tokenizer: Any, conversation: Sequence[Message]) -> list[int]:
    """Prompt token ids: the chat template with the assistant header appended."""
    text = tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template already holds bos, if any


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
