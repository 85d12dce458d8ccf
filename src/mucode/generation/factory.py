"""Build a generation backend by name; each backend module is imported only when chosen.

gen = make_generator("auto", "qwen2.5-coder-0.5b")   # says on stderr which backend it picked and why
gen = make_generator("hf", "Qwen/Qwen2.5-Coder-0.5B-Instruct", batch_size=8, dtype="bfloat16")
gen = make_generator("openvino", "qwen2.5-coder-0.5b", weight_format="int8")
gen = make_generator("openai", "Qwen/Qwen2.5-Coder-0.5B-Instruct", base_url="http://127.0.0.1:8000/v1")
gen = make_generator("vllm", "Qwen/Qwen2.5-Coder-0.5B-Instruct", tensor_parallel_size=2)
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from mucode.generation.base import Generator


BACKENDS = ("auto", "hf", "transformers", "openvino", "openai", "vllm")  # "transformers" is an alias of "hf"
CPU_DEFAULT = "openvino"  # measured fastest on CPU (docs/benchmarks.md, "Generation engines")
# options that only some backends take: dropped when "auto" picks another one
_OPTIONS = {
    "hf": {"dtype", "batch_size", "device"},
    "openvino": {
        "weight_format",
        "threads",
        "cache_gb",
        "max_num_batched_tokens",
        "max_num_seqs",
        "precision",
        "progress",
    },
    "vllm": {"dtype", "tensor_parallel_size"},
}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_backend(backend: str, model: str = "", *, base_url: str | None = None) -> tuple[str, str]:
    """(backend, why) for a requested backend; only "auto" is resolved: an openai server when
    `base_url` is given, vLLM on a CUDA GPU when installed, the measured CPU default (OpenVINO)
    on CPU when installed and the model can be exported, else the transformers fallback `hf`."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return ("hf" if backend == "transformers" else backend), "asked for"
    if base_url:
        return "openai", "a --base-url was given"
    if model.endswith(".gguf"):
        return "hf", "a .gguf file loads only through transformers"
    if _cuda():
        if importlib.util.find_spec("vllm") is not None:
            return "vllm", "a CUDA GPU is present and vllm is installed"
        return "hf", "a CUDA GPU is present but vllm is not installed (pip install 'mucode[vllm]')"
    from mucode.generation.openvino import openvino_installed

    if openvino_installed():
        return CPU_DEFAULT, "no CUDA GPU; OpenVINO GenAI is installed and measured fastest on CPU"
    return (
        "hf",
        "no CUDA GPU and OpenVINO GenAI is not installed (pip install 'mucode[openvino]' for ~5x faster generation)",
    )


def resolve_backend(backend: str, model: str = "", *, base_url: str | None = None) -> str:
    """The backend to build: `backend` itself, or for "auto" the one `choose_backend` picks, said
    on stderr in one line (which and why)."""
    name, why = choose_backend(backend, model, base_url=base_url)
    if backend == "auto":
        print(f"backend auto -> {name}: {why}", file=sys.stderr, flush=True)
    return name


IN_PROCESS = ("hf", "transformers", "openvino")  # backends that compute in this process (no overlap with the sandbox)


def make_generator(backend: str, model: str, **options: Any) -> Generator:
    """A `Generator` for `model` (hub id, local folder, or served model name for "openai").

    backend "auto" picks one with `choose_backend` and says which on stderr (one line); options
    that the picked backend does not take are dropped. options go to the backend:
    `TransformersGenerator.from_pretrained` (dtype, device, batch_size),
    `OpenVINOGenerator.from_pretrained` (weight_format, threads, cache_gb, progress, ...),
    `OpenAIGenerator` (base_url is required; api_key, max_concurrency, ...), or `VLLMGenerator`
    (tensor_parallel_size and any `vllm.LLM` argument).
    """
    if backend == "auto":
        backend = resolve_backend("auto", model, base_url=options.get("base_url"))
        if backend in _OPTIONS:
            options = {k: v for k, v in options.items() if k in _OPTIONS[backend]}
    if backend in ("hf", "transformers"):
        from mucode.generation.hf import TransformersGenerator

        return TransformersGenerator.from_pretrained(model, **options)
    if backend == "openvino":
        from mucode.generation.openvino import OpenVINOGenerator

        return OpenVINOGenerator.from_pretrained(model, **options)
    if backend == "openai":
        from mucode.generation.openai_api import OpenAIGenerator

        if "base_url" not in options:
            raise ValueError(
                "the openai backend needs base_url=, e.g. make_generator('openai', model, base_url='http://127.0.0.1:8000/v1')"
            )
        return OpenAIGenerator(options.pop("base_url"), model, **options)
    if backend == "vllm":
        from mucode.generation.vllm import VLLMGenerator

        return VLLMGenerator(model, **options)
    raise ValueError(f"unknown generation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
