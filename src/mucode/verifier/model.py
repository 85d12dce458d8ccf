"""The verifier model: a scalar head on any Hugging Face causal LM
(`AutoModelForSequenceClassification` with one label), its pad token, its input encoding, and
`verifier.json`, which says how a saved verifier reads its input.

    model, tokenizer = load_backbone("smollm2-135m", seed=0)          # random head, explicit pad
    ids = encode(tokenizer, [*prompt, {"role": "assistant", "content": reply}], max_length=1024)
    model, tokenizer, spec = load_verifier("runs/verifier")          # a trained one, for scoring

The reward is the head's logit at the last token that is not the pad token (transformers'
sequence-classification pooling). So the pad token must never be the last real token: it is
chosen apart from every end-of-turn token (`set_pad_token`, the one pad policy of
`mucode.generation.padding`), and sequences are padded on the right in training and scoring.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from mucode.generation.padding import set_pad_token


__all__ = [
    "VerifierSpec", "encode", "pad_right", "set_pad_token", "load_backbone", "load_verifier", "save_head", "verifier_dir"
]  # fmt: skip
logger = logging.getLogger("mucode.verifier")

SPEC_FILE = "verifier.json"
HEAD_FILE = "head.safetensors"  # finetune="head": the trained head alone; the backbone is spec.base_model


@dataclass
class VerifierSpec:
    """How a saved verifier reads its input and how it was made (OUT/model/verifier.json).

    reply_view: "reply" or "program"; context: "problem" or "history" (see data.py).
    max_length: tokens kept per sequence. loss: "bt" or "bce" (only a BCE head's sigmoid is a
    calibrated probability). dtype: the dtype it was trained in, which scoring loads it in (a head
    reads the backbone's features in that dtype).
    """

    loss: str = "bt"
    reply_view: str = "reply"
    context: str = "problem"
    max_length: int = 1024
    base_model: str = ""
    finetune: str = "full"
    features: str = ""  # finetune="head": the backbone feature file the scorer may reuse
    dtype: str = "float32"
    mucode_version: str = ""

    def save(self, folder: str | Path) -> None:
        Path(folder, SPEC_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> VerifierSpec:
        """The spec saved in `folder`; the defaults (raw reply, original problem) when there is
        none, e.g. for a reward model not trained by mucode."""
        path = Path(folder, SPEC_FILE)
        if not path.is_file():
            logger.warning(
                "%s has no %s; reading raw replies with the original problem, at most 1024 tokens", folder, SPEC_FILE
            )
            return cls()
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ------------------------------------------------------------------------------------ encoding


@dataclass(frozen=True)
class FittedIds:
    """A conversation's token ids fitted to max_length, and what fitting removed."""

    ids: list[int]
    attempts_removed: int  # earlier (reply, feedback) pairs dropped from the context, oldest first
    tokens_clipped: int  # tokens cut from the start when even problem + reply did not fit


def encode(tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int) -> list[int]:
    """Token ids of a conversation ending with the assistant message to score, fitted to
    `max_length` (`fit_ids`)."""
    return fit_ids(tokenizer, messages, max_length).ids


def fit_ids(tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int) -> FittedIds:
    """The chat template as TRL's RewardTrainer applies it (`apply_chat_template(messages,
    tokenize=True)`), or, for a tokenizer without a template, the contents joined by blank lines
    plus eos. Longer than `max_length`, the context loses its oldest attempts first (an earlier
    reply and the feedback after it), keeping the problem (system and first user message) and the
    scored reply whole, as SFT does (`training.sft.fit_to_length`); only when problem and reply
    alone are too long are the first tokens cut (the reward is read at the end)."""
    messages = list(messages)
    ids = _conversation_ids(tokenizer, messages)
    head = next((i for i, m in enumerate(messages) if m["role"] == "user"), 0) + 1
    removed = 0
    while len(ids) > max_length and head + 2 < len(messages):
        messages = messages[:head] + messages[head + 2 :]
        removed += 1
        ids = _conversation_ids(tokenizer, messages)
    clipped = max(len(ids) - max_length, 0)
    return FittedIds(list(ids[clipped:]), removed, clipped)


def _conversation_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True)["input_ids"])
    text = "\n\n".join(m["content"] for m in messages) + (tokenizer.eos_token or "")
    return list(tokenizer(text)["input_ids"])


