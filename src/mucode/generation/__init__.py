"""Language models: references and presets (`models`), and backends that sample replies
(`transformers`, OpenAI-compatible HTTP, vLLM), all behind the `Generator` protocol in `base`.
Backends are imported lazily: importing this package loads neither torch nor vllm."""

from mucode.generation.base import Completion, Generator, SamplingParams


__all__ = ["Completion", "Generator", "SamplingParams"]
