"""`mucode serve`: verified multi-turn solving, sandbox execution and verifier scoring over HTTP.

    mucode serve --model qwen2.5-coder-0.5b --verifier runs/v0 --port 8000

Endpoints (docs/serve.md): `POST /v1/chat/completions` (OpenAI-compatible; multi-turn Best-of-N
against the tests of the request), `POST /v1/execute` (programs against tests in the sandbox, the
JSON of `mucode exec --json`), `POST /v1/score` (verifier scores), `GET /health`, `GET /v1/models`.
The server side needs `pip install 'mucode[serve]'` (FastAPI, uvicorn).
"""

from mucode.serve.config import ServeConfig


__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):  # the app imports FastAPI: only when it is asked for
    if name == "create_app":
        from mucode.serve.app import create_app

        return create_app
    raise AttributeError(name)
