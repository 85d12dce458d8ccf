"""Rollout throughput: the same problems, model, seeds and settings through mucode's rollout engine
(episodes batched across problems, execution overlapped with generation) and through a naive loop
(one episode at a time, one `generate` call per turn). Prints generated tokens/s and pass rates.

    python benchmarks/rollout_throughput.py [--model smollm2-135m] [--problems humaneval] [--limit 12]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date

from mucode.episode import Episode, advance
from mucode.execution import Executor, Limits
from mucode.generation.base import SamplingParams
from mucode.problems import load_problems
from mucode.rollouts import TrajectoryStore, collect_rollouts, read_trajectories, select_problems


def naive(problems, generator, executor, rollouts: int, turns: int, params: SamplingParams):
    """One episode at a time, one generate call per turn: (tokens, seconds, correct, trajectories)."""
    tokens = correct = count = 0
    started = time.perf_counter()
    for problem in problems:
        for index in range(rollouts):
            episode = Episode(problem, max_turns=turns)
            step = 0
            while not episode.done:
                seeded = SamplingParams(**{**params.to_dict(), "stop": params.stop, "seed": params.seed + 1000 * index + step})
                completion = generator.generate([episode.pending_messages()], seeded)[0][0]
                tokens += completion.completion_tokens
                advance([episode], [completion.text], executor)
                step += 1
            correct += episode.correct
            count += 1
    return tokens, time.perf_counter() - started, correct, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--problems", default="humaneval")
    parser.add_argument("--problems-path", default=None)
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--rollouts", type=int, default=2)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-live", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from mucode.generation.factory import make_generator

    problems = select_problems(list(load_problems(args.problems, path=args.problems_path)), args.limit, args.seed)
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    print(f"{date.today()}  {platform.platform()}  cpus={os.cpu_count()}  model={args.model}")
    print(f"{len(problems)} problems of {args.problems} x {args.rollouts} rollouts x <= {args.turns} turns, "
          f"temperature {args.temperature}, <= {args.max_new_tokens} new tokens, seed {args.seed}")
    generator = make_generator("hf", args.model)
    with Executor(limits=Limits(timeout_s=3)) as executor:
        generator.generate([[{"role": "user", "content": "warm up"}]], SamplingParams(max_new_tokens=4))
        with tempfile.TemporaryDirectory() as out:
            store = TrajectoryStore(out)
            stats = collect_rollouts(problems, generator, executor, store, rollouts=args.rollouts, turns=args.turns, params=params, max_live=args.max_live)
            store.close()
            records = read_trajectories(out)
        engine_rate = stats.completion_tokens / stats.wall_s
        engine_pass = sum(bool(r["correct"]) for r in records) / len(records)
        tokens, seconds, correct, count = naive(problems, generator, executor, args.rollouts, args.turns, params)
    generator.close()
    naive_rate = tokens / seconds
    print(f"naive loop:     {naive_rate:7.1f} generated tokens/s  ({tokens} tokens in {seconds:.1f} s; pass {correct}/{count} = {correct / count:.1%})")
    print(f"rollout engine: {engine_rate:7.1f} generated tokens/s  ({stats.completion_tokens} tokens in {stats.wall_s:.1f} s; pass {sum(bool(r['correct']) for r in records)}/{len(records)} = {engine_pass:.1%})")
    print(f"ratio engine / naive: {engine_rate / naive_rate:.2f}x")


if __name__ == "__main__":
    main()
