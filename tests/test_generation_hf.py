"""The transformers backend (plain batched `model.generate`) on the tiny random chat model, and the
backend factory.

The tiny model's own weights are so flat that greedy decoding repeats one token for any prompt;
`sharpen` redraws its matrices with a larger spread so that replies depend on the prompt, which
is what the batching, seeding and ordering tests need to mean anything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mucode.generation import Completion, Generator, SamplingParams
from mucode.generation.base import derive_seed, trim_at_stop
from mucode.generation.factory import make_generator
from mucode.generation.hf import TransformersGenerator, preferred_dtype


# Deliberately not sorted by length, with a multi-turn one, so that sorting and restoring order shows.
CONVERSATIONS = [
    [{"role": "user", "content": "Write a Python function add(a, b)."}],
    [{"role": "user", "content": "def"}],
    [
        {"role": "system", "content": "You write Python code."},
        {"role": "user", "content": "Write a Python function. assert add(1, 2) == 3"},
        {"role": "assistant", "content": "```python\ndef add(a, b):\n    return a + b\n```"},
        {"role": "user", "content": "The test failed; fix it."},
    ],
    [{"role": "user", "content": "code code"}],
    [{"role": "user", "content": "```python\nreturn a + b\n```"}],
]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)
LONG_GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)
SAMPLED = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=5)


def sharpen(model: torch.nn.Module, seed: int = 0, std: float = 0.5) -> torch.nn.Module:
    """Redraw every weight matrix from N(0, std^2): peaked, prompt-dependent logits."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
    return model


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return sharpen(model), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def gen(model_and_tokenizer) -> TransformersGenerator:
    model, tokenizer = model_and_tokenizer
    return TransformersGenerator(model, tokenizer, batch_size=3, device="cpu")


def test_is_a_generator(gen):
    assert isinstance(gen, Generator)
    assert gen.stop_ids == [gen.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert gen.pad_id == gen.tokenizer.pad_token_id


def test_batched_left_padded_greedy_matches_one_at_a_time(gen, model_and_tokenizer):
    batched = gen.generate(CONVERSATIONS, GREEDY)
    single = TransformersGenerator(*model_and_tokenizer, batch_size=1)
    alone = [single.generate([c], GREEDY)[0] for c in CONVERSATIONS]
    assert batched == alone
    assert len({out[0].text for out in batched}) > 1, "replies should depend on the prompt (sharpened model)"


def test_order_preserved_after_length_sorting(gen):
    lengths = [len(gen.encode(c)) for c in CONVERSATIONS]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
    out = gen.generate(CONVERSATIONS, GREEDY)
    assert [o[0].prompt_tokens for o in out] == lengths


def test_n_samples(gen):
    out = gen.generate(CONVERSATIONS[:2], SamplingParams(n=4, temperature=1.0, max_new_tokens=8))
    assert [len(o) for o in out] == [4, 4]
    assert all(isinstance(c, Completion) for o in out for c in o)
    assert len({c.text for c in out[0]}) > 1


def test_seeded_sampling_is_reproducible(gen):
    params = SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=7)
    first = gen.generate(CONVERSATIONS, params)
    assert gen.generate(CONVERSATIONS, params) == first
    other = gen.generate(CONVERSATIONS, SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=8))
    assert other != first


def test_sampling_does_not_touch_global_rng(gen):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    gen.generate(CONVERSATIONS[:1], SamplingParams(temperature=1.0, max_new_tokens=4))
    assert torch.equal(torch.rand(3), expected)


def test_stop_string_trims_the_reply(gen):
    full = gen.generate(CONVERSATIONS[:1], GREEDY)[0][0].text
    stop = next(full[k : k + 2] for k in range(2, len(full) - 1) if full[k : k + 2].isalnum())  # an ASCII piece inside
    params = SamplingParams(temperature=0.0, max_new_tokens=16, stop=(stop,))
    out = gen.generate(CONVERSATIONS[:1], params)[0][0]
    assert out.text == full[: full.index(stop)]
    assert out.finish_reason == "stop"
    assert out.completion_tokens < 16
    assert gen.generate(CONVERSATIONS, params)[0][0] == out  # the same inside a padded batch


