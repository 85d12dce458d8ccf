"""Rollout throughput: the same problems, model, seeds and settings through mucode's rollout engine
(episodes batched across problems; the generator is the old decode loop with prefix K/V reuse,
benchmarks/old_decode_loop.py, the engine these figures were first measured with) and through a
naive loop (one episode at a time, one `model.generate` call per turn: the hf backend, batch 1).
Prints generated tokens/s and pass rates.

    python benchmarks/rollout_throughput.py [--model smollm2-135m] [--problems humaneval] [--limit 12]
    python benchmarks/rollout_throughput.py --decode-only     # the generator alone, loop vs model.generate

--decode-only times one generator call per turn over all episodes at once (batch = --max-live) on
real multi-turn prompts (turn 1 replies, run in the sandbox, feedback): the hf backend's batched
`model.generate`, the old loop with an empty prefix store ("cold") and with the store of the
previous turn ("warm"). Both in the model's stored dtype (fp32 for the presets), as first measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date

import torch
from old_decode_loop import OldLoopGenerator  # benchmarks/ is on sys.path when this file runs

from mucode.episode import Episode, advance
from mucode.execution import Executor, Limits
from mucode.generation.base import SamplingParams
from mucode.generation.hf import TransformersGenerator
from mucode.problems import load_problems
from mucode.rollouts import collect_rollouts
from mucode.store import TrajectoryStore, read_trajectories, select_problems


def naive(problems, generator, executor, rollouts: int, turns: int, params: SamplingParams):
    """One episode at a time, one generate call per turn: (tokens, seconds, correct, trajectories)."""
    tokens = correct = count = 0
    started = time.perf_counter()
    for problem in problems:
        for index in range(rollouts):
            episode = Episode(problem, max_turns=turns)
            step = 0
            while not episode.done:
                seeded = SamplingParams(
                    **{**params.to_dict(), "stop": params.stop, "seed": params.seed + 1000 * index + step}
                )
                completion = generator.generate([episode.pending_messages()], seeded)[0][0]
                tokens += completion.completion_tokens
                advance([episode], [completion.text], executor)
                step += 1
            correct += episode.correct
            count += 1
    return tokens, time.perf_counter() - started, correct, count


def timed(generator, conversations, params: SamplingParams):
    """(completions, generated tokens, seconds) of one generate call."""
    started = time.perf_counter()
    out = generator.generate(conversations, params)
    return out, sum(c[0].completion_tokens for c in out), time.perf_counter() - started


def decode_only(
    problems, loop: OldLoopGenerator, plain: TransformersGenerator, executor, args, params: SamplingParams
) -> None:
    """Per turn, all live episodes in one call: model.generate vs the old loop, cold and warm store."""
    cold = OldLoopGenerator(loop.model, loop.tokenizer, batch_size=loop.batch_size, prefix_cache_bytes=0)
    episodes = [Episode(p, max_turns=args.turns) for p in problems for _ in range(args.rollouts)]
    print(f"decode only: {len(episodes)} episodes, one call per turn, batch {loop.batch_size}")
    for turn in range(1, args.turns + 1):
        live = [ep for ep in episodes if not ep.done]
        if not live:
            break
        chats = [ep.pending_messages() for ep in live]
        lengths = [len(loop.encode(c)) for c in chats]
        _, cold_tokens, cold_s = timed(cold, chats, params)
        reused = loop.prefix_store.reused_tokens
        out, warm_tokens, warm_s = timed(loop, chats, params)
        reused = loop.prefix_store.reused_tokens - reused
        _, plain_tokens, plain_s = timed(plain, chats, params)
        print(
            f"turn {turn}: {len(chats)} prompts of {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}); "
            f"warm store reused {reused} of {sum(lengths)} prompt tokens"
        )
        print(f"  model.generate: {plain_tokens / plain_s:7.1f} tok/s ({plain_tokens} tokens, {plain_s:.1f} s)")
        print(
            f"  loop, cold:     {cold_tokens / cold_s:7.1f} tok/s ({cold_tokens} tokens, {cold_s:.1f} s)  {cold_tokens / cold_s / (plain_tokens / plain_s):.2f}x"
        )
        print(
            f"  loop, warm:     {warm_tokens / warm_s:7.1f} tok/s ({warm_tokens} tokens, {warm_s:.1f} s)  {warm_tokens / warm_s / (plain_tokens / plain_s):.2f}x"
        )
        advance(live, [c[0].text for c in out], executor)  # the warm loop's replies continue the episodes


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
    parser.add_argument(
        "--max-live", type=int, default=24, help="Live episodes of the engine; also its generator's batch size."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument(
        "--decode-only", action="store_true", help="Time the generator alone: old loop vs model.generate per turn."
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    problems = select_problems(list(load_problems(args.problems, path=args.problems_path)), args.limit, args.seed)
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    print(
        f"{date.today()}  {platform.platform()}  cpus={os.cpu_count()}  torch threads={torch.get_num_threads()}  model={args.model}"
    )
    print(
        f"{len(problems)} problems of {args.problems} x {args.rollouts} rollouts x <= {args.turns} turns, "
        f"temperature {args.temperature}, <= {args.max_new_tokens} new tokens, seed {args.seed}"
    )
    loop = OldLoopGenerator.from_pretrained(args.model, dtype="auto", batch_size=args.max_live)
    plain = TransformersGenerator(loop.model, loop.tokenizer, batch_size=args.max_live if args.decode_only else 1)
    with Executor(limits=Limits(timeout_s=3)) as executor:
        for gen in (loop, plain):
            gen.generate([[{"role": "user", "content": "warm up"}]], SamplingParams(max_new_tokens=4))
        loop.prefix_store.clear()
        if args.decode_only:
            decode_only(problems, loop, plain, executor, args, params)
            return
        with tempfile.TemporaryDirectory() as out:
            store = TrajectoryStore(out)
            stats = collect_rollouts(
                problems,
                loop,
                executor,
                store,
                rollouts=args.rollouts,
                turns=args.turns,
                params=params,
                max_live=args.max_live,
            )
            store.close()
            records = read_trajectories(out)
        engine_rate = stats.completion_tokens / stats.wall_s
        engine_correct = sum(bool(r["correct"]) for r in records)
        tokens, seconds, correct, count = naive(problems, plain, executor, args.rollouts, args.turns, params)
    naive_rate = tokens / seconds
    store = loop.prefix_store
    print(
        f"naive loop (one episode at a time, model.generate, batch 1): {naive_rate:7.1f} generated tokens/s  "
        f"({tokens} tokens in {seconds:.1f} s; pass {correct}/{count} = {correct / count:.1%})"
    )
    print(
        f"rollout engine (max-live {args.max_live}, old decode loop): {engine_rate:7.1f} generated tokens/s  "
        f"({stats.completion_tokens} tokens in {stats.wall_s:.1f} s; pass {engine_correct}/{len(records)} = {engine_correct / len(records):.1%})"
    )
    print(f"  prefix store: {store.hits} hits, {store.misses} misses, {store.reused_tokens} prompt tokens reused")
    print(f"ratio engine / naive: {engine_rate / naive_rate:.2f}x")
    loop.close()


if __name__ == "__main__":
    main()
