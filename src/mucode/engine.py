"""The episode engine that rollouts and Best-of-N searches both run (a rollout is a search with N = 1).

Each step gathers every live episode (of all problems; at most `max_live`), samples N replies for
each one's conversation in one batched generator call, runs all N x live programs in one sandbox
batch (public + private tests in one run each, split afterwards), scores them with the verifier
when there is one, and lets the selector keep one; its public feedback extends the episode. An
episode ends at its first kept program that passes the public tests or after `turns` turns.
With `overlap` the live set is split in two halves, so that one half's programs run in the sandbox
while the other half generates (worth it when generation happens elsewhere: a server, a GPU).

Seeds (`seeding`): "episode" gives every turn of every episode its own seed, (seed, problem id,
episode index, turn), passed per conversation in one batched call, so an episode samples the same
whichever others share the call, in any process, after any interruption; the selector's random
choices are seeded the same way. "step" seeds one call per step from (seed, step): fastest
in-process, reproducible only for the same run. Greedy decoding needs no seed: one call.
"trajectory" (rollouts) and "search" (searches) are older names of "episode".

Retries: a program whose sandbox run hit a harness failure (not the program's fault) is run again,
up to MAX_INFRA_ATTEMPTS runs; an episode whose kept program still has one ends there, flagged by
`Episode.infra_error`, rather than feed a false verdict back to the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from mucode.config import option
from mucode.episode import Episode, ExecutorLike, split_result
from mucode.execution.limits import Limits
from mucode.extraction import extract_code
from mucode.generation.base import Completion, Generator, Message, SamplingParams, derive_seed
from mucode.problems.prelude import DEFAULT_PREAMBLE, PREAMBLES
from mucode.prompts import FEEDBACK_STYLES, PromptConfig
from mucode.types import ExecResult, Problem


SEEDINGS = ("episode", "step")
SEEDING_ALIASES = {"trajectory": "episode", "search": "episode"}  # the names rollouts and searches used
SEEDING_CHOICES = [*SEEDINGS, *SEEDING_ALIASES]
SELECTORS = ("random", "lv", "pt", "pt+lv", "oracle")
VERIFIER_SELECTORS = ("lv", "pt+lv")
MAX_INFRA_ATTEMPTS = 3  # sandbox runs of one program while the harness reports its own failure
SELECT_STREAM = 1  # seed part that separates the selector's random stream from the sampler's
logger = logging.getLogger(__name__)


@dataclass
class EpisodeOptions:
    """The episode settings of every stage that runs episodes: rollouts and searches
    (`EpisodeConfig`), and the pipeline, which hands them to both (`episode_options()`).

    Sampling and episodes: turns, temperature, top_p, max_new_tokens, seed, dtype. The problems:
    problems_path, limit. The protocol: preamble, feedback, timeout_s, timeout_scope. Throughput:
    max_live (episodes advanced together), workers (sandbox).
    """

    seed: int = option(0, "Base seed (problem subset, sampling, selection).")
    problems_path: str | None = option(None, "MBPP data file or folder (else $MUCODE_MBPP_PATH, then the hub).")
    limit: int | None = option(None, "A seeded random subset of this many problems (the seed picks it; see --first).")
    dtype: str | None = option(
        None,
        "Model dtype (hf / vllm backends); default: bfloat16 where the device computes it natively (AVX512-BF16/AMX CPUs, bf16 GPUs) for hf, bfloat16 for vLLM.",
    )
    turns: int = option(3, "Most turns per episode (T); 1 = single-turn.")
    temperature: float = option(0.7, "Sampling temperature; 0.0 = greedy.")
    top_p: float = option(1.0, "Nucleus sampling mass.")
    max_new_tokens: int = option(1000, "Most tokens per reply.")
    max_live: int = option(32, "Episodes advanced together (one generation batch; a search samples n for each).")
    workers: int | None = option(None, "Sandbox workers (default: one per core).")
    timeout_s: float = option(3.0, "Sandbox wall-clock limit per test, in seconds.")
    timeout_scope: str = option(
        "test",
        "What timeout_s bounds: each test (and the loading) on its own clock, or the program's whole suite together (the reference code's 10 s per suite).",
        choices=["test", "suite"],
    )
    preamble: str = option(
        DEFAULT_PREAMBLE,
        "What runs before each program: none, problem (the problem's prelude: HumanEval's imports and helpers), reference (the reference code's import block + the prelude).",
        choices=PREAMBLES,
    )
    feedback: str = option(
        "rich",
        "Feedback wording: rich (failed test, expected, actual) or reference (the reference code's raw error text).",
        choices=FEEDBACK_STYLES,
    )

    def __post_init__(self) -> None:
        if self.preamble not in PREAMBLES:
            raise ValueError(f"got preamble={self.preamble!r}; choose one of {', '.join(PREAMBLES)}")
        if self.feedback not in FEEDBACK_STYLES:
            raise ValueError(f"got feedback={self.feedback!r}; choose one of {', '.join(FEEDBACK_STYLES)}")
        for name in ("turns", "max_new_tokens", "max_live"):
            if getattr(self, name) < 1:
                raise ValueError(f"got {name}={getattr(self, name)}; it must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"got limit={self.limit}; it must be >= 1 (or unset for every problem)")

    def episode_options(self) -> dict[str, Any]:
        """These settings by name (what the pipeline passes on to its rollout and search stages)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(EpisodeOptions)}


