"""The verifier model and scorer on the tiny random model: reward at the last non-pad token with
left and right padding, the pad-token rule, order-invariant batched scoring, the input view, and
the reward-function form."""

from __future__ import annotations

import json
import random

import pytest


torch = pytest.importorskip("torch")

from mucode.verifier.model import VerifierSpec, encode, load_backbone, load_verifier, pad_right, set_pad_token  # noqa: E402
from mucode.verifier.scoring import VerifierScorer, original_problem, score_inputs  # noqa: E402


PROBLEM = [{"role": "user", "content": "Write add(a, b)."}]
REPLIES = [
    "```python\ndef add(a, b):\n    return a + b\n```",
    "no",
    "def add(a, b): return a - b",
    "```python\nx = 1\n```\nDone.",
    "a" * 40,
]


@pytest.fixture(scope="module")
def backbone(tiny_model_dir):
    model, tokenizer = load_backbone(str(tiny_model_dir), seed=0)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def scorer(backbone):
    model, tokenizer = backbone
    return VerifierScorer(model, tokenizer, VerifierSpec(max_length=256), batch_size=2)


def chats(n: int = 12) -> tuple[list, list]:
    rng = random.Random(0)
    prompts = [[{"role": "user", "content": f"Problem {i}: " + "words " * rng.randint(0, 20)}] for i in range(n)]
    replies = [rng.choice(REPLIES) * rng.randint(1, 3) for _ in range(n)]
    return prompts, replies


def test_backbone_has_one_label_and_an_explicit_pad_token(backbone):
    model, tokenizer = backbone
    from mucode.generation.hf import end_of_turn_ids

    assert model.config.num_labels == 1
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in end_of_turn_ids(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id and tokenizer.padding_side == "right"


def test_reward_is_read_at_the_last_real_token_with_left_or_right_padding(backbone):
    model, tokenizer = backbone
    sequences = [encode(tokenizer, [*PROBLEM, {"role": "assistant", "content": r}], 256) for r in REPLIES[:3]]
    assert len({len(s) for s in sequences}) == 3
    with torch.inference_mode():
        alone = [model(input_ids=torch.tensor([s])).logits.item() for s in sequences]
        # by hand: the head applied to the last hidden state
        by_hand = [
            model.score(model.model(input_ids=torch.tensor([s])).last_hidden_state[0, -1]).item() for s in sequences
        ]
        ids, mask = pad_right(sequences, tokenizer.pad_token_id)
        right = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).tolist()
        longest = ids.shape[1]
        left_ids = torch.stack(
            [torch.cat([torch.full((longest - len(s),), tokenizer.pad_token_id), torch.tensor(s)]) for s in sequences]
        )
        left_mask = (
            torch.arange(longest)[None, :] >= torch.tensor([longest - len(s) for s in sequences])[:, None]
        ).long()
        positions = (left_mask.cumsum(-1) - 1).clamp(min=0)
        left = model(input_ids=left_ids, attention_mask=left_mask, position_ids=positions).logits.squeeze(-1).tolist()
    assert alone == pytest.approx(by_hand, abs=1e-5)
    assert right == pytest.approx(alone, abs=1e-4)
    assert left == pytest.approx(alone, abs=1e-4)


def test_pad_token_is_never_an_end_of_turn_token(tiny_model_dir):
    model, tokenizer = load_backbone(str(tiny_model_dir))
    tokenizer.pad_token = tokenizer.eos_token  # as many checkpoints ship: the reward would be read before eos
    set_pad_token(tokenizer, model)
    assert tokenizer.pad_token == "<|pad|>" and model.config.pad_token_id == tokenizer.pad_token_id


def test_a_pad_token_is_added_when_the_vocabulary_has_no_candidate():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<eos>": 2}, unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")  # no pad, unk or bos
    config = LlamaConfig(
        vocab_size=3, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, num_labels=1
    )
    model = LlamaForSequenceClassification(config)
    assert set_pad_token(tokenizer, model) == "<|pad|>"
    assert tokenizer.pad_token_id == 3 == model.config.pad_token_id
    assert model.get_input_embeddings().weight.shape[0] == 4


def test_scores_do_not_depend_on_order_or_batch_size(scorer):
    prompts, replies = chats()
    base = scorer.score(prompts, replies)
    order = list(range(len(prompts)))
    random.Random(1).shuffle(order)
    shuffled = scorer.score([prompts[i] for i in order], [replies[i] for i in order])
    assert [shuffled[order.index(i)] for i in range(len(order))] == pytest.approx(base, abs=1e-5)
    one_by_one = VerifierScorer(scorer.model, scorer.tokenizer, scorer.spec, batch_size=1).score(prompts, replies)
    assert one_by_one == pytest.approx(base, abs=1e-5)
    assert scorer.score([], []) == []


def test_view_keeps_the_original_problem_and_can_extract_the_program(backbone):
    model, tokenizer = backbone
    state = [*PROBLEM, {"role": "assistant", "content": "first try"}, {"role": "user", "content": "Feedback: failed"}]
    assert original_problem([{"role": "system", "content": "s"}, *state]) == [
        {"role": "system", "content": "s"},
        *PROBLEM,
    ]
    paper = VerifierScorer(model, tokenizer, VerifierSpec())
    assert paper.messages(state, REPLIES[0]) == [*PROBLEM, {"role": "assistant", "content": REPLIES[0]}]
    history = VerifierScorer(model, tokenizer, VerifierSpec(context="history", reply_view="program"))
    assert history.messages(state, REPLIES[0]) == [
        *state,
        {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
    ]
    assert paper.messages("Write add.", [{"role": "assistant", "content": "x"}]) == [
        {"role": "user", "content": "Write add."},
        {"role": "assistant", "content": "x"},
    ]


def test_reward_function_form_matches_score(scorer):
    prompts, replies = chats(4)
    conversational = [[{"role": "assistant", "content": r}] for r in replies]
    assert scorer(prompts=prompts, completions=conversational, extra="ignored") == pytest.approx(
        scorer.score(prompts, replies)
    )
    with pytest.raises(ValueError, match="one prompt per reply"):
        scorer.score(prompts, replies[:2])


def test_long_sequences_keep_their_end(backbone):
    _, tokenizer = backbone
    messages = [*PROBLEM, {"role": "assistant", "content": "x " * 500}]
    full = encode(tokenizer, messages, 10_000)
    cut = encode(tokenizer, messages, 50)
    assert len(cut) == 50 and cut == full[-50:]


def test_saved_verifier_scores_rollouts_and_rows(tmp_path, backbone):
    from test_verifier_data import WORKED, write_folder

    model, tokenizer = backbone
    folder = tmp_path / "verifier"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    VerifierSpec(reply_view="program", max_length=128).save(folder)
    loaded, _, spec = load_verifier(folder, device="cpu")
    assert spec.reply_view == "program" and spec.max_length == 128

    class Config:
        verifier, batch_size, device, turns = str(folder), 4, "cpu", "final"
        input, out = str(write_folder(tmp_path / "roll", WORKED)), str(tmp_path / "scores.jsonl")

    out, n = score_inputs(Config())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert n == len(rows) == len(WORKED) and all(r["final"] and isinstance(r["score"], float) for r in rows)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": PROBLEM, "completion": REPLIES[0], "id": 7}) + "\n")
    Config.input, Config.out = str(tmp_path / "rows.jsonl"), str(tmp_path / "scored.jsonl")
    out, n = score_inputs(Config())
    row = json.loads(out.read_text())
    assert n == 1 and row["id"] == 7 and isinstance(row["score"], float)
