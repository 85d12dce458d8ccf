"""The one pad-token policy for every model mucode loads: for generation, for the verifier, for SFT.

The pad token is never an end-of-turn token (the tokenizer's eos, the model's generation_config
eos, or the special token the chat template writes after an assistant message). Padding equal to
eos would hide the end-of-turn token from the SFT loss (the model never learns to stop), would be
skipped by the verifier's pooling (the reward is read at the last token that is not the pad), and
would make "finished" and "padding" indistinguishable in a decoding batch. Many checkpoints ship
pad = eos (SmolLM2: `<|im_end|>`), so the pad is chosen, in this order:

    the tokenizer's own pad token, its unk token, an added special token whose name holds "pad"
    (Llama 3's <|finetune_right_pad_id|>, Qwen's <|vision_pad|>), a marker-shaped vocabulary entry
    whose name holds "pad" (a tokenizer converted from GGUF keeps Qwen's <|vision_pad|> and
    <|fim_pad|> as plain entries), its bos token; else a new <|pad|> token (the embeddings grow by
    one row, and a LoRA checkpoint must then carry the whole embedding and output matrices).

    set_pad_token(tokenizer, model, padding_side="left")   # generation; "right" for training
    pad_id = choose_pad_id(tokenizer, stop_ids)             # the same choice, changing nothing
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable

from mucode.generation.chat import end_of_turn_ids


logger = logging.getLogger("mucode.generation")

PAD_TOKEN = "<|pad|>"  # added only when the vocabulary has no usable pad candidate
# <|vision_pad|>, <|fim_pad|>, <|finetune_right_pad_id|>, <pad>, [PAD]: a marker, never a word piece
PAD_MARKER = re.compile(r"^(<\|?[A-Za-z_]*pad[A-Za-z_]*\|?>|\[PAD\])$", re.IGNORECASE)


def pad_candidate(tokenizer: Any, stop_ids: Iterable[int]) -> int | None:
    """The first id of the policy's order that ends no turn, or None (then a pad must be added)."""
    stop = set(stop_ids)
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    named_pad = [
        i for i, tok in sorted(decoder.items()) if getattr(tok, "special", False) and "pad" in str(tok).lower()
    ]
    for candidate in [tokenizer.pad_token_id, tokenizer.unk_token_id, *named_pad]:
        if candidate is not None and candidate not in stop:
            return candidate
    vocab_pad = sorted(i for token, i in tokenizer.get_vocab().items() if PAD_MARKER.match(token))
    for candidate in [*vocab_pad, tokenizer.bos_token_id]:
        if candidate is not None and candidate not in stop:
            return candidate
    return None


def choose_pad_id(tokenizer: Any, stop_ids: Iterable[int]) -> int:
    """The policy's pad id for a caller that must leave tokenizer and model as they are: with no
    candidate (a token would have to be added), the first vocabulary id that ends no turn."""
    stop = set(stop_ids)
    chosen = pad_candidate(tokenizer, stop)
    return chosen if chosen is not None else next(i for i in range(len(tokenizer)) if i not in stop)


def set_pad_token(tokenizer: Any, model: Any = None, padding_side: str = "right") -> str:
    """Give `tokenizer` and `model` one explicit pad token chosen by the policy; set the padding
    side, the model config's pad id (the verifier's pooling reads it) and its generation_config
    pad id. Without a model no token can be added: `choose_pad_id` decides. Returns the pad token."""
    stop = end_of_turn_ids(tokenizer, model)
    pad_id = pad_candidate(tokenizer, stop)
    if pad_id is None and model is not None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        model.resize_token_embeddings(len(tokenizer))
        logger.warning(
            "the tokenizer has no usable pad token; added %s (embeddings resized to %d)", PAD_TOKEN, len(tokenizer)
        )
    else:
        pad_id = choose_pad_id(tokenizer, stop) if pad_id is None else pad_id
        if pad_id != tokenizer.pad_token_id:
            logger.info(
                "pad token %r is missing or ends a turn (end-of-turn ids %s); padding with %r",
                tokenizer.pad_token,
                sorted(stop),
                tokenizer.convert_ids_to_tokens(pad_id),
            )
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    tokenizer.padding_side = padding_side
    if model is not None:
        model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer.pad_token
