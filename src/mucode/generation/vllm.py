"""Offline generation with vLLM (`LLM.chat`): the fastest backend on a CUDA GPU.

    pip install 'mucode[vllm]'
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
