"""Relabeling: stored trajectories -> SFT examples for the generator (METHOD.md §2, step 3).

    mucode generator relabel --trajectories runs/it0 runs/it1 --verifier runs/v1 --out runs/sft1.jsonl

    trajectories = load_trajectories(["runs/it0", "runs/it1"])
    scores = score_final_programs(trajectories, VerifierScorer.load("runs/v1"))
    result = relabel(trajectories, "mucode", scores, RelabelOptions(top_m=3))
    write_examples(result.examples, "runs/sft1.jsonl")

Methods (the same output format, so that every generator is trained the same way):

- `mucode`, the local search expert. Per problem the expert is the final program (the last
  turn's reply) ranked highest over all trajectories of all folders by `expert_rank`:
  `combined` = 100 * oracle label + verifier score (the paper), `verifier` = score only,
  `oracle` = label only. Every successful trajectory is kept, each of its states targeting its own
  final reply (source "own"); the `top_m` failed trajectories of each folder with the highest
  verifier scores get the expert reply on every state (source "expert"). Problems without a
  correct final program are dropped (`unsolved="drop"`) or keep the best-ranked incorrect program
  as their expert (`"keep"`, as the reference code does; METHOD.md §5).
- `multi-star` (multi-turn RFT): successful trajectories only, every state -> its own final reply.
- `star` (single-turn RFT): every correct first-turn program, state 0 -> that reply.

A state i (0-based) is the chat the model saw before turn i (`Episode.state(i)`): the original
prompt, then each earlier reply and its feedback. A trajectory of n turns has states 0..n-1.
Ties in a ranking are broken by a draw from `random.Random(f"{seed}:{problem id}")`, so a problem's
examples do not depend on the other problems loaded or on the order trajectories were stored in.
Trajectories whose final correctness is unknown (private tests not run) or whose sandbox failed
are left out and counted. Several folders (iterations) relabeled together: the expert is
chosen over all of them, the top-m failed trajectories per folder, and repeated (prompt,
completion) examples are kept once. That is not the paper's union (D0 relabeled by V0 kept as it
was, plus D1 relabeled by V1): `mucode.pipeline` builds that one from one folder per iteration
(`union="paper"`) and uses several folders at once only for `union="relabel-all"`.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Sequence

from mucode.config import option
from mucode.episode import Episode


if TYPE_CHECKING:
    from mucode.verifier.scoring import VerifierScorer

Message = dict[str, str]
Method = Literal["mucode", "multi-star", "star"]
ExpertRank = Literal["combined", "verifier", "oracle"]
Unsolved = Literal["drop", "keep"]
TrajectoryKey = tuple[int, str, int]  # (folder index, problem id, rollout)

METHODS = ("mucode", "multi-star", "star")
ORACLE_WEIGHT = 100.0  # combined rank = 100 * label + score: any correct program beats any incorrect one


@dataclass
class RelabelOptions:
    """How the expert is chosen and which trajectories it is attached to (method `mucode`).

    top_m: failed trajectories per folder and problem that get the expert reply.
    expert_rank: combined (100 * oracle label + verifier score, paper) | verifier | oracle.
    unsolved: problems without a correct final program: drop them, or keep the best-ranked one.
    dedupe: keep one copy of repeated (prompt, completion) examples.
    seed: breaks ties in the rankings (per problem).
    """

    top_m: int = option(3, "Failed trajectories per folder and problem that are relabeled with the expert program.")
    expert_rank: ExpertRank = option(
        "combined",
        "How the expert program is ranked: combined (100 * oracle label + verifier score, paper), verifier (score only) or oracle (label only).",
        choices=["combined", "verifier", "oracle"],
    )
    unsolved: Unsolved = option(
        "drop",
        "Problems with no correct program: drop them, or keep the best-ranked incorrect program as their expert (reference code).",
        choices=["drop", "keep"],
    )
    dedupe: bool = option(True, "Keep one copy of repeated (prompt, completion) examples.")
    seed: int = option(0, "Breaks ties in the rankings (seeded per problem).")

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)  # a config that also extends another options class
        if parent is not None:
            parent()
        if self.top_m < 0:
            raise ValueError(f"got top_m={self.top_m}; it must be >= 0 (0 = no failed trajectory is relabeled)")


@dataclass
class RelabelConfig(RelabelOptions):
    """Parameters of `mucode generator relabel` (saved as OUT's `.config.yaml` sibling).

    Parameters that control the data:
        trajectories (rollout folders, one per iteration), method (mucode | multi-star | star)
    Parameters that control the scores (methods mucode):
        verifier (a trained verifier folder) or scores (`mucode verifier score --turns final`
        files, one per folder, in the same order), batch_size, device
    Parameters that control the output:
        out (.jsonl or .parquet)
    """

    trajectories: list[str] = option(
        help="Rollout folders holding trajectories.jsonl, one per iteration (--trajectories a b c, or a,b,c).",
        factory=list,
    )
    method: Method = option(
        "mucode",
        "mucode (local search expert), multi-star (successful trajectories only) or star (correct first turns only).",
        choices=METHODS,
    )
    verifier: str | None = option(
        None,
        "Trained verifier folder, or a `mucode serve --verifier` URL, that scores the final programs (method mucode).",
    )
    scores: list[str] = option(
        help="Instead of --verifier: score files of `mucode verifier score --turns final`, one per folder, same order (comma-separated).",
        factory=list,
    )
    out: str = option("sft.jsonl", "Output file of SFT examples (.jsonl or .parquet).")
    batch_size: int = option(16, "Verifier: sequences per forward pass.")
    device: str | None = option(None, "Verifier: torch device (default: cuda if available, else cpu).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.verifier and self.scores:
            raise ValueError(
                "got both verifier and scores; pass --verifier to score now, or --scores for precomputed scores, not both"
            )
        if self.scores and len(self.scores) != len(self.trajectories):
            raise ValueError(
                f"got {len(self.scores)} score files for {len(self.trajectories)} trajectory folders; pass one per folder, in the same order"
            )
        if self.batch_size < 1:
            raise ValueError(f"got batch_size={self.batch_size}; it must be >= 1")


# ------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Trajectory:
    """What relabeling needs of one stored trajectory.

    folder: index of its rollout folder. states: the chat before each turn (Episode.state).
    replies / turn_correct: each turn's raw reply and whether its program passes the private
    tests (None: not run). correct: the final program's label. infra_error: the sandbox failed.
    """

    folder: int
    problem_id: str
    rollout: int
    prompt: tuple[Message, ...]
    states: tuple[tuple[Message, ...], ...]
    replies: tuple[str, ...]
    turn_correct: tuple[bool | None, ...]
    infra_error: bool = False

    @property
    def key(self) -> TrajectoryKey:
        return (self.folder, self.problem_id, self.rollout)

    @property
    def final_reply(self) -> str:
        return self.replies[-1]

    @property
    def correct(self) -> bool | None:
        return self.turn_correct[-1]

    @classmethod
    def from_record(cls, record: Mapping[str, Any], folder: int = 0) -> Trajectory:
        """From a `trajectories.jsonl` record (rollouts.md)."""
        if not record.get("turns"):
            raise ValueError(f"trajectory {record.get('problem_id')!r}/{record.get('rollout')!r} has no turns")
        episode = Episode.from_dict(record)
        return cls(
            folder=folder,
            problem_id=str(record["problem_id"]),
            rollout=int(record["rollout"]),
            prompt=tuple(dict(m) for m in record["prompt"]),
            states=tuple(tuple(episode.state(i)) for i in range(len(episode.turns))),
            replies=tuple(t.reply for t in episode.turns),
            turn_correct=tuple(t.correct for t in episode.turns),
            infra_error=bool(record.get("infra_error")) or episode.infra_error,
        )


@dataclass(frozen=True)
class SFTExample:
    """One SFT example: the chat up to a state, and the assistant reply to imitate there.

    source: "expert" (the problem's expert reply on a failed trajectory's state) or "own" (a
    successful trajectory's own final reply). folder / rollout / state: where the prompt comes
    from (state = 0-based turn index).
    """

    prompt: tuple[Message, ...]
    completion: str
    problem_id: str
    folder: int
    rollout: int
    state: int
    source: Literal["expert", "own"]

    def to_dict(self) -> dict[str, Any]:
        """TRL's conversational prompt/completion format plus the metadata fields."""
        return {
            "prompt": [dict(m) for m in self.prompt],
            "completion": [{"role": "assistant", "content": self.completion}],
            "problem_id": self.problem_id,
            "folder": self.folder,
            "rollout": self.rollout,
            "state": self.state,
            "source": self.source,
        }

    def dedupe_key(self) -> tuple[str, str]:
        return (json.dumps(self.prompt, sort_keys=True), self.completion)


@dataclass
class RelabelStats:
    """Counts of one relabeling.

    problems: distinct problems with a usable trajectory; solved: with a correct final program
    (for star: a correct first turn); dropped / kept_unsolved: unsolved problems dropped / kept.
    trajectories: usable ones; skipped: left out (label unknown or sandbox failure).
    expert / own: examples by source, after dedupe; duplicates: examples dropped as repeats.
    """

    method: str = "mucode"
    problems: int = 0
    solved: int = 0
    dropped: int = 0
    kept_unsolved: int = 0
    trajectories: int = 0
    skipped: int = 0
    expert: int = 0
    own: int = 0
    duplicates: int = 0

    @property
    def examples(self) -> int:
        return self.expert + self.own

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "examples": self.examples}

    def describe(self) -> str:
        unsolved = f", {self.dropped} unsolved dropped, {self.kept_unsolved} kept" if self.method == "mucode" else ""
        return (
            f"{self.method}: {self.problems} problems ({self.solved} solved{unsolved}), {self.trajectories} trajectories "
            f"({self.skipped} skipped); {self.examples} examples: {self.expert} expert, {self.own} own ({self.duplicates} duplicates dropped)"
        )


@dataclass
class RelabelResult:
    """The examples (ordered by problem, folder, rollout, state) and their counts."""

    examples: list[SFTExample]
    stats: RelabelStats


# ------------------------------------------------------------------------------------- loading


def load_trajectories(folders: Sequence[str | Path], progress: bool = False) -> list[Trajectory]:
    """Every trajectory of several rollout folders; folder i gets index i."""
    from mucode.store import TRAJECTORIES, read_trajectories

    if not folders:
        raise ValueError(
            "no trajectory folders given; pass --trajectories DIR [DIR ...] (folders written by `mucode rollout`)"
        )
    records = []
    for index, folder in enumerate(folders):
        if not (Path(folder) / TRAJECTORIES).is_file():
            raise FileNotFoundError(
                f"{folder} holds no {TRAJECTORIES}; pass folders written by `mucode rollout --out`"
            )
        records += [(index, record) for record in read_trajectories(folder)]
    return [Trajectory.from_record(record, index) for index, record in _bar(records, progress, "loading trajectories")]


def read_scores(paths: Sequence[str | Path]) -> dict[TrajectoryKey, float]:
    """Final-program scores from `mucode verifier score --input FOLDER --turns final` outputs,
    file i for folder i: {(i, problem id, rollout): score}."""
    scores: dict[TrajectoryKey, float] = {}
    for index, path in enumerate(paths):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"score file {path} does not exist; write it with `mucode verifier score --turns final --out {path}`"
            )
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not {"problem_id", "rollout", "score"} <= row.keys():
                raise ValueError(
                    f"{path}: line {number} needs problem_id, rollout and score (a `mucode verifier score` output)"
                )
            if row.get("final", True):
                scores[(index, str(row["problem_id"]), int(row["rollout"]))] = float(row["score"])
    return scores


