"""`mucode serve`: the solver, the sandbox and the verifier as an HTTP service (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mucode.cli.options import build_config, config_options
from mucode.serve.config import ServeConfig


EXAMPLES = """
\b
Examples:
  mucode serve --model qwen2.5-coder-0.5b --verifier runs/v0 --port 8000
  mucode serve --model smollm2-135m --n 3 --turns 3 --api-key $KEY --host 0.0.0.0
  curl -s 127.0.0.1:8000/v1/execute -d '{"program": "def f(x): return x", "tests": ["assert f(1) == 1"]}'
"""


@click.command("serve", epilog=EXAMPLES)
@config_options(ServeConfig)
def serve_command(config_file: Path | None, **flags: Any) -> int:
    """Serve /v1/chat/completions (multi-turn Best-of-N against the request's tests), /v1/execute,
    /v1/score, /health and /v1/models on HOST:PORT (loopback by default)."""
    import uvicorn

    from mucode.generation.checks import check_generator
    from mucode.serve import create_app

    config = build_config(ServeConfig, config_file, flags)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        click.echo(
            f"warning: serving on {config.host} without --api-key: anyone who reaches it can run code in its sandbox",
            err=True,
        )
    check_generator(config.backend, config.model, base_url=config.base_url)
    click.echo(f"mucode serve: loading {config.model}; then listening on http://{config.host}:{config.port}", err=True)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning")
    return 0
