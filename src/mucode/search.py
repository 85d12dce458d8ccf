"""Multi-turn Best-of-N search (METHOD.md §3): N programs per turn, a selector keeps one, its public
feedback extends the history; stop at the first selected program that passes the public tests.

    mucode search --model smollm2-135m --verifier runs/v0 --problems mbpp:test --n 5 \
        --selector pt+lv --turns 3 --searches 10 --out runs/bon

In-process, with an already built generator, sandbox and (optional) verifier:

    records = search_problems(problems, generator, executor, n=5, selector="pt", turns=3, searches=2,
                              sampling=SamplingParams(temperature=0.7, max_new_tokens=512), seed=0)
    summarize_searches(records, max_turns=3)["accuracy_by_turn"]

Engine (`mucode.engine`, the one rollouts run too): every step gathers all live searches (of all
problems), samples N replies for each one's conversation in one batched call, runs all N x live
programs in one sandbox batch, scores them with the verifier when there is one, and lets the
selector pick. Greedy multi-turn (N = 1, temperature 0) and single-turn (T = 1) are settings, not
other code paths.

Seeds: with `seeding="episode"` (default; "search" is its older name) the samples of search s of a
problem at turn t are drawn from a seed of (seed, problem id, s, t), and the selector's random
choices from a generator seeded the same way: a search's records do not depend on which other
searches share the step, on the problem order or subset, or on where an interrupted run was
resumed. `seeding="step"` seeds the one generator call of a step by (seed, step): faster with
in-process generation, reproducible only for the same run (same problems, same interruptions).
Greedy decoding needs no seed, so it always uses the one batched call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mucode.config import option
from mucode.engine import (
    SEEDING_ALIASES,
    SEEDING_CHOICES,
    SELECTORS,
    VERIFIER_SELECTORS,
    EngineSettings,
    EpisodeConfig,
    LiveEpisode,
    Scorer,
    SearchTurn,
    run_engine,
    seeding_name,
)
from mucode.episode import ExecutorLike
from mucode.generation.base import Generator, SamplingParams
from mucode.problems.prelude import DEFAULT_PREAMBLE
from mucode.prompts import PromptConfig
from mucode.store import SearchStore, read_searches
from mucode.types import Problem


STOPPING_RULE = "first selected program that passes the public tests"
PUBLIC_PRIVATE_RULE = (
    "the model sees the public tests and their feedback only; correct = the answer passes all tests, "
    "public and private (the paper's rule)"
)
RENAMED = {"seeding": SEEDING_ALIASES}  # folders written under the older names resume
# folders written before these fields existed
LEGACY_DEFAULTS = {"timeout_scope": "test", "tensor_parallel_size": 1, "routing": "round-robin"}
logger = logging.getLogger(__name__)


@dataclass
class SearchConfig(EpisodeConfig):
    """Parameters of `mucode search` (saved as `config.yaml` next to the searches): those of
    `EpisodeConfig`, and verifier, n (programs per turn), selector, searches (per problem), seeding.
    """

    verifier: str | None = option(
        None,
        "Trained verifier folder, or the URL of a `mucode serve --verifier` server (needed by the lv and pt+lv selectors; else scores are recorded when given).",
    )
    out: str = option("runs/search", "Output folder.")
    n: int = option(
        5,
        "Programs sampled per turn (N); 1 with temperature 0 = greedy. On the command line a list (--n 1,2,4,8) runs one search per N into OUT/n<N>, plus OUT/greedy, with shared seeds, and a report in OUT/report.",
        cli_type=str,
    )
    selector: str = option("pt", "How one of the N programs is kept.", choices=SELECTORS)
    searches: int = option(1, "Independent searches per problem (S).")
    k: str | None = option(
        None,
        "pass@k values of the turn-1 samples to report (unbiased estimator), comma-separated, each <= N*S, e.g. --turns 1 --n 200 --k 1,10,100; default 1, 2, 5, 10, 20, 50, 100 up to N, and N.",
    )
    seeding: str = option(
        "episode",
        "episode: one seed per (problem, search, turn) in one batched call (reproducible per search; 'search' is "
        "its older name); step: one seed per step (faster in-process).",
        choices=SEEDING_CHOICES,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n", "searches"):
            if getattr(self, name) < 1:
                raise ValueError(f"got {name}={getattr(self, name)}; it must be >= 1")
        self.seeding = seeding_name(self.seeding)
        self.k_values()  # checked now, used when the summary is written
        check_search_settings(
            self.n, self.selector, self.temperature, self.searches, self.verifier is not None, self.seeding
        )

    def k_values(self) -> list[int] | None:
        """`k` as a sorted list of ints (None: the default values)."""
        if self.k is None:
            return None
        try:
            values = sorted({int(part) for part in str(self.k).split(",") if part.strip()})
        except ValueError:
            raise ValueError(f"got k={self.k!r}; give comma-separated integers such as 1,10,100") from None
        if not values or values[0] < 1 or values[-1] > self.n * self.searches:
            raise ValueError(
                f"got k={self.k!r}; each k must be >= 1 and at most the {self.n * self.searches} turn-1 samples per "
                f"problem (N={self.n} x {self.searches} searches)"
            )
        return values

    def replies_per_step(self) -> int:
        return self.max_live * self.n  # every live search may wait on n requests at once

    def batch_size(self) -> int:
        return max(self.max_live, self.n)

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )


def check_search_settings(
    n: int, selector: str, temperature: float, searches: int, has_verifier: bool, seeding: str = "episode"
) -> None:
    """Reject settings that cannot run or that would waste the run, with the fix in the message."""
    if selector not in SELECTORS:
        raise ValueError(f"got selector={selector!r}; choose one of {', '.join(SELECTORS)}")
    seeding_name(seeding)
    if selector in VERIFIER_SELECTORS and not has_verifier:
        raise ValueError(
            f"selector {selector!r} ranks programs by a learned verifier; pass --verifier DIR or use --selector pt"
        )
    if temperature == 0 and n > 1:
        raise ValueError(
            f"got n={n} with temperature=0: greedy decoding gives one program; use --n 1 or a temperature > 0"
        )
    if temperature == 0 and searches > 1:
        raise ValueError(
            f"got searches={searches} with temperature=0: greedy searches are identical; use --searches 1 or a temperature > 0"
        )


# -- records ---------------------------------------------------------------------------------------


@dataclass
class SearchRecord:
    """One finished search of one problem (searches.jsonl). `generate_s` and `wall_s` are this search's share of
    the steps it took part in (a step's seconds divided by its live searches), so they add up over
    records to the run's time."""

    problem_id: str
    search: int
    selector: str
    n: int
    max_turns: int
    turns: list[SearchTurn]
    generate_s: float = 0.0
    wall_s: float = 0.0

    @property
    def solved_public(self) -> bool:
        return bool(self.turns) and self.turns[-1].chosen.public_passed

    @property
    def answer_turn(self) -> int | None:
        """1-based turn of the first selected public pass (the search stops there)."""
        return len(self.turns) if self.solved_public else None

    @property
    def correct(self) -> bool:
        """The final answer passes all tests (public and private)."""
        return self.turns[-1].chosen.correct

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for t in self.turns for c in t.candidates)

    @property
    def tokens_saved(self) -> int:
        """Tokens the turns not run would have cost, at this search's mean per candidate."""
        n_candidates = sum(len(t.candidates) for t in self.turns)
        mean = self.completion_tokens / n_candidates if n_candidates else 0.0
        return round((self.max_turns - len(self.turns)) * self.n * mean)

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem_id,
            "search": self.search,
            "selector": self.selector,
            "n": self.n,
            "max_turns": self.max_turns,
            "turns": [t.to_dict() for t in self.turns],
            "solved_public": self.solved_public,
            "answer_turn": self.answer_turn,
            "correct": self.correct,
            "completion_tokens": self.completion_tokens,
            "tokens_saved": self.tokens_saved,
            "generate_s": round(self.generate_s, 4),
            "wall_s": round(self.wall_s, 4),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchRecord:
        return cls(
            data["problem_id"],
            data["search"],
            data["selector"],
            data["n"],
            data["max_turns"],
            [SearchTurn.from_dict(t) for t in data["turns"]],
            data.get("generate_s", 0.0),
            data.get("wall_s", 0.0),
        )


