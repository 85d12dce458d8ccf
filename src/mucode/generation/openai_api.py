"""Generation against any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang,
llama.cpp server, `transformers serve`, the OpenAI API itself).

    vllm serve Qwen/Qwen2.5-Coder-0.5B-Instruct --port 8000          # or: transformers serve <folder> --port 8000
    gen = OpenAIGenerator("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-Coder-0.5B-Instruct", max_concurrency=16)
    out = gen.generate(conversations, SamplingParams(n=4, temperature=0.7, stop=("```\\n",)))

Requests run on a thread pool of `max_concurrency` threads sharing one `httpx.Client`. Several
base URLs (replicas of one model) share the requests `routing="round-robin"` or `"least-loaded"`
(fewest in flight), one replica per attempt: a retry goes to another replica, and one that failed is
skipped for `replica_cooldown_s` (see `mucode.generation.replicas`; `gen.replicas.counts()` gives
requests and failures per replica). Connection errors, timeouts, 429 and 5xx are retried with exponential backoff; other
4xx are raised at once (a bad request does not get better by waiting).

Samples: with `n_mode="auto"` a request asks for `n` choices; a server that returns fewer (e.g.
`transformers serve` ignores `n`) gets the missing ones as separate n=1 requests, and from then on
this generator sends n separate requests directly. Seeds: conversation i is sent its seed
`s_i = seeds[i]` (default `derive_seed(params.seed, i)`) (one request with n choices) or
`derive_seed(s_i, j)` (its j-th separate sample), so the same call gives the same output on a server that honours `seed`
deterministically (vLLM does; `transformers serve` sets a global torch seed per request, which is
reproducible only with `max_concurrency=1`).

`transformers serve` caveats (5.x): it samples only when the model's generation_config.json has
`"do_sample": true` and otherwise decodes greedily at any temperature (a GGUF-converted folder
usually lacks it); it ignores `n`; a local `<folder>:<file>.gguf` as FORCE_MODEL failed to load
here (its config has no `architectures`): convert to a Hugging Face folder first.

Token counts come from the response's `usage`; a server that omits `usage` gives 0 for both. With
several choices in one response, `usage.completion_tokens` is their sum: a choice that ended with
"length" is given `max_tokens`, the others share the rest evenly (exact when n == 1 per request;
use `n_mode="repeat"` for exact per-sample counts).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx

from mucode.generation.base import Completion, Message, SamplingParams, conversation_seeds, derive_seed, trim_at_stop
from mucode.generation.replicas import ReplicaSet, Routing


logger = logging.getLogger("mucode.generation")

RETRY_STATUS = frozenset({408, 429})  # request timeout, rate limited; plus every 5xx
NMode = Literal["auto", "native", "repeat"]


class OpenAIServerError(RuntimeError):
    """A request failed for good: a 4xx, or retries exhausted. Holds `status` (None = no response)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def chat_url(base_url: str) -> str:
    """`http://host:8000`, `http://host:8000/` or `http://host:8000/v1` -> `.../v1/chat/completions`."""
    base = base_url.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class OpenAIGenerator:
    """A `Generator` that posts chat requests to OpenAI-compatible servers.

    base_url: one URL, a list (replicas) or a comma-separated string of URLs, e.g. "http://127.0.0.1:8000/v1".
    routing: how requests are spread over replicas: "round-robin" or "least-loaded" (fewest in flight).
    replica_cooldown_s: how long a replica that failed (no connection, timeout, 408/429/5xx) is skipped.
    model: the `model` field of each request (the served model's name).
    api_key: sent as `Authorization: Bearer ...` when given.
    max_concurrency: requests in flight at once (threads).
    timeout_s: per-request limit, in seconds (connect, read and write).
    max_retries: extra attempts after a retryable failure; backoff_s * 2**attempt seconds apart
        (capped at 60 s, with up to 10% jitter; a 429's Retry-After wins when larger).
    n_mode: "auto" (ask for n, fall back to separate requests), "native" (always send n),
        "repeat" (always n separate requests).
    extra_body: extra JSON fields for every request (e.g. {"top_k": -1} for vLLM).
    client: an `httpx.Client` to use instead of a fresh one (proxies, TLS, transports); not closed by `close()`.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 600.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        n_mode: NMode = "auto",
        extra_body: Mapping[str, Any] | None = None,
        client: httpx.Client | None = None,
        routing: Routing = "round-robin",
        replica_cooldown_s: float = 30.0,
    ):
        urls = [u.strip() for u in base_url.split(",") if u.strip()] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("got no base_url; pass one URL such as 'http://127.0.0.1:8000/v1' or a list of replicas")
        if max_concurrency < 1:
            raise ValueError(f"got max_concurrency={max_concurrency}; it must be >= 1")
        if max_retries < 0:
            raise ValueError(f"got max_retries={max_retries}; it must be >= 0 (0 = no retries)")
        if n_mode not in ("auto", "native", "repeat"):
            raise ValueError(f"got n_mode={n_mode!r}; choose 'auto', 'native' or 'repeat'")
        self.urls = [chat_url(u) for u in urls]
        self.model = model
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.n_mode: NMode = n_mode
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_client = client is None
        limits = httpx.Limits(
            max_connections=None, max_keepalive_connections=max_concurrency
        )  # threads bound concurrency
        self.client = client or httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers, limits=limits)
        if client is not None and headers:
            self.client.headers.update(headers)
        self.replicas = ReplicaSet(self.urls, routing=routing, cooldown_s=replica_cooldown_s)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="mucode-openai")

    def generate(
        self, conversations: Sequence[Sequence[Message]], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions for each conversation, in input order; seeds: one per conversation
        (None = `derive_seed(params.seed, i)`), sent as the request's `seed`."""
        seeds = conversation_seeds(len(conversations), params, seeds)
        futures = [self._pool.submit(self._conversation, list(c), params, s) for c, s in zip(conversations, seeds)]
        return [f.result() for f in futures]

    def _conversation(self, messages: list[Message], params: SamplingParams, seed: int) -> list[Completion]:
        """All n samples of one conversation (runs on a pool thread)."""
        if params.n == 1 or self.n_mode == "repeat":
            return [self._one(messages, params, derive_seed(seed, j), 1)[0] for j in range(params.n)]
        try:
            completions = self._one(messages, params, seed, params.n)
        except OpenAIServerError as err:  # a server that rejects `n` outright (400/422) in auto mode
            if self.n_mode != "auto" or err.status not in (400, 422):
                raise
            completions = []
        missing = range(len(completions), params.n)
        for j in missing:
            completions += self._one(messages, params, derive_seed(seed, j), 1)
        if missing and self.n_mode == "auto":  # only once the separate requests have worked
            logger.info(
                "server gave %d of n=%d choices; sending separate requests from now on", missing.start, params.n
            )
            self.n_mode = "repeat"
        return completions[: params.n]

    def _one(self, messages: list[Message], params: SamplingParams, seed: int, n: int) -> list[Completion]:
        """One request asking for n choices; returns the choices the server gave."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": params.max_new_tokens,
            "seed": seed,
        }
        body["temperature"] = params.temperature
        if not params.greedy:
            body["top_p"] = params.top_p
        if n > 1:
            body["n"] = n
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(self.extra_body)
        return parse_choices(self._post(body), params)

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries: transport errors, timeouts, 429 and 5xx are retried, other 4xx raised."""
        replica = None
        for attempt in range(self.max_retries + 1):
            replica = self.replicas.pick(avoid=replica)
            url = replica.url
            try:
                response = self.client.post(url, json=body)
            except httpx.TransportError as err:  # connection refused/reset, timeouts, protocol errors
                self.replicas.release(replica, failed=True)
                problem, status, retry_after = f"{type(err).__name__}: {err}", None, 0.0
            else:
                self.replicas.release(
                    replica, failed=response.status_code in RETRY_STATUS or response.status_code >= 500
                )
                if response.status_code < 400:
                    return response.json()
                problem, status = f"HTTP {response.status_code}: {response.text[:500]}", response.status_code
                if status not in RETRY_STATUS and status < 500:
                    raise OpenAIServerError(f"{url} rejected the request ({problem})", status)
                retry_after = _retry_after_s(response)
            if attempt == self.max_retries:
                raise OpenAIServerError(f"{url}: giving up after {attempt + 1} attempts; last error {problem}", status)
            if self.replicas.another_is_up(replica):  # another replica can take it now: no reason to wait
                logger.warning("%s: %s; retry %d/%d on another replica", url, problem, attempt + 1, self.max_retries)
                continue
            jitter = 1 + 0.1 * random.random()  # spreads retries of parallel requests; never affects outputs
            delay = max(retry_after, min(60.0, self.backoff_s * 2**attempt) * jitter)
            logger.warning("%s: %s; retry %d/%d in %.1fs", url, problem, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the thread pool and close the HTTP client (unless it was passed in)."""
        self._pool.shutdown(wait=True)
        if self._own_client:
            self.client.close()


def parse_choices(data: Mapping[str, Any], params: SamplingParams) -> list[Completion]:
    """Completions from a chat-completions response body (see the module docstring on token counts)."""
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    total = int(usage.get("completion_tokens") or 0)
    reasons = ["length" if c.get("finish_reason") == "length" else "stop" for c in choices]
    n_stop = reasons.count("stop")
    rest = max(0, total - params.max_new_tokens * (len(choices) - n_stop)) if len(choices) > 1 else total
    shares = iter([rest // n_stop + (k < rest % n_stop) for k in range(n_stop)] if n_stop else [])
    completions = []
    for choice, reason in zip(choices, reasons):
        text, trimmed = trim_at_stop((choice.get("message") or {}).get("content") or "", params.stop)
        tokens = total if len(choices) == 1 else params.max_new_tokens if reason == "length" else next(shares)
        completions.append(Completion(text, prompt_tokens, tokens, "stop" if trimmed else reason))
    return completions


def _retry_after_s(response: httpx.Response) -> float:
    """Seconds from a numeric Retry-After header; 0 when absent or not a number."""
    try:
        return float(response.headers.get("retry-after", 0))
    except ValueError:
        return 0.0
