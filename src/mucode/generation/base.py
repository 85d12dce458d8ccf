"""The one protocol every generation backend implements: sample n replies for each of many
conversations.

    completions = generator.generate(conversations, SamplingParams(n=4, temperature=0.7))
    completions[i][j].text      # j-th sample for the i-th conversation
    generator.generate(conversations, params, seeds=[s0, s1, ...])   # one seed per conversation
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from mucode.config import option


Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class SamplingParams:
    """How replies are sampled. `temperature == 0` means greedy decoding (then n must be 1)."""

    n: int = option(1, "Samples per conversation.")
    temperature: float = option(0.7, "Sampling temperature; 0.0 = greedy.")
    top_p: float = option(1.0, "Nucleus sampling mass, in (0, 1].")
    max_new_tokens: int = option(1000, "Most tokens generated per reply.")
    seed: int = option(0, "Base seed; backends derive per-request seeds from it.")
    stop: tuple[str, ...] = option((), "Extra stop strings (the end-of-turn token always stops).")

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"got n={self.n}; it must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"got temperature={self.temperature}; it must be >= 0 (0 = greedy)")
        if self.temperature == 0 and self.n > 1:
            raise ValueError(
                f"got n={self.n} with temperature=0: greedy decoding gives one reply; use n=1 or temperature > 0"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"got top_p={self.top_p}; it must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError(f"got max_new_tokens={self.max_new_tokens}; it must be >= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingParams:
        data = dict(data)
        data["stop"] = tuple(data.get("stop", ()))
        return cls(**data)


@dataclass(frozen=True)
class Completion:
    """One sampled reply and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" (end of turn or a stop string) | "length"


@runtime_checkable
class Generator(Protocol):
    """A chat model that samples replies. Implementations: `mucode.generation.hf` (batched
    `model.generate`), `mucode.generation.openvino`, `mucode.generation.vllm`,
    `mucode.generation.openai_api`."""

    def generate(
        self, conversations: Sequence[Sequence[Message]], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions for each conversation, in input order. seeds: one per conversation
        (e.g. from the trajectory it belongs to), so that a conversation's samples do not depend on
        the other conversations of the call; None = `derive_seed(params.seed, i)` for conversation i.
        Sample j of conversation i then uses `derive_seed(seeds[i], j)` where a backend seeds samples
        one by one."""
        ...

    def close(self) -> None:
        """Release the model (memory, connections, server processes)."""
        ...


def attach_progress(generator: Generator, callback: Callable[[int, int], None] | None) -> bool:
    """Have `generator` call `callback(finished conversations, conversations of the call)` while a
    call runs, where its backend reports progress (a `progress` attribute: openvino, hf);
    False when it does not."""
    if not hasattr(generator, "progress"):
        return False
    generator.progress = callback  # type: ignore[attr-defined]  # an optional attribute, not in the protocol
    return True


def conversation_seeds(n: int, params: SamplingParams, seeds: Sequence[int] | None) -> list[int]:
    """The seed of each of `n` conversations: `seeds` (checked to be one per conversation), else
    `derive_seed(params.seed, i)`."""
    if seeds is None:
        return [derive_seed(params.seed, i) for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} conversations; pass one seed per conversation")
    return list(seeds)


def derive_seed(*parts: int) -> int:
    """A 31-bit seed that depends on every part (a base seed, then indices); stable across runs.
    31 bits: some servers parse `seed` as a signed 32-bit int."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def trim_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` cut before the earliest stop string, and whether one was found. Backends that keep the
    stop string in the reply (`transformers serve`) and those that drop it (vLLM) then agree."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
