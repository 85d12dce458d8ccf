"""Batched scoring with a trained verifier; usable as a plain reward function.

    scorer = VerifierScorer.load("runs/verifier", batch_size=16)
    scores = scorer.score(prompts, replies)                 # one float per (prompt, reply), input order
    scores = scorer(prompts=prompts, completions=replies)   # TRL reward-function signature (e.g. GRPO)

A prompt is a list of chat messages (the problem's first messages or a whole multi-turn state) or
a plain string (one user message); a reply is a string or a list of messages whose last one is the
reply. The scorer applies the verifier's own view (verifier.json): with context="problem" it keeps
only the messages up to the first user message; with reply_view="program" it extracts the program.
Sequences are sorted by length (longest first) and batched, so that little padding is wasted; the
scores come back in input order, and do not depend on that order. A head-only verifier whose
training cached backbone features (head.py) scores the sequences found there without running
the backbone (the head applied to the cached feature: the same number up to float rounding).
With `keep_features=True` it also adds the features of the sequences it had to encode to that
store, saved every few batches: a long scoring (the pipeline's relabeling) interrupted midway
resumes from there, and a later scoring of the same programs runs no backbone at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from mucode.verifier.model import VerifierSpec, encode, load_verifier, pad_right


if TYPE_CHECKING:
    from mucode.verifier.data import Candidate


Message = dict[str, str]
Prompt = str | Sequence[Message]
Reply = str | Sequence[Message]


class VerifierScorer:
    """Holds a verifier model (eval mode), its tokenizer and its spec; scores in batches."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        spec: VerifierSpec | None = None,
        *,
        batch_size: int = 16,
        progress: bool = False,
        features: Any = None,
        keep_features: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"got batch_size={batch_size}; it must be >= 1")
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; load the model with mucode.verifier.model.load_verifier (it sets one)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec or VerifierSpec()
        self.batch_size = batch_size
        self.progress = progress
        self.features = features  # a head.FeatureStore of this verifier's frozen backbone, or None
        self.keep_features = keep_features and features is not None

    @classmethod
    def load(
        cls,
        path: str,
        *,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str | None = None,
        progress: bool = False,
        use_features: bool = True,
        keep_features: bool = False,
    ) -> VerifierScorer:
        """A scorer for a trained verifier folder (see `load_verifier`; dtype defaults to the one it
        was trained in); a head-only verifier reuses its cached backbone features unless
        `use_features` is False, and adds those it computes to them when `keep_features`."""
        from pathlib import Path

        model, tokenizer, spec = load_verifier(path, dtype=dtype, device=device)
        features = None
        if use_features and spec.finetune == "head" and spec.features and Path(spec.features).is_file():
            from mucode.verifier.head import FeatureStore

            features = FeatureStore(Path(spec.features).parent, Path(spec.features).stem, save_every=4 * batch_size)
        return cls(
            model, tokenizer, spec, batch_size=batch_size, progress=progress, features=features,
            keep_features=keep_features,
        )  # fmt: skip

    # -- input view

    def messages(self, prompt: Prompt, reply: Reply) -> list[Message]:
        """The conversation the verifier reads for (prompt, reply), by its spec."""
        from mucode.extraction import extract_code

        chat = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if self.spec.context == "problem":
            chat = original_problem(chat)
        text = reply if isinstance(reply, str) else reply[-1]["content"]
        if self.spec.reply_view == "program":
            text = extract_code(text)
        return [*chat, {"role": "assistant", "content": text}]

    # -- scoring

    def score(self, prompts: Sequence[Prompt], replies: Sequence[Reply]) -> list[float]:
        """One reward per (prompt, reply), in input order."""
        if len(prompts) != len(replies):
            raise ValueError(f"got {len(prompts)} prompts and {len(replies)} replies; pass one prompt per reply")
        return self.score_messages([self.messages(p, r) for p, r in zip(prompts, replies)])

    def score_messages(self, conversations: Sequence[Sequence[Message]]) -> list[float]:
        """One reward per conversation (already in the verifier's view), in input order."""
        return self.score_ids([encode(self.tokenizer, c, self.spec.max_length) for c in conversations])

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """One reward per token sequence, in input order; batched longest first."""
        if self.keep_features:
            return self._through_features(sequences)
        scores = [0.0] * len(sequences)
        todo = self._from_features(sequences, scores) if self.features is not None else range(len(sequences))
        self._forward(sequences, sorted(todo, key=lambda i: len(sequences[i]), reverse=True), scores)
        return scores

    def _head_weight(self) -> Any:
        """The linear head's weight (D,) in float32, applied to cached backbone features."""
        from mucode.verifier.model import head

        return head(self.model).weight.detach().float().cpu()[0]

    def _through_features(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """The head applied to each sequence's backbone feature; missing ones are encoded and kept."""
        from mucode.verifier.head import extract_features

        if not sequences:
            return []
        weight = self._head_weight()
        features = extract_features(
            self.model, sequences, self.features, pad_id=self.tokenizer.pad_token_id,
            batch_size=self.batch_size, progress=self.progress,
        )  # fmt: skip
        return (features @ weight).tolist()

    def _from_features(self, sequences: Sequence[Sequence[int]], scores: list[float]) -> list[int]:
        """Fill the scores of sequences with a cached feature; return the indices of the others."""
        from mucode.verifier.head import sequence_key

        weight = self._head_weight()
        todo = []
        for i, seq in enumerate(sequences):
            key = sequence_key(seq)
            if key in self.features:
                scores[i] = float(self.features.get(key) @ weight)
            else:
                todo.append(i)
        return todo

    def _forward(self, sequences: Sequence[Sequence[int]], order: Sequence[int], scores: list[float]) -> None:
        import torch

        device = next(self.model.parameters()).device
        batches = range(0, len(order), self.batch_size)
        for start in _maybe_progress(batches, self.progress, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            ids, mask = pad_right([sequences[i] for i in index], self.tokenizer.pad_token_id)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
                ).logits  # (b, 1)
            for i, value in zip(index, logits.float().squeeze(-1).tolist()):
                scores[i] = value

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[Reply], **kwargs: Any) -> list[float]:
        """Reward-function form (TRL's `reward_funcs`): extra keyword arguments are ignored."""
        return self.score(prompts, completions)


