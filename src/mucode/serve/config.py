"""`ServeConfig`: the settings of `mucode serve` (imports nothing heavy, so the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

from mucode.config import option


SELECTOR_CHOICES = ["random", "lv", "pt", "pt+lv", "oracle"]


@dataclass
class ServeConfig:
    """Parameters of `mucode serve` (server defaults; a request may override the search ones)."""

    model: str = option("smollm2-135m", "Generator: preset, hub id, local folder or GGUF.")
    verifier: str | None = option(None, "Trained verifier folder (selectors lv, pt+lv and /v1/score).")
    backend: str = option("hf", "Generation backend.", choices=["hf", "openai", "vllm"])
    base_url: str | None = option(None, "OpenAI-compatible server URL (openai backend).")
    dtype: str | None = option(
        None,
        "Model dtype (hf / vllm backends); default: bfloat16 where the device computes it natively, else float32.",
    )
    host: str = option("127.0.0.1", "Address to listen on (loopback by default).")
    port: int = option(8000, "Port to listen on.")
    api_key: str | None = option(None, "Require `Authorization: Bearer KEY` (all endpoints but /health).")
    n: int = option(1, "Default programs per turn (request option `n`).")
    turns: int = option(3, "Default most turns (request option `mucode.turns`).")
    selector: str | None = option(None, "Default selector (pt+lv with a verifier, else pt).", choices=SELECTOR_CHOICES)
    temperature: float = option(0.7, "Default sampling temperature when n > 1 (n = 1 decodes greedily).")
    max_new_tokens: int = option(512, "Default most tokens per reply (request option max_tokens).")
    timeout_s: float = option(3.0, "Sandbox wall-clock limit per test, in seconds (server-wide).")
    workers: int | None = option(None, "Sandbox workers (default: one per core).")
    max_body_bytes: int = option(1_000_000, "Largest request body, in bytes.")
    max_tests: int = option(64, "Most tests per program.")
    max_programs: int = option(64, "Most programs per /v1/execute or pairs per /v1/score request.")
    max_n_turns: int = option(32, "Largest n x turns of one solve request.")
    max_batch: int = option(16, "Most solve requests batched onto one generator call.")
    batch_window_s: float = option(0.05, "How long the solver waits for more requests to batch.")
