"""Generation with OpenVINO GenAI's continuous-batching pipeline: the fastest backend measured on CPU.

    pip install 'mucode[openvino]' && pip uninstall -y torchvision   # see docs/models.md
    gen = OpenVINOGenerator.from_pretrained("qwen2.5-coder-0.5b")   # exported once to int8, then cached
    out = gen.generate(conversations, SamplingParams(n=4, temperature=0.7), seeds=[s0, s1, ...])
    gen.close()

The model is exported once with optimum-intel (`optimum-cli export openvino`, weights int8 by
default; "fp16" / "fp32" keep more precision) into the mucode cache, next to a preset's converted
folder (`<cache>/models/<preset>.openvino-int8/`; other models: `<cache>/openvino/<key>-int8/`),
published atomically with a manifest like the presets' (`export_openvino`).

All conversations of a call go to one `ContinuousBatchingPipeline` as separate requests (continuous
batching; prefix caching on, so turns 2-3 of an episode reuse the K/V of the conversation so far).
Conversation i is one request with `num_return_sequences = n` and its own `rng_seed = seeds[i]`:
its samples do not depend on the other requests of the call (tested), but sample j of a request
with n samples is not sample 0 of a request with n = 1 (the n samples share the request's RNG; the
vLLM backend behaves the same). Prompts are rendered and replies decoded with the model's
`transformers` tokenizer, exactly as the hf backend does; replies stop at the end-of-turn ids and at
`params.stop` strings; the sampler is temperature + top_p only (no top-k, no repetition penalty).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mucode.generation.base import Completion, Message, SamplingParams, conversation_seeds, trim_at_stop
from mucode.generation.chat import encode_prompt, end_of_turn_ids


logger = logging.getLogger("mucode.generation")

WEIGHT_FORMATS = ("int8", "fp16", "fp32")
EXPORT_FORMAT = 1  # bump when the export changes, so that older exported folders are rebuilt
INSTALL_HINT = "the openvino backend needs openvino-genai and optimum-intel: pip install 'mucode[openvino]' (then pip uninstall -y torchvision)"
Progress = Callable[[int, int], None]  # (finished conversations, conversations of the call)


def openvino_installed() -> bool:
    """Whether the runtime (openvino_genai) and the exporter (optimum-intel) are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino_genai", "optimum")) and (
        importlib.util.find_spec("optimum.intel") is not None
    )


def _import_genai() -> Any:
    try:
        import openvino_genai
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return openvino_genai


# ---------------------------------------------------------------------------------------------
# Export and cache


def _fingerprint(folder: Path) -> str:
    """A cheap identity of a Hugging Face folder: every file's name, size and mtime (a re-saved
    checkpoint at the same path gets a new export)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def export_dir(ref: str, weight_format: str = "int8") -> tuple[Path, str, str]:
    """(where the export of `ref` is cached, the source to export, the source's identity)."""
    from mucode.generation.models import cache_root, resolve_model

    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(
            f"got weight_format={weight_format!r}; choose one of {', '.join(WEIGHT_FORMATS)} (int8 = default)"
        )
    resolved = resolve_model(ref)
    if resolved.kind == "gguf":
        raise ValueError(
            f"the openvino backend cannot export a GGUF file ({resolved.path}/{resolved.gguf_file}); "
            "convert it to a Hugging Face folder first (mucode models pull, or save_pretrained), or use --backend hf"
        )
    if resolved.kind == "hub":
        identity = f"hub:{resolved.path}"
    else:
        identity = f"folder:{resolved.path}:{_fingerprint(Path(resolved.path))}"
    if resolved.preset and resolved.kind == "folder":
        target = Path(resolved.path).parent / f"{resolved.preset}.openvino-{weight_format}"
    else:
        key = hashlib.sha256(identity.encode()).hexdigest()[:16]
        target = cache_root() / "openvino" / f"{key}-{weight_format}"
    return target, resolved.path, identity


def _export_complete(folder: Path, identity: str, weight_format: str) -> bool:
    from mucode.generation.models import read_manifest

    manifest = read_manifest(folder) or {}
    return (
        manifest.get("source_identity") == identity
        and manifest.get("weight_format") == weight_format
        and manifest.get("export_format") == EXPORT_FORMAT
        and (folder / "openvino_model.xml").is_file()
    )


def export_openvino(ref: str, weight_format: str = "int8", *, progress: Callable[[str], None] | None = None) -> Path:
    """The OpenVINO export of model `ref` (preset, hub id or local folder), built on first use with
    `optimum-cli export openvino --weight-format FORMAT` and cached (see the module docstring)."""
    from mucode.generation.models import populate_cache

    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    target, source, identity = export_dir(ref, weight_format)
    if _export_complete(target, identity, weight_format):
        return target

    def build(content: Path) -> dict[str, Any]:
        say(f"exporting {ref} to OpenVINO ({weight_format} weights) into {target}; once per model")
        started = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "optimum.commands.optimum_cli",
            "export",
            "openvino",
            "--model",
            source,
            "--task",
            "text-generation-with-past",
            "--weight-format",
            weight_format,
            str(content),
        ]
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"`{' '.join(command)}` failed ({tail[0]}); is optimum-intel installed? {INSTALL_HINT}")
        return {
            "source": source,
            "source_identity": identity,
            "weight_format": weight_format,
            "export_format": EXPORT_FORMAT,
            "export_seconds": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
        }

    populate_cache(target, build, is_complete=lambda f: _export_complete(f, identity, weight_format))
    return target


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in (
        "mucode",
        "openvino",
        "openvino-genai",
        "openvino-tokenizers",
        "optimum-intel",
        "nncf",
        "transformers",
        "torch",
    ):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found


