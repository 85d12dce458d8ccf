"""Build a generation backend by name; each backend module is imported only when chosen.

    gen = make_generator("hf", "Qwen/Qwen2.5-Coder-0.5B-Instruct", batch_size=8, dtype="bfloat16")
    gen = make_generator("openai", "Qwen/Qwen2.5-Coder-0.5B-Instruct", base_url="http://127.0.0.1:8000/v1")
    gen = make_generator("vllm", "Qwen/Qwen2.5-Coder-0.5B-Instruct", tensor_parallel_size=2)
"""

from __future__ import annotations

from typing import Any

from mucode.generation.base import Generator

BACKENDS = ("hf", "transformers", "openai", "vllm")  # "transformers" is an alias of "hf"


def make_generator(backend: str, model: str, **options: Any) -> Generator:
    """A `Generator` for `model` (hub id, local folder, or served model name for "openai").

    options go to the backend: `TransformersGenerator.from_pretrained` (dtype, device, batch_size,
    gguf_file, ...), `OpenAIGenerator` (base_url is required; api_key, max_concurrency, ...),
    or `VLLMGenerator` (tensor_parallel_size and any `vllm.LLM` argument).
    """
    if backend in ("hf", "transformers"):
        from mucode.generation.hf import TransformersGenerator

        return TransformersGenerator.from_pretrained(model, **options)
    if backend == "openai":
        from mucode.generation.openai_api import OpenAIGenerator

        if "base_url" not in options:
            raise ValueError("the openai backend needs base_url=, e.g. make_generator('openai', model, base_url='http://127.0.0.1:8000/v1')")
        return OpenAIGenerator(options.pop("base_url"), model, **options)
    if backend == "vllm":
        from mucode.generation.vllm import VLLMGenerator

        return VLLMGenerator(model, **options)
    raise ValueError(f"unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