def test_end_of_turn_token_stops_and_is_counted(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    gen = TransformersGenerator(model, tokenizer)
    prompt = torch.tensor([gen.encode(CONVERSATIONS[0])])
    ids = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=8, pad_token_id=gen.pad_id
    )[0, prompt.shape[1] :].tolist()
    k = next(k for k in range(1, len(ids)) if ids[k] not in ids[:k])  # first token not seen before position k
    gen.stop_ids = [ids[k]]  # pretend it is the end-of-turn token
    out = gen.generate(CONVERSATIONS[:1], SamplingParams(temperature=0.0, max_new_tokens=8))[0][0]
    assert out.text == tokenizer.decode(ids[:k], skip_special_tokens=True)
    assert (out.completion_tokens, out.finish_reason) == (k + 1, "stop")


def test_length_finish_and_token_counts(gen):
    out = gen.generate(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=5))
    for conversation, (c,) in zip(CONVERSATIONS, out):
        assert (c.completion_tokens, c.finish_reason) == (5, "length")
        assert c.prompt_tokens == len(gen.encode(conversation))


@pytest.mark.parametrize("pad", ["eos", "none"])
def test_pad_token_equal_to_end_of_turn_changes_nothing(tiny_model_dir, model_and_tokenizer, pad):
    """A pad token that is the eos (as many checkpoints ship), or none at all (prepare_tokenizer picks
    one), gives the same replies and counts, also for a row that ends on a stop string and is then padded."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token if pad == "eos" else None
    gen = TransformersGenerator(model_and_tokenizer[0], tokenizer, batch_size=5)
    assert gen.pad_id is not None and (pad == "none" or gen.pad_id in gen.stop_ids)
    reference = TransformersGenerator(*model_and_tokenizer, batch_size=1)
    assert gen.generate(CONVERSATIONS, LONG_GREEDY) == reference.generate(CONVERSATIONS, LONG_GREEDY)
    full = reference.generate(CONVERSATIONS[:1], LONG_GREEDY)[0][0].text
    stop = next(full[k : k + 2] for k in range(2, len(full) - 1) if full[k : k + 2].isalnum())
    params = SamplingParams(temperature=0.0, max_new_tokens=24, stop=(stop,))
    cut = gen.generate(CONVERSATIONS, params)
    assert cut == reference.generate(CONVERSATIONS, params)
    assert cut[0][0].completion_tokens < 24 and cut[0][0].finish_reason == "stop"


def test_trim_at_stop():
    assert trim_at_stop("abc```def", ("```", "c")) == ("ab", True)
    assert trim_at_stop("abc", ("x", "")) == ("abc", False)


def test_from_pretrained_and_close(tiny_model_dir):
    gen = make_generator("transformers", str(tiny_model_dir), dtype="bfloat16", device="cpu", batch_size=2)
    assert isinstance(gen, TransformersGenerator) and gen.model.dtype == torch.bfloat16
    out = gen.generate(CONVERSATIONS[:3], SamplingParams(n=2, temperature=0.7, max_new_tokens=3))
    assert [len(o) for o in out] == [2, 2, 2]
    gen.close()
    assert gen.model is None


def test_factory_errors():
    with pytest.raises(ValueError, match="auto, hf, transformers, openvino, openai, vllm"):
        make_generator("llamacpp", "m")
    with pytest.raises(ValueError, match="base_url"):
        make_generator("openai", "m")


def test_vllm_missing_gives_install_hint():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(ImportError, match=r"pip install 'mucode\[vllm\]'"):
        make_generator("vllm", "m")


def test_import_is_cheap():
    code = "import sys, mucode.generation, mucode.generation.factory; print(sorted({'torch', 'transformers', 'httpx', 'vllm', 'openvino', 'openvino_genai'} & set(sys.modules)))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


# --- per-request seeds inside one model.generate batch -----------------------------------------------


def test_sampled_row_independent_of_batch_and_order(model_and_tokenizer):
    """A conversation's seeded samples are the same alone and inside any batch, in any order."""
    alone = [
        TransformersGenerator(*model_and_tokenizer, batch_size=3).generate([c], SAMPLED, seeds=[100 + k])[0]
        for k, c in enumerate(CONVERSATIONS)
    ]
    for batch_size in (1, 4, 15):
        gen = TransformersGenerator(*model_and_tokenizer, batch_size=batch_size)
        order = [3, 0, 4, 2, 1]
        out = gen.generate([CONVERSATIONS[k] for k in order], SAMPLED, seeds=[100 + k for k in order])
        assert [out[order.index(k)] for k in range(len(CONVERSATIONS))] == alone
    assert all(len({c.text for c in samples}) > 1 for samples in alone[:2])  # n samples differ from each other