# -- the search: the engine with N programs per turn and a selector ------------------------------

OnTurn = Callable[[Problem, int, int, SearchTurn], None]  # (problem, search, 1-based turn, turn)


def search_record(live: LiveEpisode, selector: str, n: int) -> SearchRecord:
    """The searches.jsonl record of a finished episode of the engine."""
    return SearchRecord(
        live.problem.id, live.index, selector, n, live.episode.max_turns, live.turns, live.generate_s, live.wall_s
    )


def search_problems(
    problems: Sequence[Problem],
    generator: Generator,
    executor: ExecutorLike,
    *,
    n: int,
    selector: str,
    turns: int,
    searches: int = 1,
    sampling: SamplingParams | None = None,
    seed: int = 0,
    scorer: Scorer | None = None,
    seeding: str = "episode",
    max_live: int = 32,
    overlap: bool = False,
    prompt_config: PromptConfig | None = None,
    preamble: str = DEFAULT_PREAMBLE,
    skip: Iterable[tuple[str, int]] = (),
    on_turn: OnTurn | None = None,
    on_search: Callable[[SearchRecord], None] | None = None,
) -> list[SearchRecord]:
    """Run S searches of up to T turns with N candidates per turn for every problem; return the
    finished records ordered by (problem, search). `sampling` gives temperature, top_p,
    max_new_tokens and stop strings (its n and seed are replaced by `n` and the derived seeds).
    `skip` lists (problem id, search) pairs already done. `on_search` gets each record as soon as
    its search ends, `on_turn` each turn as it is decided."""
    sampling = sampling or SamplingParams()
    check_search_settings(n, selector, sampling.temperature, searches, scorer is not None, seeding)
    for problem in problems:
        if not problem.public_tests:
            raise ValueError(
                f"problem {problem.id!r} has no public tests; a search needs them for feedback, selection and stopping"
            )
    settings = EngineSettings(
        turns=turns,
        sampling=replace(sampling, n=n, seed=seed),
        selector=selector,
        seeding=seeding,
        max_live=max_live,
        overlap=overlap,
        prompt_config=prompt_config or PromptConfig(),
        preamble=preamble,
    )
    skipped = set(skip)
    work = ((p, s) for p in problems for s in range(searches) if (p.id, s) not in skipped)
    finished: list[SearchRecord] = []

    def done(live: LiveEpisode) -> None:
        finished.append(search_record(live, selector, n))
        if on_search is not None:
            on_search(finished[-1])

    def turn_decided(live: LiveEpisode, turn: SearchTurn) -> None:
        on_turn(live.problem, live.index, len(live.turns), turn)  # type: ignore[misc]  # only set when given

    decided = turn_decided if on_turn else None
    run_engine(work, generator, executor, settings, scorer=scorer, on_done=done, on_turn=decided)
    order = {p.id: i for i, p in enumerate(problems)}
    return sorted(finished, key=lambda r: (order[r.problem_id], r.search))


