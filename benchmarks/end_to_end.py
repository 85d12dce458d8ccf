"""`mucode rollout` and `mucode search` end to end on the same seeded problems: the old default
generator (the hand-written decode loop as stored, fp32 for the presets: benchmarks/old_decode_loop.py,
the `hf` default before issue 17) vs the new default (`--backend auto`: OpenVINO GenAI int8 on a
CPU). Both run through the package's own `run_rollouts` / `run_search` with the CLI's settings;
for the old default the one change is the generator the backend factory returns. Prints wall time,
generated tokens, tokens/s and accuracy of each, and the new/old wall-time ratio last.

    python benchmarks/end_to_end.py [--model smollm2-135m] [--problems humaneval] [--limit 40]
        [--max-new-tokens 1000] [--n 5] [--commands rollout,search] [--defaults old,new]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import mucode.generation.factory as factory
from mucode.rollouts import RolloutConfig, run_rollouts, write_summary
from mucode.search import SearchConfig, run_search
from mucode.store import read_trajectories


def old_default_factory(real_make_generator):
    """The backend factory as it was: `hf` built the old decode loop (dtype as stored)."""

    def make_generator(backend: str, model: str, **options):
        if backend not in ("hf", "transformers"):
            return real_make_generator(backend, model, **options)
        from old_decode_loop import OldLoopGenerator  # benchmarks/ is on sys.path when this file runs

        return OldLoopGenerator.from_pretrained(
            model, dtype=options.get("dtype") or "auto", batch_size=options.get("batch_size", 8)
        )

    return make_generator


def measure(command: str, backend: str, args: argparse.Namespace, out: Path) -> dict:
    shared = dict(
        model=args.model, problems=args.problems, problems_path=args.problems_path, limit=args.limit,
        seed=args.seed, backend=backend, max_new_tokens=args.max_new_tokens, out=str(out),
    )  # fmt: skip
    started = time.perf_counter()
    if command == "rollout":
        config = RolloutConfig(**shared)
        run_rollouts(config, progress=False)
        wall = time.perf_counter() - started
        summary = write_summary(config)
        tokens = sum(r["completion_tokens"] for r in read_trajectories(out))
    else:
        summary = run_search(SearchConfig(**shared, n=args.n), progress=False).metrics
        wall = time.perf_counter() - started
        tokens = summary["completion_tokens"]
    return {"wall_s": wall, "tokens": tokens, "accuracy": summary.get("accuracy", summary.get("correct"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--problems", default="humaneval")
    parser.add_argument("--problems-path", default=None)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=RolloutConfig().max_new_tokens)
    parser.add_argument("--n", type=int, default=SearchConfig().n, help="candidates per search turn")
    parser.add_argument("--commands", default="rollout,search")
    parser.add_argument("--defaults", default="old,new", help="which to run: old, new or both")
    args = parser.parse_args()
    new_backend = factory.resolve_backend("auto", args.model)
    print(f"{date.today()} {platform.machine()}, {os.cpu_count()} CPUs; auto = {new_backend}; {vars(args)}")
    real = factory.make_generator
    with tempfile.TemporaryDirectory() as tmp:
        for command in args.commands.split(","):
            rows = {}
            chosen = args.defaults.split(",")
            for name, backend in (("old default (loop)", "hf"), ("new default (auto)", "auto")):
                if name.split()[0] not in chosen:
                    continue
                factory.make_generator = old_default_factory(real) if backend == "hf" else real
                try:
                    rows[name] = measure(command, backend, args, Path(tmp) / f"{command}-{backend}")
                finally:
                    factory.make_generator = real
                r = rows[name]
                print(
                    f"mucode {command} | {name}: {r['wall_s']:.1f} s, {r['tokens']} generated tokens, "
                    f"{r['tokens'] / r['wall_s']:.1f} tok/s, accuracy {r['accuracy']}",
                    flush=True,
                )
            if len(rows) < 2:
                continue
            old, new = rows["old default (loop)"], rows["new default (auto)"]
            print(
                f"mucode {command}: new default {old['wall_s'] / new['wall_s']:.2f}x faster in wall time than the old"
            )


if __name__ == "__main__":
    main()