def test_different_seeds_in_one_batch_are_honoured(gen):
    """The same prompt twice in one batch: different seeds give different samples, equal seeds equal ones."""
    params = SamplingParams(temperature=1.0, max_new_tokens=12)
    twice = [CONVERSATIONS[0], CONVERSATIONS[0]]
    differ = gen.generate(twice, params, seeds=[1, 2])
    assert differ[0] != differ[1]
    same = gen.generate(twice, params, seeds=[1, 1])
    assert same[0] == same[1] == differ[0]


def test_seeds_default_to_params_seed_and_index(gen):
    default = gen.generate(CONVERSATIONS[:3], SAMPLED)
    explicit = gen.generate(CONVERSATIONS[:3], SAMPLED, seeds=[derive_seed(SAMPLED.seed, i) for i in range(3)])
    assert default == explicit
    assert gen.generate(CONVERSATIONS[:3], SAMPLED, seeds=[1, 2, 3]) != default
    with pytest.raises(ValueError, match="2 seeds for 3 conversations"):
        gen.generate(CONVERSATIONS[:3], SAMPLED, seeds=[1, 2])


def test_top_p_restricts_to_the_top_token(gen):
    """A tiny top_p keeps only the most likely token: sampling then equals greedy decoding."""
    greedy = gen.generate(CONVERSATIONS, GREEDY)
    narrow = gen.generate(CONVERSATIONS, SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=16, seed=3))
    assert narrow == greedy