def score_final_programs(trajectories: Iterable[Trajectory], scorer: VerifierScorer) -> dict[TrajectoryKey, float]:
    """The verifier's score of each trajectory's final reply for the original problem (no
    history); each distinct (prompt, reply) is scored once."""
    trajectories = list(trajectories)
    distinct: dict[tuple[str, str], tuple[tuple[Message, ...], str]] = {}
    for t in trajectories:
        distinct.setdefault((json.dumps(t.prompt, sort_keys=True), t.final_reply), (t.prompt, t.final_reply))
    items = list(distinct.items())
    values = scorer.score([list(prompt) for _, (prompt, _) in items], [reply for _, (_, reply) in items])
    by_text = {key: value for (key, _), value in zip(items, values)}
    return {t.key: by_text[(json.dumps(t.prompt, sort_keys=True), t.final_reply)] for t in trajectories}


def to_score(trajectories: Sequence[Trajectory], method: Method, options: RelabelOptions) -> list[Trajectory]:
    """The trajectories whose final programs the relabeling reads scores of: none for the
    baselines; for mucode those of the problems it uses (with unsolved="drop", solved ones)."""
    if method != "mucode":
        return []
    usable = [t for t in trajectories if _usable(t)]
    solved = {t.problem_id for t in usable if t.correct}
    return [t for t in usable if options.unsolved == "keep" or t.problem_id in solved]