@dataclass
class EpisodeConfig(EpisodeOptions):
    """The parameters rollouts and searches share (`RolloutConfig`, `SearchConfig` extend it; a
    subclass redeclares a field to change its default or help, and the field keeps its place):
    the `EpisodeOptions`, and the model and its engine (model, backend, base_url,
    tensor_parallel_size, routing), the problems (problems: SOURCE[:SPLIT], first), outputs (out,
    report_to).
    """

    model: str = option(
        "smollm2-135m", "Preset name, hub id, local folder, GGUF file, or the served model name (openai backend)."
    )
    problems: str = option("humaneval", "Problem set, SOURCE[:SPLIT] (e.g. mbpp:train, mbpp:test, humaneval).")
    out: str = option("runs/episodes", "Output folder.")
    first: int | None = option(None, "The first N problems in the set's order (lm-eval's --limit).")
    backend: str = option(
        "auto",
        "Generation backend: auto (OpenVINO on CPU if installed, vLLM on CUDA, else hf) | hf | openvino | openai | vllm.",
        choices=["auto", "hf", "openvino", "openai", "vllm"],
    )
    base_url: str | None = option(None, "OpenAI-compatible server URL (openai backend).")
    tensor_parallel_size: int = option(1, "GPUs one vLLM engine splits the model over (vllm backend).")
    routing: str = option(
        "round-robin",
        "How requests are spread over several --base-url replicas (comma-separated).",
        choices=["round-robin", "least-loaded"],
    )
    report_to: str = option(
        "none",
        "Where the final metrics go too, comma-separated: tensorboard (OUT/runs/), wandb (set WANDB_PROJECT), none.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_report_to(self.report_to)
        if self.tensor_parallel_size < 1:
            raise ValueError(f"got tensor_parallel_size={self.tensor_parallel_size}; it must be >= 1")

    def limits(self) -> Limits:
        """What one program may use in the sandbox."""
        return Limits(timeout_s=self.timeout_s, timeout_scope=self.timeout_scope)

    def replies_per_step(self) -> int:
        """Replies one engine step may ask for at once (a search overrides it: n per episode)."""
        return self.max_live

    def batch_size(self) -> int:
        """Rows per `generate` call of the hf backend."""
        return self.max_live

    def generator_options(self) -> dict[str, Any]:
        """Options of `make_generator(config.backend, config.model, **options)` for this config."""
        dtype = {"dtype": self.dtype} if self.dtype else {}  # unset: the backend's default
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
            # every live episode may wait on its requests at once: the default of 8 in flight would starve replicas
            return {"base_url": self.base_url, "routing": self.routing, "max_concurrency": self.replies_per_step()}
        if self.backend == "vllm":  # vLLM batches by itself: no batch_size
            return {**dtype, "tensor_parallel_size": self.tensor_parallel_size}
        if self.backend == "openvino":  # continuous batching, its own weight format: neither batch_size nor dtype
            return {}
        if self.tensor_parallel_size != 1:
            raise ValueError(
                f"got tensor_parallel_size={self.tensor_parallel_size} with --backend {self.backend}; it applies to --backend vllm only"
            )
        return {**dtype, "batch_size": self.batch_size()}


def check_report_to(report_to: str) -> None:
    """A `report_to` of episode stages names only tensorboard and wandb, and wandb only when it
    is installed (said before any model loads, not after the run)."""
    import importlib.util

    from mucode.config import report_targets

    targets = report_targets(report_to)
    unknown = [t for t in targets if t not in ("tensorboard", "wandb")]
    if unknown:
        raise ValueError(f"got report_to={report_to!r}; choose from tensorboard, wandb, none (comma-separated)")
    if "wandb" in targets and importlib.util.find_spec("wandb") is None:
        raise ValueError("report_to=wandb: the wandb package is not installed (pip install wandb), or drop wandb")


def seeding_name(name: str) -> str:
    """The current name of a seeding mode (older names accepted)."""
    name = SEEDING_ALIASES.get(name, name)
    if name not in SEEDINGS:
        raise ValueError(f"got seeding={name!r}; choose one of {', '.join(SEEDINGS)}")
    return name


def problem_key(problem_id: str) -> int:
    """A stable integer for a problem id (seeds depend on the id, not on the problem's position)."""
    return int.from_bytes(hashlib.blake2b(problem_id.encode(), digest_size=8).digest(), "little")


def episode_seed(seed: int, problem_id: str, index: int, turn: int) -> int:
    """The sampling seed of one turn (from 1) of episode `index` of a problem: the same whichever
    episodes share the call, in which order, in which process or after which interruption."""
    return derive_seed(seed, problem_key(problem_id), index, turn)


# -- what one turn decides -------------------------------------------------------------------------


@dataclass
class SampledProgram:
    """One of the N programs sampled at a turn, with its verdicts. `public` (the full public result,
    used for feedback and display) stays in memory; the stored record keeps `public_passed`."""

    reply: str
    program: str
    public_passed: bool
    correct: bool  # passes all tests, public and private (the paper's rule)
    score: float | None = None  # verifier score; None without a verifier
    completion_tokens: int = 0
    private_passed: bool | None = None  # the private tests alone (None: the problem has none)
    public: ExecResult | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reply": self.reply,
            "program": self.program,
            "public_passed": self.public_passed,
            "correct": self.correct,
            "private_passed": self.private_passed,
            "score": self.score,
            "completion_tokens": self.completion_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampledProgram:
        from mucode.metrics import candidate_correct

        fields = {k: data[k] for k in ("reply", "program", "public_passed", "score", "completion_tokens")}
        return cls(**fields, correct=candidate_correct(data), private_passed=data.get("private_passed"))


@dataclass
class SearchTurn:
    """One turn: the N sampled programs, the kept one and its public feedback (the next user message)."""

    candidates: list[SampledProgram]
    selected: int  # index into candidates
    feedback: str

    @property
    def chosen(self) -> SampledProgram:
        return self.candidates[self.selected]

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": [c.to_dict() for c in self.candidates],
            "selected": self.selected,
            "feedback": self.feedback,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchTurn:
        return cls([SampledProgram.from_dict(c) for c in data["candidates"]], data["selected"], data["feedback"])


def select_candidate(selector: str, candidates: Sequence[SampledProgram], rng: random.Random) -> int:
    """Index of the kept candidate. Ties (and "no candidate qualifies") are broken with `rng`.

    random: any. lv: the highest verifier score. pt: any public pass, else any. pt+lv: the
    highest score among public passes, else the highest overall. oracle: a correct one (preferring
    public passes), else as pt.
    """
    if not candidates:
        raise ValueError("select_candidate needs at least one candidate")
    everyone = list(range(len(candidates)))
    passing = [i for i in everyone if candidates[i].public_passed]
    if selector == "random":
        return rng.choice(everyone)
    if selector == "pt":
        return rng.choice(passing or everyone)
    if selector == "lv":
        return _best_scored(candidates, everyone, rng)
    if selector == "pt+lv":
        return _best_scored(candidates, passing or everyone, rng)
    if selector == "oracle":
        correct = [i for i in everyone if candidates[i].correct]
        return rng.choice([i for i in correct if i in passing] or correct or passing or everyone)
    raise ValueError(f"got selector={selector!r}; choose one of {', '.join(SELECTORS)}")


def _best_scored(candidates: Sequence[SampledProgram], indices: Sequence[int], rng: random.Random) -> int:
    if any(candidates[i].score is None for i in indices):
        raise ValueError("a verifier selector got candidates without scores; pass a scorer")
    top = max(candidates[i].score for i in indices)  # type: ignore[type-var]  # checked above
    return rng.choice([i for i in indices if candidates[i].score == top])


# -- the engine ------------------------------------------------------------------------------------


class Scorer(Protocol):
    """What the engine needs from a verifier (`mucode.verifier.VerifierScorer`)."""

    def score(self, prompts: Sequence[Sequence[Message]], replies: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class EngineSettings:
    """How episodes run: `sampling.n` programs per turn (its seed is the base seed), kept by `selector`."""

    turns: int
    sampling: SamplingParams
    selector: str = "random"
    seeding: str = "episode"
    max_live: int = 32
    overlap: bool = False
    prompt_config: PromptConfig = field(default_factory=PromptConfig)
    preamble: str = DEFAULT_PREAMBLE


@dataclass
class LiveEpisode:
    """One episode in the engine: its history, the turns decided so far and what they cost.
    `generate_s` and `wall_s` are its share of the calls and steps it took part in (their seconds
    divided by the episodes in them), so they add up over episodes to the run's time."""

    episode: Episode
    index: int  # rollout or search index of this problem
    turns: list[SearchTurn] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0  # every sampled program's
    generate_s: float = 0.0
    wall_s: float = 0.0

    @property
    def problem(self) -> Problem:
        return self.episode.problem

    @property
    def finished(self) -> bool:
        return self.episode.done or self.episode.infra_error


@dataclass
class EngineStats:
    steps: int = 0
    infra_retries: int = 0  # sandbox runs repeated after a harness failure
    wall_s: float = 0.0


@dataclass
class _Batch:
    """One generator call's episodes and what came back for them."""

    lives: list[LiveEpisode]
    conversations: list[list[Message]]
    completions: list[list[Completion]]  # (episodes, n)
    programs: list[list[str]]
    scores: list[list[float]] | None
    seconds: float  # per episode


OnTurn = Callable[[LiveEpisode, SearchTurn], None]
OnDone = Callable[[LiveEpisode], None]


def run_engine(
    work: Iterable[tuple[Problem, int]],
    generator: Generator,
    executor: ExecutorLike,
    settings: EngineSettings,
    *,
    scorer: Scorer | None = None,
    on_turn: OnTurn | None = None,
    on_done: OnDone | None = None,
) -> EngineStats:
    """Run an episode for every (problem, index) of `work` (taken lazily, `max_live` at a time);
    `on_turn` gets each turn as it is decided, `on_done` each episode as soon as it ends."""
    seeding = seeding_name(settings.seeding)
    if settings.turns < 1:
        raise ValueError(f"got turns={settings.turns}; it must be >= 1 (use turns=1 for single-turn)")
    pending = iter(work)
    stats = EngineStats()
    started = time.perf_counter()
    live: list[LiveEpisode] = []
    with ThreadPoolExecutor(1, thread_name_prefix="mucode-engine-exec") as background:
        while True:
            live.extend(_start(pending, settings.max_live - len(live), settings))
            if not live:
                break
            _step(live, generator, executor, scorer, settings, seeding, stats, background, on_turn)
            for lv in live:
                if lv.finished and on_done is not None:
                    on_done(lv)
            live = [lv for lv in live if not lv.finished]
    stats.wall_s = time.perf_counter() - started
    return stats


def _start(pending: Iterator[tuple[Problem, int]], room: int, settings: EngineSettings) -> list[LiveEpisode]:
    fresh: list[LiveEpisode] = []
    while len(fresh) < room and (item := next(pending, None)) is not None:
        problem, index = item
        episode = Episode(
            problem, max_turns=settings.turns, prompt_config=settings.prompt_config, preamble=settings.preamble
        )
        fresh.append(LiveEpisode(episode, index))
    return fresh


def _step(
    live: list[LiveEpisode],
    generator: Generator,
    executor: ExecutorLike,
    scorer: Scorer | None,
    settings: EngineSettings,
    seeding: str,
    stats: EngineStats,
    background: ThreadPoolExecutor,
    on_turn: OnTurn | None,
) -> None:
    """One turn of every live episode; with overlap one half's programs run while the other generates."""
    started = time.perf_counter()
    middle = (len(live) + 1) // 2
    halves = [live[:middle], live[middle:]] if settings.overlap else [live]
    running: Future | None = None
    for half in [h for h in halves if h]:
        batch = _sample(half, generator, scorer, settings.sampling, seeding, stats.steps)
        stats.steps += 1
        if running is not None:
            _decide(*running.result(), settings, stats, on_turn)  # it ran while this half generated
        running = background.submit(_execute, executor, batch)
    if running is not None:
        _decide(*running.result(), settings, stats, on_turn)
    share = (time.perf_counter() - started) / len(live)
    for lv in live:
        lv.wall_s += share


def _sample(
    lives: list[LiveEpisode],
    generator: Generator,
    scorer: Scorer | None,
    sampling: SamplingParams,
    seeding: str,
    step: int,
) -> _Batch:
    """n completions per episode from one generator call, their programs and verifier scores."""
    conversations = [lv.episode.pending_messages() for lv in lives]
    started = time.perf_counter()
    if sampling.greedy or seeding == "step":
        completions = generator.generate(conversations, replace(sampling, seed=derive_seed(sampling.seed, step)))
    else:  # each episode's rows draw from its own seed, whatever shares the call
        seeds = [episode_seed(sampling.seed, lv.problem.id, lv.index, len(lv.turns) + 1) for lv in lives]
        completions = generator.generate(conversations, sampling, seeds=seeds)
    seconds = (time.perf_counter() - started) / len(lives)
    if len(completions) != len(lives) or any(len(row) != sampling.n for row in completions):
        raise ValueError(
            f"the generator returned {[len(r) for r in completions]} completions for {len(lives)} conversations"
            f" of n={sampling.n}"
        )
    programs = [[extract_code(c.text) for c in row] for row in completions]
    return _Batch(lives, conversations, completions, programs, _score(scorer, conversations, completions), seconds)


def _score(
    scorer: Scorer | None, conversations: list[list[Message]], completions: list[list[Completion]]
) -> list[list[float]] | None:
    """Verifier scores of every candidate (the scorer applies its own view of the state)."""
    if scorer is None:
        return None
    prompts = [conv for conv, row in zip(conversations, completions) for _ in row]
    flat = iter(scorer.score(prompts, [c.text for row in completions for c in row]))
    return [[float(next(flat)) for _ in row] for row in completions]


Verdicts = list[list[tuple[ExecResult, ExecResult | None]]]  # (episodes, n) of (public, private | None)


def _execute(executor: ExecutorLike, batch: _Batch) -> tuple[_Batch, Verdicts, int]:
    """Every program against its problem's public + private tests in one sandbox batch; a run that
    hit a harness failure is repeated (up to MAX_INFRA_ATTEMPTS runs). Returns the verdicts and
    how many runs were repeated."""
    owners = [lv.episode for lv, row in zip(batch.lives, batch.programs) for _ in row]
    jobs = [
        ep.job(p, ep.problem.public_tests + ep.problem.private_tests) for ep, p in zip(owners, _flat(batch.programs))
    ]
    results = executor.run_many(jobs)
    retries = 0
    for _ in range(MAX_INFRA_ATTEMPTS - 1):
        redo = [k for k, r in enumerate(results) if r.infra_error]
        if not redo:
            break
        logger.warning("sandbox failure on %d programs; running them again", len(redo))
        retries += len(redo)
        for k, result in zip(redo, executor.run_many([jobs[k] for k in redo])):
            results[k] = result
    split = iter(
        (public, private if ep.problem.private_tests else None)
        for ep, result in zip(owners, results)
        for public, private in [split_result(result, len(ep.problem.public_tests))]
    )
    return batch, [[next(split) for _ in row] for row in batch.programs], retries


def _flat(rows: list[list[str]]) -> list[str]:
    return [item for row in rows for item in row]


def _decide(
    batch: _Batch,
    verdicts: Verdicts,
    retries: int,
    settings: EngineSettings,
    stats: EngineStats,
    on_turn: OnTurn | None,
) -> None:
    """Build each episode's candidates, keep one, and record it as the episode's next turn."""
    stats.infra_retries += retries
    for i, lv in enumerate(batch.lives):
        candidates = [
            SampledProgram(
                reply=c.text,
                program=program,
                public_passed=public.passed,
                correct=public.passed and (private is None or private.passed),
                private_passed=private.passed if private is not None else None,
                score=batch.scores[i][j] if batch.scores is not None else None,
                completion_tokens=c.completion_tokens,
                public=public,
            )
            for j, (c, program, (public, private)) in enumerate(
                zip(batch.completions[i], batch.programs[i], verdicts[i])
            )
        ]
        number = len(lv.turns) + 1
        rng = random.Random(
            derive_seed(settings.sampling.seed, problem_key(lv.problem.id), lv.index, number, SELECT_STREAM)
        )
        selected = select_candidate(settings.selector, candidates, rng)
        kept, (public, private) = batch.completions[i][selected], verdicts[i][selected]
        turn = lv.episode.record(
            kept.text,
            public,
            private,
            program=batch.programs[i][selected],
            prompt_tokens=kept.prompt_tokens,
            completion_tokens=kept.completion_tokens,
            generate_s=round(batch.seconds, 4),
        )
        lv.turns.append(SearchTurn(candidates, selected, turn.feedback or ""))
        lv.prompt_tokens += kept.prompt_tokens
        lv.completion_tokens += sum(c.completion_tokens for c in batch.completions[i])
        lv.generate_s += batch.seconds
        if on_turn is not None:
            on_turn(lv, lv.turns[-1])