def test_generation_config_sampling_defaults_are_not_applied(tiny_model_dir):
    """A checkpoint's top_k / repetition penalty / temperature defaults do not change what is sampled."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def generator(defaults: dict) -> TransformersGenerator:
        model = sharpen(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
        for key, value in defaults.items():
            setattr(model.generation_config, key, value)
        return TransformersGenerator(model, AutoTokenizer.from_pretrained(tiny_model_dir), batch_size=5)

    plain = generator({}).generate(CONVERSATIONS, SAMPLED)
    skewed = generator({"do_sample": True, "top_k": 1, "repetition_penalty": 5.0, "temperature": 0.1})
    assert skewed.generate(CONVERSATIONS, SAMPLED) == plain


def test_finished_rows_stop_while_others_go_on(model_and_tokenizer):
    """A row that hits the end-of-turn token early ends there while the others go on."""
    model, _ = model_and_tokenizer
    gen = TransformersGenerator(*model_and_tokenizer, batch_size=5)
    prompt = torch.tensor([gen.encode(CONVERSATIONS[1])])
    ids = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=24, pad_token_id=gen.pad_id
    )[0, prompt.shape[1] :].tolist()
    k = next(k for k in range(2, len(ids)) if ids[k] not in ids[:k])
    gen.stop_ids = [ids[k]]  # pretend it is the end-of-turn token: conversation 1 ends after k + 1 tokens
    out = gen.generate(CONVERSATIONS, LONG_GREEDY)
    assert (out[1][0].completion_tokens, out[1][0].finish_reason) == (k + 1, "stop")
    assert any(o[0].completion_tokens > k + 1 for o in out)
    alone = TransformersGenerator(*model_and_tokenizer, batch_size=1)
    alone.stop_ids = gen.stop_ids
    assert out == alone.generate(CONVERSATIONS, LONG_GREEDY)


def test_progress_reports_finished_conversations_per_batch(model_and_tokenizer):
    from mucode.generation.base import attach_progress

    gen = TransformersGenerator(*model_and_tokenizer, batch_size=2)
    seen: list[tuple[int, int]] = []
    assert attach_progress(gen, lambda done, total: seen.append((done, total)))
    gen.generate(CONVERSATIONS, SamplingParams(n=2, temperature=1.0, max_new_tokens=8))
    assert len(seen) == 5 and seen[-1] == (5, 5) and [d for d, _ in seen] == sorted(d for d, _ in seen)


# --- precision ----------------------------------------------------------------------------------------


def test_preferred_dtype_follows_the_cpu_flags():
    flags = open("/proc/cpuinfo").read() if sys.platform == "linux" else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert preferred_dtype("cpu") == ("bfloat16" if native else "float32")


def test_default_dtype_is_the_preferred_one_and_float32_when_asked(tiny_model_dir):
    default = TransformersGenerator.from_pretrained(str(tiny_model_dir), device="cpu")
    assert default.model.dtype == getattr(torch, preferred_dtype("cpu"))
    exact = TransformersGenerator.from_pretrained(str(tiny_model_dir), device="cpu", dtype="float32")
    assert exact.model.dtype == torch.float32
    default.close()
    exact.close()


def test_bfloat16_batched_sampling_is_seeded_and_stops(model_and_tokenizer):
    """The bf16 path: n samples per prompt, reproducible per seed, replies end at the end-of-turn id."""
    import copy

    model, tokenizer = model_and_tokenizer
    gen = TransformersGenerator(copy.deepcopy(model).to(torch.bfloat16), tokenizer, batch_size=4)
    assert gen.model.dtype == torch.bfloat16
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=40, seed=1)
    first = gen.generate(CONVERSATIONS * 2, params)
    assert gen.generate(CONVERSATIONS * 2, params) == first
    assert [len(o) for o in first] == [3] * 10 and len({c.text for c in first[0]}) > 1
    assert gen.generate(CONVERSATIONS * 2, SamplingParams(n=3, temperature=1.0, max_new_tokens=40, seed=2)) != first
    replies = [c for o in first for c in o]
    assert all(c.finish_reason == "stop" or c.completion_tokens == 40 for c in replies)
    stopped = [c for c in replies if c.finish_reason == "stop"]
    assert stopped, "some sampled replies should end with <|im_end|>"
    assert all("<|im_end|>" not in c.text for c in replies)


def test_the_same_seeded_hf_rollout_command_twice_gives_the_same_records(tmp_path, tiny_model_dir):
    """End to end through `mucode rollout --backend hf` in bf16 (several episodes per generate batch)."""
    import json
    import os

    def records(out):
        command = [
            sys.executable,
            "-m",
            "mucode",
            "rollout",
            "--backend",
            "hf",
            "--dtype",
            "bfloat16",
            "--model",
            str(tiny_model_dir),
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
            "16",
            "--workers",
            "1",
            "--timeout-s",
            "2",
            "--out",
            str(out),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ))
        assert done.returncode == 0, done.stderr[-2000:]
        lines = (out / "trajectories.jsonl").read_text().splitlines()
        return [[(t["reply"], t.get("completion_tokens")) for t in json.loads(line)["turns"]] for line in lines]

    first, second = records(tmp_path / "a"), records(tmp_path / "b")
    assert len(first) == 6 and first == second
    assert len({turns[0][0] for turns in first}) > 1
