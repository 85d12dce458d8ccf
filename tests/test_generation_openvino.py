"""The OpenVINO GenAI backend on the tiny chat model, exported for real with optimum-intel.

The tiny model is sharpened first (see test_generation_hf.py) so that replies depend on the prompt.
Skipped when openvino-genai / optimum-intel are not installed (pip install 'mucode[openvino]').
The two exports (int8 default, fp32) take ~20 s each on 2 cores.
"""

from __future__ import annotations

import pytest

from mucode.generation import Generator, SamplingParams
from mucode.generation.chat import encode_prompt
from mucode.generation.factory import choose_backend, make_generator
from mucode.generation.openvino import openvino_installed


pytestmark = pytest.mark.skipif(not openvino_installed(), reason="needs pip install 'mucode[openvino]'")

CONVERSATIONS = [
    [{"role": "user", "content": "Write a Python function add(a, b)."}],
    [{"role": "user", "content": "def"}],
    [
        {"role": "user", "content": "Write a Python function. assert add(1, 2) == 3"},
        {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
        {"role": "user", "content": "The test failed; fix it."},
    ],
    [{"role": "user", "content": "code code"}],
]
SAMPLED = SamplingParams(n=3, temperature=1.0, max_new_tokens=24, seed=5)
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory, tiny_model_dir):
    import torch
    from test_generation_hf import sharpen
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("sharp-tiny")
    sharpen(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("mucode-cache")
    mp.setenv("MUCODE_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def gen(sharp_dir, cache):
    from mucode.generation.openvino import OpenVINOGenerator

    generator = OpenVINOGenerator.from_pretrained(str(sharp_dir), threads=2)  # int8 weights: the default
    yield generator
    generator.close()


def test_export_is_cached_with_a_manifest(gen, sharp_dir, cache):
    from mucode.generation.models import read_manifest
    from mucode.generation.openvino import export_openvino

    assert isinstance(gen, Generator)
    manifest = read_manifest(gen.folder)
    assert manifest["weight_format"] == "int8" and manifest["source"] == str(sharp_dir.resolve())
    assert gen.folder.parent == cache / "openvino" and (gen.folder / "openvino_model.xml").is_file()
    assert export_openvino(str(sharp_dir)) == gen.folder  # cached: no second export
    assert read_manifest(gen.folder)["created"] == manifest["created"]


def test_a_conversations_samples_do_not_depend_on_the_others(gen):
    together = gen.generate(CONVERSATIONS, SAMPLED, seeds=[11, 12, 13, 14])
    alone = [gen.generate([c], SAMPLED, seeds=[s])[0] for c, s in zip(CONVERSATIONS, [11, 12, 13, 14])]
    assert together == alone
    assert all(len(out) == 3 for out in together)
    assert len({c.text for c in together[0]}) > 1, "the n samples of one request should differ"
    assert gen.generate(CONVERSATIONS[::-1], SAMPLED, seeds=[14, 13, 12, 11]) == together[::-1]


def test_seeded_calls_are_reproducible_and_seeds_matter(gen, sharp_dir):
    from mucode.generation.openvino import OpenVINOGenerator

    first = gen.generate(CONVERSATIONS, SAMPLED)  # seeds derived from params.seed
    fresh = OpenVINOGenerator.from_pretrained(str(sharp_dir))
    assert fresh.generate(CONVERSATIONS, SAMPLED) == first
    other = SamplingParams(**{**SAMPLED.to_dict(), "stop": (), "seed": 6})
    assert fresh.generate(CONVERSATIONS, other) != first
    fresh.close()


@pytest.fixture(scope="module")
def stopping_dir(tmp_path_factory, sharp_dir):
    """The sharp model with <|im_end|>'s output row set to 1.5x that of the token greedy decoding picks
    first for CONVERSATIONS[0]: that reply is the end-of-turn token alone, on any CPU. (Waiting for a
    random model to sample <|im_end|> was a coin toss: 12 replies of 40 tokens from a 512-token
    vocabulary; it failed on an AVX2-only machine.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(sharp_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(sharp_dir)
    ids = torch.tensor([encode_prompt(tokenizer, CONVERSATIONS[0])])
    logits = model(ids).logits[0, -1]
    first, end = int(logits.argmax()), tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert logits[first] > 0
    with torch.no_grad():
        model.get_output_embeddings().weight[end] = 1.5 * model.get_output_embeddings().weight[first]
    assert int(model(ids).logits[0, -1].argmax()) == end
    folder = tmp_path_factory.mktemp("stopping-tiny")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_replies_stop_at_end_of_turn_and_count_it(gen, stopping_dir, cache):
    from mucode.generation.openvino import OpenVINOGenerator

    stopping = OpenVINOGenerator.from_pretrained(str(stopping_dir), threads=2)
    first = stopping.generate(CONVERSATIONS[:1], GREEDY)[0][0]
    stopping.close()
    assert (first.text, first.completion_tokens, first.finish_reason) == (
        "",
        1,
        "stop",
    )  # the end-of-turn token counts
    out = [
        c for row in gen.generate(CONVERSATIONS * 3, SamplingParams(temperature=1.0, max_new_tokens=40)) for c in row
    ]
    for c in out:
        assert "<|im_end|>" not in c.text
        assert c.completion_tokens <= 40 and (c.finish_reason == "stop" or c.completion_tokens == 40)
    assert [c.prompt_tokens for c in out[:4]] == [len(encode_prompt(gen.tokenizer, conv)) for conv in CONVERSATIONS]


def test_stop_strings_cut_the_reply(gen):
    plain = gen.generate(CONVERSATIONS, GREEDY)
    marker = next(c[0].text[2:4] for c in plain if len(c[0].text) > 4)
    cut = gen.generate(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=16, stop=(marker,)))
    for full, short in zip(plain, cut):
        assert marker not in short[0].text and full[0].text.startswith(short[0].text)


def test_progress_reports_finished_conversations(gen):
    seen: list[tuple[int, int]] = []
    gen.progress = lambda done, total: seen.append((done, total))
    try:
        gen.generate(CONVERSATIONS, GREEDY)
    finally:
        gen.progress = None
    assert seen and seen[-1] == (4, 4) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_fp32_export_greedy_matches_the_transformers_backend(sharp_dir, cache):
    from mucode.generation.hf import TransformersGenerator

    fp32 = make_generator("openvino", str(sharp_dir), weight_format="fp32")
    reference = TransformersGenerator.from_pretrained(str(sharp_dir), dtype="float32", device="cpu")
    assert fp32.generate(CONVERSATIONS, GREEDY) == reference.generate(CONVERSATIONS, GREEDY)
    fp32.close()
    reference.close()


def test_auto_picks_openvino_on_cpu_and_says_why(sharp_dir, cache, capfd):
    backend, why = choose_backend("auto", str(sharp_dir))
    assert backend == "openvino" and "OpenVINO" in why
    assert choose_backend("auto", "m.gguf")[0] == "hf"
    assert choose_backend("auto", "m", base_url="http://127.0.0.1:1/v1")[0] == "openai"
    gen = make_generator("auto", str(sharp_dir), dtype="float32", batch_size=4)  # hf-only options are dropped
    assert type(gen).__name__ == "OpenVINOGenerator"
    assert "backend auto -> openvino: no CUDA GPU" in capfd.readouterr().err
    gen.close()


def test_unknown_weight_format_is_one_line_error(sharp_dir):
    from mucode.generation.openvino import export_openvino

    with pytest.raises(ValueError, match="weight_format='int4'.*int8, fp16, fp32"):
        export_openvino(str(sharp_dir), "int4")


def _records(folder):
    import json

    timing = {"generate_s", "wall_s", "duration_s", "exec_s", "created", "time"}

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in timing and not k.endswith("_s")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [strip(json.loads(line)) for line in (folder / "trajectories.jsonl").read_text().splitlines()]


def test_the_same_seeded_rollout_command_twice_gives_the_same_records(tmp_path, sharp_dir, cache):
    import os
    import subprocess
    import sys

    def run(out):
        command = [
            sys.executable,
            "-m",
            "mucode",
            "rollout",
            "--model",
            str(sharp_dir),
            "--problems",
            "humaneval",
            "--limit",
            "3",
            "--rollouts",
            "2",
            "--turns",
            "2",
            "--temperature",
            "1.0",
            "--max-new-tokens",
            "24",
            "--workers",
            "1",
            "--timeout-s",
            "2",
            "--out",
            str(out),
        ]  # --backend auto: openvino here
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=300, env={**os.environ, "MUCODE_CACHE": str(cache)}
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "backend auto -> openvino" in done.stderr
        return _records(out)

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert len(first) == 6 and first == second
    assert len({r["turns"][0]["reply"] for r in first}) > 1