# ---------------------------------------------------------------------------------------------
# The generator


class OpenVINOGenerator:
    """A `Generator` over an `openvino_genai.ContinuousBatchingPipeline` on an exported folder.

    folder: an OpenVINO export (`export_openvino`). threads: CPU inference threads (None = all cores).
    cache_gb: K/V cache size in GB (with prefix caching, finished conversations stay in it until
    evicted). max_num_batched_tokens: most tokens one scheduler step runs (prompt chunks included).
    max_num_seqs: most sequences decoded together. device: an OpenVINO device name ("CPU", "GPU").
    precision: "f32" computes activations and keeps the K/V cache in float32; None keeps the
    device's defaults (on CPUs with bf16 support: bf16 activations, u8 K/V cache).
    progress: called after every scheduler step with (finished conversations, conversations).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int | None = None,
        cache_gb: int = 2,
        max_num_batched_tokens: int = 2048,
        max_num_seqs: int = 256,
        device: str = "CPU",
        precision: str | None = None,
        progress: Progress | None = None,
    ):
        genai = _import_genai()
        from transformers import AutoTokenizer, GenerationConfig

        self.folder = Path(folder)
        scheduler = genai.SchedulerConfig()
        scheduler.cache_size = cache_gb
        scheduler.enable_prefix_caching = True
        scheduler.dynamic_split_fuse = True
        scheduler.max_num_batched_tokens = max_num_batched_tokens
        scheduler.max_num_seqs = max_num_seqs
        properties: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        if precision is not None:
            properties.update(INFERENCE_PRECISION_HINT=precision, KV_CACHE_PRECISION=precision)
        self.precision = precision
        self.pipeline = genai.ContinuousBatchingPipeline(str(self.folder), scheduler, device, properties)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        generation_config = GenerationConfig.from_pretrained(str(self.folder))
        self.stop_ids = end_of_turn_ids(self.tokenizer, SimpleNamespace(generation_config=generation_config))
        if not self.stop_ids:
            raise ValueError(
                f"the tokenizer in {self.folder} has no eos token and its chat template no end-of-turn token"
            )
        self.progress = progress
        self._request_ids = itertools.count()

    @classmethod
    def from_pretrained(cls, ref: str, *, weight_format: str = "int8", **options: Any) -> OpenVINOGenerator:
        """Export `ref` once (`export_openvino`), then load it. options: see the class; fp32
        weights compute in f32 too unless `precision` is given."""
        if weight_format == "fp32":
            options.setdefault("precision", "f32")
        return cls(export_openvino(ref, weight_format), **options)

    def generation_config(self, params: SamplingParams, seed: int) -> Any:
        """The `openvino_genai.GenerationConfig` of one conversation's request."""
        config = _import_genai().GenerationConfig()
        config.max_new_tokens = params.max_new_tokens
        config.num_return_sequences = params.n
        config.do_sample = not params.greedy
        if not params.greedy:
            config.temperature, config.top_p = params.temperature, params.top_p  # top_k stays off (its default)
        config.rng_seed = seed
        config.stop_token_ids = set(self.stop_ids)
        if params.stop:
            config.stop_strings = set(params.stop)
            config.include_stop_str_in_output = False
        return config

    def generate(
        self, conversations: Sequence[Sequence[Message]], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions for each conversation, in input order; conversation i is one
        request seeded `seeds[i]` (None = `derive_seed(params.seed, i)`)."""
        import numpy as np
        import openvino

        seeds = conversation_seeds(len(conversations), params, seeds)
        prompts = [encode_prompt(self.tokenizer, c) for c in conversations]
        handles = [
            self.pipeline.add_request(
                next(self._request_ids),
                openvino.Tensor(np.array([ids], dtype=np.int64)),
                self.generation_config(params, seed),
            )
            for ids, seed in zip(prompts, seeds)
        ]
        self._run(handles)
        return [
            [self._completion(out, len(ids), params) for out in handle.read_all()]
            for ids, handle in zip(prompts, handles)
        ]

    def _run(self, handles: list[Any]) -> None:
        """Step the pipeline until every request is done, reporting finished conversations."""
        genai = _import_genai()
        finished = 0
        while self.pipeline.has_non_finished_requests():
            self.pipeline.step()
            if self.progress is not None:
                now = sum(h.get_status() != genai.GenerationStatus.RUNNING for h in handles)
                if now != finished:
                    finished = now
                    self.progress(finished, len(handles))
        failed = [h.get_status() for h in handles if h.get_status() != genai.GenerationStatus.FINISHED]
        if failed:  # IGNORED: the request did not fit the K/V cache
            raise RuntimeError(f"{len(failed)} OpenVINO requests ended {failed[0]} (not FINISHED); raise cache_gb")

    def _completion(self, output: Any, prompt_tokens: int, params: SamplingParams) -> Completion:
        """One generated sequence; counts include the end-of-turn token, as in the hf backend."""
        ids = list(output.generated_ids)
        body = ids[:-1] if ids and ids[-1] in self.stop_ids else ids
        text, _ = trim_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), params.stop)
        reason = "length" if output.finish_reason == _import_genai().GenerationFinishReason.LENGTH else "stop"
        return Completion(text, prompt_tokens, len(ids), reason)

    def close(self) -> None:
        """Drop the pipeline (its K/V cache and compiled model)."""
        self.pipeline = None
