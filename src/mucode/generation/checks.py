"""Checks that a generation backend can run, made before anything is written or loaded, so that a
mistyped model, a dead server or a missing engine is one `Error:` line, not a traceback after the
output folder was started.

    check_generator("hf", "smollm2-135m")                       # resolves (pulls) and checks the files
    check_generator("openai", "my-model", base_url="http://127.0.0.1:8000/v1")
"""

from __future__ import annotations

import importlib.util

import httpx


PROBE_TIMEOUT_S = 5.0


def check_generator(backend: str, model: str, *, base_url: str | None = None) -> None:
    """Raise ValueError (one line, with the fix) when `backend` cannot generate with `model`."""
    if backend == "openai":
        check_server(base_url)
        return
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "--backend vllm needs the vllm package: pip install 'mucode[vllm]' (a CUDA GPU), or use --backend hf"
        )
    check_model(model)


def check_model(model: str) -> None:
    """Resolve `model` (a preset is pulled and its cached files verified; a folder's weights are
    checked for truncation); a hub id must be reachable."""
    from mucode.generation.models import hub_reachable, resolve_model

    resolved = resolve_model(model)
    if resolved.kind == "hub" and resolved.preset is None and not hub_reachable(resolved.path):
        raise ValueError(
            f"model {model!r} is neither a preset nor a local folder, and the Hugging Face hub does not answer for it; "
            "check the name, or pass a local folder"
        )


def check_server(base_url: str | None) -> None:
    """Every comma-separated URL of `base_url` answers `GET /models` like an OpenAI-compatible server."""
    if not base_url:
        raise ValueError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    for url in [u.strip() for u in base_url.split(",") if u.strip()]:
        models_url = url.rstrip("/") + ("/models" if url.rstrip("/").endswith("/v1") else "/v1/models")
        try:
            answer = httpx.get(models_url, timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError as err:
            raise ValueError(
                f"--base-url {url}: no OpenAI-compatible server answers ({type(err).__name__}: {err}); start it or fix the URL"
            ) from None
        if answer.status_code >= 500 or answer.status_code == 404:
            raise ValueError(
                f"--base-url {url}: GET {models_url} answered {answer.status_code}; is this an OpenAI-compatible server?"
            )
