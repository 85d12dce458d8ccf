"""The one pad-token policy (mucode.generation.padding) on real tokenizers and models: a checkpoint
shipped with pad = eos (as SmolLM2 is), or with pad = a generation_config stop token (as Qwen2.5
is), gets a pad that ends no turn in all three loading paths (generation, verifier, SFT); a
vocabulary without any candidate gets a new <|pad|> and a grown embedding; the read-only choice
for the generation engine follows the same order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mucode.generation.chat import end_of_turn_ids
from mucode.generation.models import load_model_and_tokenizer
from mucode.generation.padding import PAD_TOKEN, choose_pad_id, pad_candidate, set_pad_token


def with_pad(tiny_model_dir: Path, folder: Path, pad: str) -> Path:
    """A copy of the tiny model whose tokenizer (and model configs) ship `pad` as the pad token."""
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": pad}))
    return folder


def load_three_ways(folder: Path) -> dict[str, tuple]:
    """(model, tokenizer) as generation, the verifier and SFT load them."""
    pytest.importorskip("trl")
    from mucode.training.sft import load_generator
    from mucode.verifier.model import load_backbone

    return {
        "generation": load_model_and_tokenizer(str(folder), dtype="float32", device="cpu"),
        "verifier": load_backbone(str(folder)),
        "sft": load_generator(str(folder)),
    }


def test_pad_equal_to_eos_is_replaced_in_all_three_loading_paths(tiny_model_dir, tmp_path):
    folder = with_pad(tiny_model_dir, tmp_path / "pad-is-eos", "<|im_end|>")
    for path, (model, tokenizer) in load_three_ways(folder).items():
        stop = end_of_turn_ids(tokenizer, model)
        assert tokenizer.pad_token_id not in stop, path
        assert tokenizer.pad_token == "<|pad|>", path  # the added special token named "pad"
        assert model.config.pad_token_id == tokenizer.pad_token_id, path
        side = "left" if path == "generation" else "right"
        assert tokenizer.padding_side == side, path
    generation_model = load_three_ways(folder)["generation"][0]
    assert generation_model.generation_config.pad_token_id == generation_model.config.pad_token_id


def test_pad_equal_to_a_generation_config_stop_token_is_replaced(tiny_model_dir, tmp_path):
    # Qwen2.5 ships pad = <|endoftext|>, which its generation_config also stops on
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = with_pad(tiny_model_dir, tmp_path / "pad-is-stop", "<|endoftext|>")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert tokenizer.pad_token == "<|endoftext|>"
    assert set_pad_token(tokenizer, model, padding_side="left") == "<|pad|>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_a_qualifying_pad_is_kept_and_the_order_is_unk_named_pad_bos(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    stop = end_of_turn_ids(tokenizer)
    assert pad_candidate(tokenizer, stop) == tokenizer.convert_tokens_to_ids("<|pad|>")  # its own pad
    tokenizer.pad_token = tokenizer.eos_token
    named = tokenizer.convert_tokens_to_ids("<|pad|>")
    assert pad_candidate(tokenizer, stop) == named
    assert pad_candidate(tokenizer, [*stop, named]) == tokenizer.bos_token_id
    bos = tokenizer.bos_token_id
    assert pad_candidate(tokenizer, [*stop, named, bos]) is None
    assert choose_pad_id(tokenizer, [*stop, named, bos]) not in {*stop, named, bos}


def test_no_candidate_adds_a_pad_token_and_grows_the_embeddings_for_generation():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<eos>": 2}, unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", pad_token="<eos>")  # no unk, bos
    config = LlamaConfig(vocab_size=3, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    model = LlamaForCausalLM(config)
    assert set_pad_token(tokenizer, model, padding_side="left") == PAD_TOKEN
    assert tokenizer.pad_token_id == 3 == model.config.pad_token_id == model.generation_config.pad_token_id
    assert model.get_input_embeddings().weight.shape[0] == 4


def test_a_pad_marker_in_the_plain_vocabulary_is_used_before_adding_a_token():
    # a tokenizer converted from GGUF (the registry copy of qwen2.5-coder-0.5b) keeps <|vision_pad|> and
    # <|fim_pad|> as plain vocabulary entries; adding <|pad|> instead grew the embeddings and made every
    # LoRA checkpoint carry the embedding and output matrices (~1.1 GB for the 0.5B model)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"a": 0, "pad": 1, "<|fim_pad|>": 2, "<|vision_pad|>": 3, "<eos>": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", pad_token="<eos>")
    config = LlamaConfig(
        vocab_size=5, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, eos_token_id=4
    )
    model = LlamaForCausalLM(config)
    assert set_pad_token(tokenizer, model) == "<|fim_pad|>"  # the lowest id of the markers; the word "pad" is none
    assert tokenizer.pad_token_id == 2 == model.config.pad_token_id
    assert model.get_input_embeddings().weight.shape[0] == 5 == len(tokenizer)
    assert pad_candidate(tokenizer, [2, 4]) == 3