def original_problem(chat: Sequence[Message]) -> list[Message]:
    """The messages up to and including the first user message (system prompt + problem)."""
    out = []
    for message in chat:
        out.append(dict(message))
        if message["role"] == "user":
            break
    return out


def _maybe_progress(batches: range, progress: bool, total: int, batch_size: int) -> Any:
    if not progress:
        return batches
    from tqdm.auto import tqdm

    return tqdm(
        batches, desc="scoring", unit="batch", total=len(batches), postfix=f"{total} sequences, {batch_size} per batch"
    )


def score_inputs(config: Any, scorer: VerifierScorer | None = None) -> tuple[Any, int]:
    """Score a rollout folder's turns (`config.turns`: all, first or final) or a JSONL file of
    rows with `prompt` and `completion` (or `reply`); write them with a `score` to `config.out`.
    `config` is a `VerifierScoreConfig`. Returns (output path, rows scored)."""
    import json
    from pathlib import Path

    source = Path(config.input)
    scorer = scorer or VerifierScorer.load(
        config.verifier, batch_size=config.batch_size, device=config.device, progress=True
    )
    if (source / "trajectories.jsonl").is_file():
        rows = _score_rollouts(scorer, source, config.turns)
    elif source.is_file():
        rows = _score_rows(scorer, source)
    else:
        raise FileNotFoundError(
            f"--input {source} is neither a rollout folder (with trajectories.jsonl) nor a JSONL file"
        )
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return out, len(rows)


def _score_rollouts(scorer: VerifierScorer, folder: Any, turns: str) -> list[dict[str, Any]]:
    from mucode.verifier.data import load_candidates

    candidates = load_candidates([folder], reply_view=scorer.spec.reply_view, context=scorer.spec.context)
    if turns != "all":
        candidates = [c for c in candidates if (c.turn == 0 if turns == "first" else c.final)]
    values = scorer.score_messages([c.messages() for c in candidates])
    return [score_record(c, v) for c, v in zip(candidates, values)]


def score_record(candidate: Candidate, score: float) -> dict[str, Any]:
    """One line of a score file: which turn of which trajectory, its labels, its score."""
    c = candidate
    return {
        "problem_id": c.problem_id,
        "rollout": c.rollout,
        "turn": c.turn,
        "final": c.final,
        "correct": c.correct,
        "label": c.label,
        "score": score,
    }


def _score_rows(scorer: VerifierScorer, path: Any) -> list[dict[str, Any]]:
    from mucode.store import read_jsonl

    rows = read_jsonl(path)
    for number, row in enumerate(rows, 1):
        if "prompt" not in row or not ("completion" in row or "reply" in row):
            raise ValueError(f"{path}: row {number} needs a `prompt` and a `completion` (or `reply`) field")
    values = scorer.score(
        [r["prompt"] for r in rows], [r["completion"] if "completion" in r else r["reply"] for r in rows]
    )
    return [{**row, "score": v} for row, v in zip(rows, values)]