# ----------------------------------------------------------------------------------- relabeling


def relabel(
    trajectories: Sequence[Trajectory],
    method: Method = "mucode",
    scores: Mapping[TrajectoryKey, float] | None = None,
    options: RelabelOptions | None = None,
) -> RelabelResult:
    """SFT examples of `method` from `trajectories` (see the module docstring). `scores` maps
    trajectory keys to their final program's verifier score; `mucode` needs it unless
    expert_rank="oracle" (then scores, if given, still rank the failed trajectories)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    options = options or RelabelOptions()
    stats = RelabelStats(method=method)
    usable = [t for t in trajectories if (_first_usable(t) if method == "star" else _usable(t))]
    stats.skipped = len(trajectories) - len(usable)
    stats.trajectories = len(usable)
    examples: list[SFTExample] = []
    for problem_id, group in _by_problem(usable).items():
        stats.problems += 1
        if method == "star":
            new = _star(group)
        elif method == "multi-star":
            new = _own_final(group)
        else:
            new = _mucode(problem_id, group, scores, options, stats)
        stats.solved += any(t.turn_correct[0] if method == "star" else t.correct for t in group)
        examples += new
    if options.dedupe:
        examples, stats.duplicates = _dedupe(examples)
    stats.expert = sum(e.source == "expert" for e in examples)
    stats.own = sum(e.source == "own" for e in examples)
    return RelabelResult(examples, stats)


def _usable(t: Trajectory) -> bool:
    return t.correct is not None and not t.infra_error


def _first_usable(t: Trajectory) -> bool:
    return t.turn_correct[0] is not None and not t.infra_error


def _by_problem(trajectories: Iterable[Trajectory]) -> dict[str, list[Trajectory]]:
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in sorted(trajectories, key=lambda t: t.key):
        groups[t.problem_id].append(t)
    return dict(sorted(groups.items()))


def _star(group: Sequence[Trajectory]) -> list[SFTExample]:
    return [_example(t, 0, t.replies[0], "own") for t in group if t.turn_correct[0]]


def _own_final(group: Sequence[Trajectory]) -> list[SFTExample]:
    """Every state of every successful trajectory -> its own final reply."""
    return [_example(t, i, t.final_reply, "own") for t in group if t.correct for i in range(len(t.states))]


def _mucode(
    problem_id: str,
    group: Sequence[Trajectory],
    scores: Mapping[TrajectoryKey, float] | None,
    options: RelabelOptions,
    stats: RelabelStats,
) -> list[SFTExample]:
    solved = any(t.correct for t in group)
    if not solved and options.unsolved == "drop":
        stats.dropped += 1
        return []
    stats.kept_unsolved += not solved
    score = _scorer(group, scores, options.expert_rank)
    tiebreak = _tiebreak(problem_id, group, options.seed)
    expert = max(group, key=lambda t: (_rank(t, score(t), options.expert_rank), tiebreak[t.key]))
    chosen = []
    for folder in sorted({t.folder for t in group}):
        failed = [t for t in group if t.folder == folder and not t.correct]
        chosen += sorted(failed, key=lambda t: (score(t), tiebreak[t.key]), reverse=True)[: options.top_m]
    relabeled = [
        _example(t, i, expert.final_reply, "expert")
        for t in sorted(chosen, key=lambda t: t.key)
        for i in range(len(t.states))
    ]
    return _own_final(group) + relabeled


def _scorer(group: Sequence[Trajectory], scores: Mapping[TrajectoryKey, float] | None, expert_rank: ExpertRank) -> Any:
    """t -> its final program's score. Ranking by the verifier needs every score; ranking by
    the oracle uses scores if there are any (0.0 otherwise: ties, broken by the seeded draw)."""
    scores = scores or {}
    missing = [t.key for t in group if t.key not in scores]
    if missing and (expert_rank != "oracle" or len(missing) < len(group)):
        raise ValueError(
            f"no verifier score for trajectory {missing[0]} (folder, problem, rollout); score every final program "
            "(pass a verifier or scores for all of them), or rank by the oracle alone (expert_rank='oracle')"
        )
    return lambda t: scores.get(t.key, 0.0)


def _rank(t: Trajectory, score: float, expert_rank: ExpertRank) -> float:
    label = float(bool(t.correct))
    if expert_rank == "combined":
        return ORACLE_WEIGHT * label + score
    return score if expert_rank == "verifier" else label


def _tiebreak(problem_id: str, group: Sequence[Trajectory], seed: int) -> dict[TrajectoryKey, int]:
    """A seeded random order of the problem's trajectories: higher wins a tie."""
    keys = sorted(t.key for t in group)
    random.Random(f"{seed}:{problem_id}").shuffle(keys)
    return {key: position for position, key in enumerate(keys)}


