"""Seconds per LoRA SFT micro-step on this CPU: fp32 vs bf16 autocast (what `--mixed-precision bf16`
gives through TRL/accelerate on a CPU), with and without gradient checkpointing.

    python benchmarks/sft_step.py --model qwen2.5-coder-0.5b --tokens 768 --steps 3

Each setting runs the same sequences (forward with labels, backward, AdamW step on the LoRA
weights); it prints seconds per step, the loss of the first step and its gap to fp32's, and the
ratio to the fp32 baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from mucode.generation.models import resolve_model


def run_setting(
    path: str, batch: torch.Tensor, steps: int, autocast: bool, checkpointing: bool
) -> tuple[float, float]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, first_loss = [], None
    for step in range(steps + 1):  # step 0 warms up
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step == 0:
            first_loss = loss.item()
        else:
            times.append(time.perf_counter() - started)
    return sum(times) / len(times), first_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--tokens", type=int, default=768, help="tokens per sequence")
    parser.add_argument("--batch", type=int, default=1, help="sequences per micro-step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_model(args.model).path
    batch = torch.randint(100, 20000, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    print(f"model {args.model}, {args.batch} x {args.tokens} tokens per micro-step, {args.threads} threads")
    print("| setting | s/step | ratio vs fp32 | first loss | gap to fp32 |")
    print("|---|---|---|---|---|")
    base_s = base_loss = None
    for name, autocast, checkpointing in (
        ("fp32", False, False),
        ("bf16 autocast", True, False),
        ("fp32 + grad ckpt", False, True),
        ("bf16 autocast + grad ckpt", True, True),
    ):
        seconds, loss = run_setting(path, batch, args.steps, autocast, checkpointing)
        base_s, base_loss = (seconds, loss) if base_s is None else (base_s, base_loss)
        print(
            f"| {name} | {seconds:.2f} | {base_s / seconds:.2f}x | {loss:.4f} | {abs(loss - base_loss):.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
