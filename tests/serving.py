"""`mucode serve` as a subprocess on a free loopback port, for the tests that talk to a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Start `mucode serve ARGS --port P` (output to `log`) and wait for /health; (process, base URL)."""
    port = free_port()
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "mucode", "serve", *args, "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if process.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    pytest.fail(f"server did not start: {log.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)