def _example(t: Trajectory, state: int, completion: str, source: Literal["expert", "own"]) -> SFTExample:
    return SFTExample(t.states[state], completion, t.problem_id, t.folder, t.rollout, state, source)


def _dedupe(examples: Sequence[SFTExample]) -> tuple[list[SFTExample], int]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for example in examples:
        key = example.dedupe_key()
        if key not in seen:
            seen.add(key)
            kept.append(example)
    return kept, len(examples) - len(kept)


# ------------------------------------------------------------------------------------- writing


def write_examples(examples: Iterable[SFTExample], path: str | Path) -> Path:
    """JSONL (or Parquet) rows that TRL's SFTTrainer and `datasets.load_dataset` read directly."""
    from mucode.verifier.data import write_records

    return write_records([e.to_dict() for e in examples], path)


def build_sft_data(
    method: Method,
    rollout_dirs: Sequence[str | Path],
    out_path: str | Path,
    *,
    scorer: VerifierScorer | None = None,
    scores: Mapping[TrajectoryKey, float] | None = None,
    options: RelabelOptions | None = None,
    progress: bool = False,
) -> RelabelStats:
    """Load the folders, score what `method` needs with `scorer` (unless `scores` are given),
    relabel, and write the examples to `out_path` and their counts to `<out>.stats.json`."""
    options = options or RelabelOptions()
    trajectories = load_trajectories(rollout_dirs, progress=progress)
    if scores is None and scorer is not None:
        scores = score_final_programs(to_score(trajectories, method, options), scorer)
    result = relabel(trajectories, method, scores, options)
    write_examples(result.examples, out_path)
    _sibling(out_path, ".stats.json").write_text(json.dumps(result.stats.to_dict(), indent=2))
    return result.stats