def length_fit_counts(fits: Sequence[FittedIds]) -> dict[str, int]:
    """How many sequences fitting changed: context attempts removed, or start tokens clipped."""
    return {
        "sequences": len(fits),
        "context_truncated": sum(f.attempts_removed > 0 for f in fits),
        "attempts_removed": sum(f.attempts_removed for f in fits),
        "clipped": sum(f.tokens_clipped > 0 for f in fits),
    }


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """(input_ids, attention_mask) long tensors of shape (n, longest), padded on the right."""
    import torch

    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


# ------------------------------------------------------------------------------------- loading


def load_backbone(ref: str, *, dtype: str = "float32", seed: int = 0) -> tuple[Any, Any]:
    """A causal LM (preset, hub id or folder) as a sequence classifier with one label and a
    freshly initialised head, plus its tokenizer with an explicit pad token (right padding)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mucode.generation.models import resolve_model

    resolved = resolve_model(ref)
    if resolved.kind == "gguf":
        raise ValueError(
            f"{ref!r} is a GGUF file; a verifier needs a Hugging Face folder: convert it once "
            "(load it with transformers and save_pretrained, as `mucode models pull` does for presets)"
        )
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    torch.manual_seed(seed)  # seed before from_pretrained: the score head is randomly initialised
    with _quiet_head_warnings():
        model = AutoModelForSequenceClassification.from_pretrained(
            resolved.path, num_labels=1, dtype=getattr(torch, dtype)
        )
    set_pad_token(tokenizer, model)
    return model, tokenizer


def _quiet_head_warnings() -> Any:
    """Loading a causal LM as a classifier reports a missing score head and an unused lm_head;
    both are expected (TRL silences them the same way)."""
    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return suppress_seqcls_warning()


def head(model: Any) -> Any:
    """The scalar head module (`score` for decoder LMs, `classifier` for some encoders)."""
    for name in ("score", "classifier"):
        module = getattr(model, name, None)
        if module is not None:
            return module
    raise ValueError(
        f"{type(model).__name__} has no `score` or `classifier` head; load it with AutoModelForSequenceClassification"
    )


def freeze_backbone(model: Any) -> None:
    """Train the head only: every other weight is frozen (no activations are kept for them)."""
    model.requires_grad_(False)
    head(model).requires_grad_(True)


def verifier_dir(path: str | Path) -> Path:
    """The folder holding the weights: PATH/model for a `mucode verifier train` output, else PATH."""
    path = Path(path)
    for folder in (path / "model", path):
        if any((folder / name).is_file() for name in ("config.json", "adapter_config.json", HEAD_FILE)):
            return folder
    raise FileNotFoundError(
        f"{path} holds no verifier: expected a `mucode verifier train` output folder, its model/ folder, or a checkpoint"
    )


def load_verifier(
    path: str | Path, *, dtype: str | None = None, device: str | None = None
) -> tuple[Any, Any, VerifierSpec]:
    """(model in eval mode, tokenizer, spec) of a trained verifier, in `dtype` (default: the dtype
    it was trained in). LoRA adapters are merged."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = verifier_dir(path)
    spec = VerifierSpec.load(folder)
    dtype = dtype or spec.dtype
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (folder / HEAD_FILE).is_file():
        model, tokenizer = _load_head(folder, spec, dtype)
        return model.to(device).eval(), tokenizer, spec
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        with _quiet_head_warnings():
            model = AutoPeftModelForSequenceClassification.from_pretrained(
                str(folder), num_labels=1, dtype=getattr(torch, dtype)
            ).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=1, dtype=getattr(torch, dtype)
        )
    set_pad_token(tokenizer, model)
    return model.to(device).eval(), tokenizer, spec


def save_head(model: Any, tokenizer: Any, spec: VerifierSpec, folder: str | Path) -> Path:
    """A head-only verifier: the head's weights, the tokenizer and verifier.json, whose base_model
    names the frozen backbone (made absolute when it is a local folder). A copy of the backbone
    would be the base model's size again (~1 GB for a 0.5B model in bf16) for one row of weights."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in head(model).state_dict().items()}, folder / HEAD_FILE)
    tokenizer.save_pretrained(folder)
    if Path(spec.base_model).exists():
        spec.base_model = str(Path(spec.base_model).resolve())
    spec.save(folder)
    return folder


def _load_head(folder: Path, spec: VerifierSpec, dtype: str) -> tuple[Any, Any]:
    from safetensors.torch import load_file

    try:
        model, tokenizer = load_backbone(spec.base_model, dtype=dtype)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{folder}: the head-only verifier's backbone {spec.base_model!r} (verifier.json base_model) "
            f"cannot be loaded: {err}"
        ) from err
    head(model).load_state_dict(load_file(str(folder / HEAD_FILE)))
    return model, tokenizer