def _mean(values: Iterable[Any]) -> float:
    values = [bool(v) for v in values]
    return sum(values) / len(values)


# -- the whole command -----------------------------------------------------------------------------


@dataclass
class SearchSummary:
    """What `run_search` did: `metrics` is summary.json (over every stored search of OUT)."""

    out: Path
    metrics: dict[str, Any]
    searches_run: int  # in this call (stored searches of earlier runs not included)
    wall_s: float  # of this call


def run_search(config: SearchConfig, progress: bool = True) -> SearchSummary:
    """Resolve problems, model, verifier and sandbox from `config`, run the missing searches
    (resuming OUT), and write summary.json. Raises FolderInUse if another process is writing into OUT."""
    from mucode.generation.checks import check_generator
    from mucode.generation.factory import resolve_backend
    from mucode.store import check_not_in_use, check_resumable, folder_lock, load_selected_problems

    # Bad input fails here, before the folder is touched or a model loads.

    check_not_in_use(config.out, "`mucode search`")
    load_selected_problems(config.problems, config.problems_path, config.limit, config.seed, config.first)
    if config.verifier is not None:
        from mucode.verifier.model import verifier_dir
        from mucode.verifier.remote import RemoteScorer, is_url

        if is_url(config.verifier):
            RemoteScorer(config.verifier).check()
        else:
            verifier_dir(config.verifier)
    check_generator(config.backend, config.model, base_url=config.base_url)
    config = replace(config, backend=resolve_backend(config.backend, config.model, base_url=config.base_url))
    check_resumable(config, config.out, what="searches", missing=LEGACY_DEFAULTS, renamed=RENAMED)
    with folder_lock(config.out, "`mucode search`"):
        return _run_search(config, progress)


