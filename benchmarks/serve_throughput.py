"""Requests/s and generated tokens/s of `mucode serve` for concurrent requests (batched onto the
generator) against the same requests sent one at a time, to one server, in one run.

    python benchmarks/serve_throughput.py --model smollm2-135m --requests 8 --max-tokens 128

The requests are the first R HumanEval problems with their public test (greedy, n = 1, one turn
unless --turns), so both phases do the same work; the ratio is the gain from batching.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "mucode",
        "serve",
        "--model",
        args.model,
        "--port",
        str(port),
        "--max-batch",
        str(args.requests),
        "--batch-window-s",
        "0.2",
        "--max-new-tokens",
        str(args.max_tokens),
    ]
    process = subprocess.Popen(command, env={**os.environ}, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start")


def bodies(args: argparse.Namespace) -> list[dict]:
    from mucode.problems import load_problems

    problems = list(load_problems("humaneval"))[: args.requests]
    return [
        {
            "messages": [{"role": "user", "content": p.prompt}],
            "tests": [t.code for t in p.public_tests],
            "max_tokens": args.max_tokens,
            "mucode": {"turns": args.turns},
        }
        for p in problems
    ]


def phase(base: str, requests: list[dict], concurrency: int) -> tuple[float, int]:
    def post(body: dict) -> int:
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=3600)
        reply.raise_for_status()
        return reply.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(post, requests))
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--turns", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    port = free_port()
    server = start_server(args, port)
    base = f"http://127.0.0.1:{port}"
    try:
        requests = bodies(args)
        phase(base, requests[:1], 1)  # warm-up
        one_s, one_tokens = phase(base, requests, 1)
        many_s, many_tokens = phase(base, requests, len(requests))
        health = httpx.get(f"{base}/health").json()
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(
        f"model {args.model}, {len(requests)} HumanEval requests, {args.turns} turn(s), <= {args.max_tokens} tokens, greedy"
    )
    print(
        f"  one at a time:  {len(requests) / one_s:6.2f} requests/s  {one_tokens / one_s:7.1f} generated tokens/s  ({one_s:.1f} s)"
    )
    print(
        f"  all at once:    {len(requests) / many_s:6.2f} requests/s  {many_tokens / many_s:7.1f} generated tokens/s  ({many_s:.1f} s)"
    )
    print(f"  largest generator batch: {health['largest_batch']} requests")
    print(f"  ratio all at once / one at a time (requests/s): {one_s / many_s:.2f}x")


if __name__ == "__main__":
    main()