def run_relabel(config: RelabelConfig, progress: bool = True) -> RelabelStats:
    """`mucode generator relabel`: build_sft_data from a config, saved as `<out>.config.yaml`."""
    from mucode.config import save_config

    needs_scores = config.method == "mucode" and config.expert_rank != "oracle"
    if needs_scores and not (config.verifier or config.scores):
        raise ValueError(
            f"method mucode with expert_rank={config.expert_rank!r} ranks programs by the verifier; pass --verifier DIR or --scores FILE ... (or --expert-rank oracle)"
        )
    options = RelabelOptions(**{f.name: getattr(config, f.name) for f in dataclasses.fields(RelabelOptions)})
    scorer = None
    if config.verifier and config.method == "mucode":
        from mucode.verifier.remote import load_scorer

        scorer = load_scorer(config.verifier, batch_size=config.batch_size, device=config.device, progress=progress)
    scores = read_scores(config.scores) if config.scores else None
    stats = build_sft_data(
        config.method,
        config.trajectories,
        config.out,
        scorer=scorer,
        scores=scores,
        options=options,
        progress=progress,
    )
    save_config(config, _sibling(config.out, ".config.yaml"))
    return stats


def _sibling(path: str | Path, suffix: str) -> Path:
    """runs/sft.jsonl -> runs/sft<suffix>."""
    path = Path(path)
    return path.with_name(path.stem + suffix)


def _bar(items: Sequence[Any], progress: bool, desc: str) -> Iterable[Any]:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="traj", leave=False)