def _run_search(config: SearchConfig, progress: bool) -> SearchSummary:
    from mucode.execution import Executor
    from mucode.generation.base import attach_progress
    from mucode.generation.factory import make_generator, resolve_backend
    from mucode.store import SUMMARY_FILE, load_selected_problems, write_json, write_run_metadata

    config = replace(config, backend=resolve_backend(config.backend, config.model, base_url=config.base_url))

    started = time.perf_counter()
    out = Path(config.out)
    problem_set, problems = load_selected_problems(
        config.problems, config.problems_path, config.limit, config.seed, config.first
    )
    scorer = load_scorer(config.verifier)
    generator = make_generator(config.backend, config.model, **generator_options(config))
    metadata = _run_metadata(config, problem_set.sha256)
    write_run_metadata(
        config, out, [p.id for p in problems], metadata, what="searches", missing=LEGACY_DEFAULTS, renamed=RENAMED
    )
    store = SearchStore(out)
    bar = _progress_bar(len(problems) * config.searches, len(store.done)) if progress else None
    if bar is not None:  # a batch of replies takes minutes: show it moving
        attach_progress(generator, lambda done, total: bar.set_description_str(f"searches (replies {done}/{total})"))
    run: list[SearchRecord] = []

    def on_search(record: SearchRecord) -> None:
        store.append(record)
        run.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(
                f"public {_mean(r.solved_public for r in run):.0%}, correct {_mean(r.correct for r in run):.0%}"
            )

    try:
        with Executor(workers=config.workers, limits=config.limits()) as executor:
            search_problems(
                problems,
                generator,
                executor,
                n=config.n,
                selector=config.selector,
                turns=config.turns,
                searches=config.searches,
                sampling=config.sampling(),
                seed=config.seed,
                scorer=scorer,
                seeding=config.seeding,
                max_live=config.max_live,
                skip=store.done,
                prompt_config=PromptConfig(feedback=config.feedback),
                preamble=config.preamble,
                on_search=on_search,
            )
    finally:
        generator.close()
        store.close()
        if bar is not None:
            bar.close()
    from mucode.metrics import summarize_searches
    from mucode.reports.tracking import report_metrics

    metrics = summarize_searches(read_searches(out), config.turns, ks=config.k_values())
    write_json(out / SUMMARY_FILE, metrics)
    report_metrics(config.report_to, out, metrics, tag="search")
    return SearchSummary(out, metrics, len(run), time.perf_counter() - started)


def parse_n_values(text: str | int) -> list[int]:
    """`--n 5` -> [5]; `--n 1,2,4,8` -> [1, 2, 4, 8] (distinct, each >= 1, in the order given)."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise ValueError(f"got --n {text!r}; give an integer or a comma-separated list such as 1,2,4,8") from None
    if any(v < 1 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"got --n {text!r}; every N must be >= 1 and appear once")
    return values


@dataclass
class SweepSummary:
    """What `run_search_sweep` did: one search folder per N (and the greedy one), the report."""

    runs: dict[str, SearchSummary]  # "n4" / "greedy" -> its summary
    report: Path


def sweep_configs(config: SearchConfig, ns: Sequence[int]) -> dict[str, SearchConfig]:
    """One config per N (OUT/n<N>) with the same seed, sampling and selector, and the greedy
    run (OUT/greedy: N = 1, temperature 0, one search) that the accuracy-vs-N plot marks apart."""
    out = Path(config.out)
    configs = {f"n{n}": replace(config, n=n, out=str(out / f"n{n}")) for n in ns}
    configs["greedy"] = replace(config, n=1, temperature=0.0, searches=1, out=str(out / "greedy"))
    return configs


def run_search_sweep(config: SearchConfig, ns: Sequence[int], progress: bool = True) -> SweepSummary:
    """`mucode search --n 1,2,4,8`: every config of `sweep_configs`, then one report over them."""
    from mucode.reports import write_report

    runs = {name: run_search(c, progress) for name, c in sweep_configs(config, ns).items()}
    report = write_report([str(s.out) for s in runs.values()], Path(config.out) / "report", names=list(runs))
    return SweepSummary(runs, report)


def generator_options(config: SearchConfig) -> dict[str, Any]:
    """Backend options of `make_generator` for this config."""
    return config.generator_options()


def _run_metadata(config: SearchConfig, problems_sha256: str) -> dict[str, Any]:
    return {
        "model": config.model,
        "verifier": config.verifier,
        "problems_sha256": problems_sha256,
        "protocol": {
            "public_private_rule": PUBLIC_PRIVATE_RULE,
            "stopping_rule": STOPPING_RULE,
            "n": config.n,
            "turns": config.turns,
            "temperature": config.temperature,
            "timeout_s": config.timeout_s,
            "selector": config.selector,
            "searches": config.searches,
            "preamble": config.preamble,
            "feedback": config.feedback,
        },
    }


def load_scorer(verifier: str | None) -> Scorer | None:
    """The verifier of a trained verifier folder or of a `mucode serve --verifier` URL (None without
    one), with the fix when the folder is missing."""
    from mucode.verifier.remote import is_url
    from mucode.verifier.remote import load_scorer as load_verifier_scorer

    if verifier is None:
        return None
    if not is_url(verifier) and not Path(verifier).exists():
        raise FileNotFoundError(
            f"verifier folder {verifier} does not exist; train one with `mucode verifier train --out {verifier}`"
        )
    return load_verifier_scorer(verifier)


def _progress_bar(total: int, done: int):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=done, desc="searches", unit="search")
    if done:
        bar.set_postfix_str(f"resumed {done}")
    return bar
