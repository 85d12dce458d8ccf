"""`ServeConfig`: the settings of `mucode serve` (imports nothing heavy, so the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field


SELECTOR_CHOICES = ["random", "lv", "pt", "pt+lv", "oracle"]


@dataclass
class ServeConfig:
    """Parameters of `mucode serve` (server defaults; a request may override the search ones)."""

    model: str = field(default="smollm2-135m", metadata={"help": "Generator: preset, hub id, local folder or GGUF."})
    verifier: str | None = field(
        default=None, metadata={"help": "Trained verifier folder (selectors lv, pt+lv and /v1/score)."}
    )
    backend: str = field(default="hf", metadata={"help": "Generation backend.", "choices": ["hf", "openai", "vllm"]})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server URL (openai backend)."})
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Model dtype (hf / vllm backends); default: bfloat16 where the device computes it natively, else float32."
        },
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (loopback by default)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    api_key: str | None = field(
        default=None, metadata={"help": "Require `Authorization: Bearer KEY` (all endpoints but /health)."}
    )
    n: int = field(default=1, metadata={"help": "Default programs per turn (request option `n`)."})
    turns: int = field(default=3, metadata={"help": "Default most turns (request option `mucode.turns`)."})
    selector: str | None = field(
        default=None,
        metadata={"help": "Default selector (pt+lv with a verifier, else pt).", "choices": SELECTOR_CHOICES},
    )
    temperature: float = field(
        default=0.7, metadata={"help": "Default sampling temperature when n > 1 (n = 1 decodes greedily)."}
    )
    max_new_tokens: int = field(
        default=512, metadata={"help": "Default most tokens per reply (request option max_tokens)."}
    )
    timeout_s: float = field(
        default=3.0, metadata={"help": "Sandbox wall-clock limit per test, in seconds (server-wide)."}
    )
    workers: int | None = field(default=None, metadata={"help": "Sandbox workers (default: one per core)."})
    max_body_bytes: int = field(default=1_000_000, metadata={"help": "Largest request body, in bytes."})
    max_tests: int = field(default=64, metadata={"help": "Most tests per program."})
    max_programs: int = field(
        default=64, metadata={"help": "Most programs per /v1/execute or pairs per /v1/score request."}
    )
    max_n_turns: int = field(default=32, metadata={"help": "Largest n x turns of one solve request."})
    max_batch: int = field(default=16, metadata={"help": "Most solve requests batched onto one generator call."})
    batch_window_s: float = field(
        default=0.05, metadata={"help": "How long the solver waits for more requests to batch."}
    )
