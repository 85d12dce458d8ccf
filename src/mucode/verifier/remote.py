"""A verifier served elsewhere: `mucode serve --verifier DIR` scores through `POST /v1/score`, so a
search or a relabeling need not load the verifier next to the inference servers.

    scorer = load_scorer("http://10.0.0.5:8000")      # a URL: RemoteScorer; a folder: VerifierScorer
    scores = scorer.score(conversations, replies)       # the same numbers as the folder scored in-process

Each pair goes as the conversation state and the reply (`messages`, `reply`), so the server applies
the verifier's own view (reply or program, problem or history) exactly as in-process scoring does.
`MUCODE_API_KEY` is sent as the bearer key when set (`mucode serve --api-key`).
"""

from __future__ import annotations

import os
from typing import Any, Sequence


def is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


class RemoteScorer:
    """The `Scorer` of a `mucode serve` server with a verifier; `batch_size` pairs per request."""

    def __init__(self, url: str, *, api_key: str | None = None, batch_size: int = 64, timeout_s: float = 600.0):
        import httpx

        self.url = url.rstrip("/").removesuffix("/v1")
        key = api_key or os.environ.get("MUCODE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.batch_size = batch_size
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def check(self) -> None:
        """Raise a one-line error unless the server answers and serves a verifier."""
        import httpx

        try:
            health = self.client.get("/health").json()
        except (httpx.HTTPError, ValueError) as err:
            raise ConnectionError(f"verifier {self.url}: no mucode server answers /health ({err})") from err
        if not health.get("verifier"):
            raise ValueError(
                f"verifier {self.url}: the server has no verifier; start it with mucode serve --verifier DIR"
            )

    def score(self, prompts: Sequence[Any], replies: Sequence[Any]) -> list[float]:
        if len(prompts) != len(replies):
            raise ValueError(f"got {len(prompts)} prompts and {len(replies)} replies; pass one prompt per reply")
        pairs = [{"messages": _chat(p), "reply": _text(r)} for p, r in zip(prompts, replies)]
        scores: list[float] = []
        for start in range(0, len(pairs), self.batch_size):
            response = self.client.post("/v1/score", json={"pairs": pairs[start : start + self.batch_size]})
            if response.status_code != 200:
                raise RuntimeError(
                    f"verifier {self.url}: /v1/score answered {response.status_code}: {response.text[:300]}"
                )
            scores.extend(float(s) for s in response.json()["scores"])
        return scores

    def close(self) -> None:
        self.client.close()


def _chat(prompt: Any) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _text(reply: Any) -> str:
    return reply if isinstance(reply, str) else reply[-1]["content"]


def load_scorer(ref: str, *, batch_size: int = 16, device: str | None = None, progress: bool = False) -> Any:
    """The scorer of a verifier: a served one for an http(s) URL (checked at once), else a trained
    verifier folder loaded in this process."""
    if is_url(ref):
        scorer = RemoteScorer(ref)
        scorer.check()
        return scorer
    from mucode.verifier.scoring import VerifierScorer

    return VerifierScorer.load(ref, batch_size=batch_size, device=device, progress=progress)
