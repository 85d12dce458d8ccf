"""Verifier data from stored trajectories (METHOD.md §2, step 2): labeled turns for BCE and
(correct, incorrect) pairs for Bradley-Terry, exported in the formats TRL's trainers read.

    candidates = load_candidates(["runs/iter0", "runs/iter1"])      # every turn of every trajectory
    rows = labeled(candidates)                                        # BCE rows
    pairs, stats = build_pairs(candidates, k=32, seed=0)              # BT pairs, counts per class
    write_records([pair_record(p) for p in pairs], "data/pairs.jsonl")

Labels. A turn's `correct` says whether its program passes all its tests, public and private
(the paper's rule; rollouts.md).
- positive: the final turn of a successful trajectory (its final program is correct);
- negative: every turn whose program is not correct (`correct` is False), final or not;
- unused: a turn whose private tests were not run (`correct` is None). (A correct turn is always
  final now: it passed the public tests, so the episode stopped there.)

Pairs. Per (folder, problem) group that has both classes: every (positive, negative) combination
in a fixed order (rollout, then turn); all of them if there are at most k, else k drawn without
replacement with `random.Random(f"{seed}:{folder index}:{problem id}")` (with `replacement=True`,
the reference code's sampling: k draws of a positive and a negative, repeats allowed). Seeding per group
keeps a problem's pairs the same whatever other problems or folders are loaded, and whatever
order the rollout engine stored trajectories in. Folders are kept apart (pairs accumulate over
iterations, METHOD.md §2): a problem seen in two folders gets up to k pairs from each.
Groups with one class only (or none) give no pairs; `DataStats` counts them.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mucode.verifier.config import Context, ReplyView


Message = dict[str, str]  # {"role": ..., "content": ...}
GroupKey = tuple[int, str]  # (folder index, problem id)


@dataclass(frozen=True)
class Candidate:
    """One turn of one stored trajectory, as the verifier reads it.

    source: index of the trajectory folder (the iteration) it comes from. turn: 0-based.
    prompt: the messages before the reply (the original problem, or the whole history when
    context="history"). completion: the raw reply, or its extracted program.
    correct: the turn's program passes the private tests (None: not run). label: True
    (positive), False (negative) or None (unused), by the rules in the module docstring.
    """

    problem_id: str
    source: int
    rollout: int
    turn: int
    n_turns: int
    correct: bool | None
    prompt: tuple[Mapping[str, str], ...]
    completion: str

    @property
    def final(self) -> bool:
        return self.turn == self.n_turns - 1

    @property
    def label(self) -> bool | None:
        return turn_label(self.turn, self.n_turns, self.correct)

    @property
    def group(self) -> GroupKey:
        return (self.source, self.problem_id)

    @property
    def ref(self) -> tuple[int, str, int, int]:
        """(folder index, problem id, rollout, turn): unique per candidate."""
        return (self.source, self.problem_id, self.rollout, self.turn)

    def messages(self) -> list[Message]:
        """The prompt followed by the completion as the assistant message."""
        return [dict(m) for m in self.prompt] + [{"role": "assistant", "content": self.completion}]


@dataclass(frozen=True)
class Pair:
    """A Bradley-Terry pair: a positive and a negative candidate of the same problem and folder."""

    chosen: Candidate
    rejected: Candidate


@dataclass
class DataStats:
    """Counts over (folder, problem) groups: a problem seen in two folders counts twice.

    both / positive_only / negative_only / unlabeled: groups with both classes, only
    positives, only negatives, no labeled turn. positives, negatives, unused_turns: turns.
    duplicates: labeled turns dropped as repeats (dedupe). pairs: pairs built.
    """

    problems: int = 0
    both: int = 0
    positive_only: int = 0
    negative_only: int = 0
    unlabeled: int = 0
    positives: int = 0
    negatives: int = 0
    unused_turns: int = 0
    duplicates: int = 0
    pairs: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.problems} problems: {self.both} with both classes, {self.positive_only} only correct, "
            f"{self.negative_only} only incorrect, {self.unlabeled} unlabeled; {self.positives} positive and "
            f"{self.negatives} negative turns ({self.unused_turns} unused, {self.duplicates} duplicates dropped); {self.pairs} pairs"
        )


# ---------------------------------------------------------------------------------- candidates


def _all_tests(turn: Mapping[str, Any]) -> bool | None:
    """A stored turn's all-tests verdict: records written before the all-tests rule stored the
    private verdict alone in `correct`, so a turn whose public result failed is not correct."""
    correct = turn.get("correct")
    if correct and "public" in turn and not (turn["public"] or {}).get("passed"):
        return False
    return correct


def turn_label(turn: int, n_turns: int, correct: bool | None) -> bool | None:
    """True for the final turn of a successful trajectory, False for a turn whose program is not
    correct, None (unused) otherwise. `turn` is 0-based; the trajectory is successful iff its
    final turn is correct."""
    if correct is False:
        return False
    if correct is True and turn == n_turns - 1:
        return True
    return None


def candidates_from_records(
    records: Iterable[Mapping[str, Any]],
    *,
    source: int = 0,
    reply_view: ReplyView = "reply",
    context: Context = "problem",
) -> list[Candidate]:
    """Every turn of every trajectory record (rollouts.md format), sorted by (problem, rollout, turn)."""
    _check_view(reply_view, context)
    out = []
    for record in records:
        turns = record["turns"]
        for i, turn in enumerate(turns):
            out.append(
                Candidate(
                    problem_id=str(record["problem_id"]),
                    source=source,
                    rollout=int(record["rollout"]),
                    turn=i,
                    n_turns=len(turns),
                    correct=_all_tests(turn),
                    prompt=tuple(_prompt(record, i, context)),
                    completion=turn["reply"] if reply_view == "reply" else turn["program"],
                )
            )
    return sorted(out, key=lambda c: c.ref)


def load_candidates(
    folders: Sequence[str | Path], *, reply_view: ReplyView = "reply", context: Context = "problem"
) -> list[Candidate]:
    """Candidates of several rollout folders; folder i gets source=i."""
    from mucode.store import read_trajectories

    if not folders:
        raise ValueError(
            "no trajectory folders given; pass --trajectories DIR[,DIR...] (folders written by `mucode rollout`)"
        )
    out: list[Candidate] = []
    for source, folder in enumerate(folders):
        if not (Path(folder) / "trajectories.jsonl").is_file():
            raise FileNotFoundError(
                f"{folder} holds no trajectories.jsonl; pass folders written by `mucode rollout --out`"
            )
        out += candidates_from_records(
            read_trajectories(folder), source=source, reply_view=reply_view, context=context
        )
    return out


def _prompt(record: Mapping[str, Any], turn: int, context: Context) -> list[Message]:
    """The original prompt messages, plus (context="history") each earlier reply and its feedback."""
    messages = [dict(m) for m in record["prompt"]]
    if context == "history":
        for earlier in record["turns"][:turn]:
            messages += [
                {"role": "assistant", "content": earlier["reply"]},
                {"role": "user", "content": earlier.get("feedback") or ""},
            ]
    return messages


def _check_view(reply_view: str, context: str) -> None:
    if reply_view not in ("reply", "program"):
        raise ValueError(f"got reply_view={reply_view!r}; choose 'reply' or 'program'")
    if context not in ("problem", "history"):
        raise ValueError(f"got context={context!r}; choose 'problem' or 'history'")


# ------------------------------------------------------------------------------ rows and pairs


def group_by_problem(candidates: Iterable[Candidate]) -> dict[GroupKey, list[Candidate]]:
    """Candidates per (folder, problem), groups and members in sorted order."""
    groups: dict[GroupKey, list[Candidate]] = defaultdict(list)
    for c in sorted(candidates, key=lambda c: c.ref):
        groups[c.group].append(c)
    return dict(sorted(groups.items()))


def _classes(group: Sequence[Candidate], dedupe: bool) -> tuple[list[Candidate], list[Candidate], int]:
    """(positives, negatives, duplicates dropped) of one group."""
    positives = [c for c in group if c.label is True]
    negatives = [c for c in group if c.label is False]
    if not dedupe:
        return positives, negatives, 0
    unique_pos, unique_neg = _unique(positives), _unique(negatives)
    return unique_pos, unique_neg, len(positives) + len(negatives) - len(unique_pos) - len(unique_neg)


def _unique(candidates: Sequence[Candidate]) -> list[Candidate]:
    seen: set[tuple[str, str]] = set()
    out = []
    for c in candidates:
        key = (json.dumps(c.prompt, sort_keys=True), c.completion)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def labeled(candidates: Iterable[Candidate], dedupe: bool = False) -> list[Candidate]:
    """The BCE rows: positives and negatives (unused turns dropped), sorted by ref."""
    rows = []
    for group in group_by_problem(candidates).values():
        positives, negatives, _ = _classes(group, dedupe)
        rows += positives + negatives
    return sorted(rows, key=lambda c: c.ref)


def build_pairs(
    candidates: Iterable[Candidate], k: int = 32, seed: int = 0, dedupe: bool = False, replacement: bool = False
) -> tuple[list[Pair], DataStats]:
    """Up to k (positive, negative) pairs per (folder, problem) group, and counts (see module
    docstring). replacement=True (the reference code): exactly k pairs per group, each a seeded
    draw of one positive and one negative, so a group with few combinations repeats them."""
    if k < 1:
        raise ValueError(f"got k={k}; it must be >= 1")
    stats = DataStats()
    pairs: list[Pair] = []
    for (source, problem_id), group in group_by_problem(candidates).items():
        positives, negatives, duplicates = _classes(group, dedupe)
        _count(stats, group, positives, negatives, duplicates)
        combos = [Pair(p, n) for p in positives for n in negatives]
        rng = random.Random(f"{seed}:{source}:{problem_id}")
        if replacement and combos:
            combos = [Pair(rng.choice(positives), rng.choice(negatives)) for _ in range(k)]
        elif len(combos) > k:
            combos = rng.sample(combos, k)
        pairs += combos
    stats.pairs = len(pairs)
    return pairs, stats


def _count(
    stats: DataStats,
    group: Sequence[Candidate],
    positives: Sequence[Candidate],
    negatives: Sequence[Candidate],
    duplicates: int,
) -> None:
    stats.problems += 1
    stats.both += bool(positives and negatives)
    stats.positive_only += bool(positives and not negatives)
    stats.negative_only += bool(negatives and not positives)
    stats.unlabeled += not (positives or negatives)
    stats.positives += len(positives)
    stats.negatives += len(negatives)
    stats.unused_turns += sum(c.label is None for c in group)
    stats.duplicates += duplicates


# ---------------------------------------------------------------------------------- the split


def split_problems(problem_ids: Iterable[str], holdout_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train ids, held-out ids), both sorted: round(fraction * n) distinct problems drawn with
    `random.Random(seed)` are held out (at least one when the fraction is > 0 and n > 1)."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"got holdout_fraction={holdout_fraction}; it must be in [0, 1)")
    ids = sorted(set(problem_ids))
    n_held = round(holdout_fraction * len(ids))
    if holdout_fraction > 0 and n_held == 0 and len(ids) > 1:
        n_held = 1
    shuffled = list(ids)
    random.Random(seed).shuffle(shuffled)
    held = set(shuffled[:n_held])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def restrict(candidates: Iterable[Candidate], problem_ids: Iterable[str]) -> list[Candidate]:
    """The candidates of the given problems."""
    keep = set(problem_ids)
    return [c for c in candidates if c.problem_id in keep]


# ------------------------------------------------------------------------------------- export


def pair_record(pair: Pair) -> dict[str, Any]:
    """A conversational preference row for TRL's RewardTrainer. When both sides share their
    prompt (context="problem"): explicit prompt, `prompt` + one-message `chosen`/`rejected`;
    otherwise (histories differ) implicit prompt: `chosen`/`rejected` are whole conversations."""
    chosen, rejected = pair.chosen, pair.rejected
    meta = {"problem_id": chosen.problem_id, "chosen_ref": _where(chosen), "rejected_ref": _where(rejected)}
    if chosen.prompt == rejected.prompt:
        return {
            "prompt": [dict(m) for m in chosen.prompt],
            "chosen": [{"role": "assistant", "content": chosen.completion}],
            "rejected": [{"role": "assistant", "content": rejected.completion}],
            **meta,
        }
    return {"chosen": chosen.messages(), "rejected": rejected.messages(), **meta}


def row_record(candidate: Candidate) -> dict[str, Any]:
    """A conversational prompt/completion/label row (TRL's unpaired preference format)."""
    if candidate.label is None:
        raise ValueError(f"candidate {candidate.ref} has no label; pass labeled candidates (see `labeled`)")
    return {
        "prompt": [dict(m) for m in candidate.prompt],
        "completion": [{"role": "assistant", "content": candidate.completion}],
        "label": bool(candidate.label),
        "problem_id": candidate.problem_id,
        "ref": _where(candidate),
    }


def _where(candidate: Candidate) -> dict[str, int]:
    """Where a candidate comes from, besides its problem: folder index, rollout, turn (0-based)."""
    return {"source": candidate.source, "rollout": candidate.rollout, "turn": candidate.turn}


def pair_records(pairs: Iterable[Pair]) -> list[dict[str, Any]]:
    """`pair_record` of each pair, with one format for all rows: explicit prompt only if every
    pair shares its prompt, so that the file loads as one table."""
    pairs = list(pairs)
    records = [pair_record(p) for p in pairs]
    if any("prompt" in r for r in records) and not all("prompt" in r for r in records):
        records = [
            {**r, "chosen": p.chosen.messages(), "rejected": p.rejected.messages()} for r, p in zip(records, pairs)
        ]
        for r in records:
            r.pop("prompt", None)
    return records


def write_records(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as JSON lines (.jsonl) or Parquet (.parquet); both load with
    `datasets.load_dataset("json" | "parquet", data_files=path)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif path.suffix == ".parquet":
        import datasets

        datasets.Dataset.from_list(list(records)).to_parquet(str(path))
    else:
        raise ValueError(f"cannot write {path}: use a .jsonl or .parquet file name")
    return path


# ------------------------------------------------------------------------- one config's data


@dataclass
class PreparedData:
    """The problem split of one config and the data of each side: Bradley-Terry pairs, BCE
    rows (labeled candidates) and their counts."""

    train_ids: list[str]
    heldout_ids: list[str]
    train_pairs: list[Pair]
    train_rows: list[Candidate]
    train_stats: DataStats
    heldout_pairs: list[Pair]
    heldout_rows: list[Candidate]
    heldout_stats: DataStats


def prepare_data(config: Any, candidates: Sequence[Candidate] | None = None) -> PreparedData:
    """Split `config.trajectories` by problem and build pairs and rows on both sides.
    `config` is a `VerifierDataConfig` (or subclass); `candidates` replace the folders' turns."""
    if candidates is None:
        candidates = load_candidates(config.trajectories, reply_view=config.reply_view, context=config.context)
    train_ids, heldout_ids = split_problems((c.problem_id for c in candidates), config.holdout_fraction, config.seed)
    sides = []
    for ids in (train_ids, heldout_ids):
        part = restrict(candidates, ids)
        pairs, stats = build_pairs(
            part, config.pairs_per_problem, config.seed, config.dedupe, config.pairs_with_replacement
        )
        sides.append((pairs, labeled(part, config.dedupe), stats))
    (train_pairs, train_rows, train_stats), (held_pairs, held_rows, held_stats) = sides
    return PreparedData(
        train_ids, heldout_ids, train_pairs, train_rows, train_stats, held_pairs, held_rows, held_stats
    )


def export_data(data: PreparedData, folder: str | Path, suffix: str = ".jsonl") -> list[Path]:
    """Write {train,heldout}_pairs (RewardTrainer format), {train,heldout}_rows
    (prompt/completion/label) and stats.json into `folder`; returns the data files."""
    folder = Path(folder)
    written = []
    for side, pairs, rows in (
        ("train", data.train_pairs, data.train_rows),
        ("heldout", data.heldout_pairs, data.heldout_rows),
    ):
        if side == "heldout" and not data.heldout_ids:
            continue
        written.append(write_records(pair_records(pairs), folder / f"{side}_pairs{suffix}"))
        written.append(write_records([row_record(c) for c in rows], folder / f"{side}_rows{suffix}"))
    stats = {"train": data.train_stats.to_dict(), "heldout": data.heldout_stats.to_dict()}
    (folder / "stats.json").write_text(json.dumps(stats, indent=2))
    return written
