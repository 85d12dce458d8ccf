"""Multi-turn rollouts: R trajectories of up to T turns per problem, collected fast and resumably.

    mucode rollout --model smollm2-135m --problems mbpp:train --rollouts 15 --turns 3 --out runs/r0

Engine: the live episodes advance together. Each step gathers every live episode that needs a
reply, generates for all of them in one call, and runs all the new programs in parallel in the
sandbox; the live set is split in two halves so that one half's programs run while the other half
generates. A finished trajectory is appended to `trajectories.jsonl` at once (flushed and synced),
so a run killed at any moment and restarted with the same command redoes only the trajectories
that were not complete, never duplicates one, and loses none.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from mucode import store as run_folder
from mucode.config import option
from mucode.engine import (
    SEEDING_ALIASES,
    SEEDING_CHOICES,
    EngineSettings,
    EpisodeConfig,
    LiveEpisode,
    episode_seed,
    run_engine,
    seeding_name,
)
from mucode.episode import ExecutorLike
from mucode.generation.base import Generator, SamplingParams
from mucode.problems.prelude import DEFAULT_PREAMBLE
from mucode.prompts import PromptConfig
from mucode.store import (
    TrajectoryStore,
    load_selected_problems,
)
from mucode.types import Problem


# Folders written before `seeding` existed used per-step seeds, before `timeout_scope` a limit per test.
LEGACY_DEFAULTS = {"seeding": "step", "timeout_scope": "test"}
RENAMED = {"seeding": SEEDING_ALIASES}  # folders written under the older names resume
logger = logging.getLogger(__name__)


@dataclass
class RolloutConfig(EpisodeConfig):
    """Parameters of `mucode rollout` (saved as `config.yaml` next to the trajectories): those of
    `EpisodeConfig`, and rollouts (trajectories per problem), seeding, ray, ray_actors and
    ray_gpus_per_actor (see docs/scaling.md).
    """

    out: str = option("runs/rollouts", "Output folder.")
    rollouts: int = option(1, "Trajectories per problem.")
    seeding: str | None = option(
        None,
        "Sampling seeds per engine step ('step': one batched call, fastest in-process) or per (problem, rollout, "
        "turn) ('episode': samples independent of what runs alongside; required by --ray; 'trajectory' is its "
        "older name). Default: episode with --ray, else step.",
        choices=SEEDING_CHOICES,
    )
    ray: str | None = option(
        None,
        "Spread the work over a Ray cluster: 'auto' (RAY_ADDRESS or a running `ray start`), 'local' (start one here) or HOST:PORT.",
    )
    ray_actors: int | None = option(
        None, "Ray actors, each with its own generator and sandbox (default: cluster CPUs / CPUs per actor)."
    )
    ray_gpus_per_actor: float = option(0.0, "GPUs reserved for each Ray actor (hf or vllm backends on GPU nodes).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollouts < 1:
            raise ValueError(f"got rollouts={self.rollouts}; it must be >= 1")
        if self.temperature == 0 and self.rollouts > 1:
            raise ValueError(
                f"got rollouts={self.rollouts} with temperature=0: greedy rollouts are identical; use --rollouts 1 or a temperature > 0"
            )
        self.seeding = seeding_name(self.seeding or ("episode" if self.ray else "step"))
        if self.ray and self.seeding != "episode":
            raise ValueError(
                f"got --ray with seeding={self.seeding!r}: samples would depend on how problems are split over"
                " actors; use --seeding episode"
            )

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            n=1, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=self.seed
        )


# -- engine ----------------------------------------------------------------------------------------


@dataclass
class RolloutStats:
    """What one `collect_rollouts` call did (stored trajectories from earlier runs not included)."""

    trajectories: int = 0
    correct: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    infra_retries: int = 0  # sandbox runs repeated after a harness failure

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s else 0.0


def work_items(
    problems: Sequence[Problem], rollouts: int, done: set[tuple[str, int]]
) -> Iterator[tuple[Problem, int]]:
    """(problem, rollout index) pairs still to run, rollouts of a problem together."""
    for problem in problems:
        for index in range(rollouts):
            if (problem.id, index) not in done:
                yield problem, index


def trajectory_record(live: LiveEpisode, model: str) -> dict[str, Any]:
    """The trajectories.jsonl record of a finished episode (`Episode.to_dict` plus these fields)."""
    episode = live.episode
    record = episode.to_dict()
    record.update(
        rollout=live.index,
        model=model,
        n_turns=len(episode.turns),
        infra_error=episode.infra_error,  # True only if the sandbox failed on every attempt
        prompt_tokens=live.prompt_tokens,
        completion_tokens=live.completion_tokens,
        generate_s=round(live.generate_s, 4),
    )
    return record


trajectory_seed = episode_seed  # the name rollouts exported


class RecordSink(Protocol):
    """Where finished trajectories go: a `TrajectoryStore`, or a stream (the Ray actors)."""

    done: set[tuple[str, int]]

    def append(self, record: dict[str, Any]) -> None: ...


def collect_rollouts(
    problems: Sequence[Problem],
    generator: Generator,
    executor: ExecutorLike,
    store: RecordSink,
    *,
    rollouts: int,
    turns: int,
    params: SamplingParams,
    max_live: int = 32,
    model_name: str = "",
    prompt_config: PromptConfig | None = None,
    overlap: bool = False,
    on_trajectory: Callable[[dict[str, Any], RolloutStats], None] | None = None,
    seeding: str = "step",
    preamble: str = DEFAULT_PREAMBLE,
) -> RolloutStats:
    """Run every (problem, rollout) not yet in `store` and append each finished trajectory: the
    engine (`mucode.engine`) with one program per turn.

    overlap: split the live episodes in two halves so that one half's programs run in the sandbox
    while the other half generates. Worth it when generation happens elsewhere (a server, a GPU);
    with in-process generation on CPU the full batch is faster (the sandbox needs little time).
    seeding: "step" (one generator call per step, seeded by the step) or "episode" (one seed per
    conversation, `episode_seed`: what a trajectory samples does not depend on the other live
    episodes, so sharded or resumed runs give the same records; "trajectory" is its older name)."""
    settings = EngineSettings(
        turns=turns,
        sampling=replace(params, n=1),
        selector="random",
        seeding=seeding_name(seeding),
        max_live=max_live,
        overlap=overlap,
        prompt_config=prompt_config or PromptConfig(),
        preamble=preamble,
    )
    stats = RolloutStats()
    started = time.perf_counter()

    def finished(live: LiveEpisode) -> None:
        record = trajectory_record(live, model_name)
        store.append(record)
        stats.trajectories += 1
        stats.correct += bool(record["correct"])
        stats.completion_tokens += live.completion_tokens
        stats.wall_s = time.perf_counter() - started
        if on_trajectory is not None:
            on_trajectory(record, stats)

    engine = run_engine(work_items(problems, rollouts, store.done), generator, executor, settings, on_done=finished)
    stats.infra_retries = engine.infra_retries
    stats.wall_s = time.perf_counter() - started
    return stats


# -- the whole command -----------------------------------------------------------------------------


def check_resumable(config: RolloutConfig, out: Path) -> None:
    """Raise ValueError when `out` holds rollouts made with other settings (throughput-only
    settings may differ)."""
    run_folder.check_resumable(config, out, what="rollouts", missing=LEGACY_DEFAULTS, renamed=RENAMED)


def write_run_metadata(
    config: RolloutConfig, out: Path, problem_ids: Sequence[str], extra: dict[str, Any] | None = None
) -> None:
    """config.yaml (resolved config), run.json (seeds, problem ids, versions)."""
    resume = {"what": "rollouts", "missing": LEGACY_DEFAULTS, "renamed": RENAMED}
    run_folder.write_run_metadata(config, out, problem_ids, extra, **resume)


COMMAND = "`mucode rollout`"  # names the holder of a folder's lock


def check_before_run(config: RolloutConfig) -> None:
    """The checks that bad input fails before the folder is touched or a model loads (local or Ray):
    the folder is not in use by another process and the problems load."""
    run_folder.check_not_in_use(config.out, COMMAND)
    load_selected_problems(config.problems, config.problems_path, config.limit, config.seed, config.first)


def write_summary(config: RolloutConfig) -> dict[str, Any]:
    """The summary of every trajectory in `config.out` (`summarize_trajectories`): written to
    OUT/summary.json and sent to `config.report_to`."""
    from mucode.metrics import summarize_trajectories
    from mucode.reports.tracking import report_metrics

    summary = summarize_trajectories(run_folder.read_trajectories(config.out))
    run_folder.write_json(Path(config.out) / run_folder.SUMMARY_FILE, summary)
    report_metrics(config.report_to, config.out, summary, tag="rollouts")
    return summary


def run_rollouts(config: RolloutConfig, progress: bool = True) -> RolloutStats:
    """Resolve the problems, the model and the sandbox from `config`, then collect in this process
    (resuming). Raises FolderInUse if another process is writing into `config.out`. A config with
    `ray` runs through `mucode.scaling.ray_rollouts.run_rollouts_on_ray` (the caller chooses)."""
    from mucode.generation.checks import check_generator
    from mucode.generation.factory import resolve_backend

    if config.ray:
        raise ValueError("config.ray is set: run it with mucode.scaling.ray_rollouts.run_rollouts_on_ray (--ray)")
    check_before_run(config)
    check_generator(config.backend, config.model, base_url=config.base_url)
    config = replace(config, backend=resolve_backend(config.backend, config.model, base_url=config.base_url))
    check_resumable(config, Path(config.out))
    with run_folder.folder_lock(config.out, COMMAND):
        return _run_rollouts(config, progress)


def _run_rollouts(config: RolloutConfig, progress: bool) -> RolloutStats:
    from mucode.execution import Executor
    from mucode.generation.factory import IN_PROCESS, make_generator

    out = Path(config.out)
    problem_set, problems = load_selected_problems(
        config.problems, config.problems_path, config.limit, config.seed, config.first
    )
    generator = make_generator(config.backend, config.model, **backend_options(config))
    write_run_metadata(config, out, [p.id for p in problems], {"problems_sha256": problem_set.sha256})
    store = TrajectoryStore(out)
    bar = RolloutProgress(len(problems) * config.rollouts, store) if progress else None
    if bar is not None:
        bar.follow(generator)
    try:
        with Executor(workers=config.workers, limits=config.limits()) as executor:
            stats = collect_rollouts(
                problems,
                generator,
                executor,
                store,
                rollouts=config.rollouts,
                turns=config.turns,
                params=config.sampling(),
                max_live=config.max_live,
                model_name=config.model,
                overlap=config.backend not in IN_PROCESS,
                seeding=config.seeding or "step",
                prompt_config=PromptConfig(feedback=config.feedback),
                preamble=config.preamble,
                on_trajectory=bar.update if bar else None,
            )
    finally:
        generator.close()
        store.close()
        if bar is not None:
            bar.close()
    return stats


def backend_options(config: RolloutConfig) -> dict[str, Any]:
    """Backend options of `make_generator` for this config (local and Ray runs)."""
    return config.generator_options()


class RolloutProgress:
    """The progress bar of a rollout run (local or Ray): stored trajectories, pass rate, tokens/s."""

    def __init__(self, total: int, store: TrajectoryStore) -> None:
        from tqdm.auto import tqdm

        self.store = store
        done = len(store.done)
        self.bar = tqdm(total=total, initial=done, desc="rollouts", unit="traj")
        if done:
            self.bar.set_postfix_str(f"resumed {done}, pass {store.n_correct / done:.1%}")

    def follow(self, generator: Generator) -> None:
        """Show the replies of the generator's batch as they come (a batch takes minutes)."""
        from mucode.generation.base import attach_progress

        show = lambda done, total: self.bar.set_description_str(f"rollouts (replies {done}/{total})")  # noqa: E731
        attach_progress(generator, show)

    def update(self, record: dict[str, Any], stats: RolloutStats) -> None:
        self.bar.update(1)
        rate = self.store.n_correct / max(len(self.store.done), 1)
        self.bar.set_postfix_str(f"pass {rate:.1%}, {stats.tokens_per_s:.0f} tok/s")

    def close(self) -> None:
        self.bar.close()
