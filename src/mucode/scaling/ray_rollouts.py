"""Rollouts on a Ray cluster: generation and sandboxed execution spread over many processes or nodes.

    ray start --head --port 6379                  # head node; on every other node: ray start --address HEAD:6379
    mucode rollout --ray auto --model qwen2.5-coder-0.5b --problems mbpp:train --rollouts 15 --out runs/r0

How: this process (the driver) resolves the problems, opens the run's `TrajectoryStore` and cuts
the (problem, rollout) pairs still missing into chunks. Each Ray actor owns a generator and a
sandbox `Executor` and runs the engine (`collect_rollouts`) on one chunk at a time, streaming
each finished trajectory back as soon as it ends; the driver appends it to the store. Seeds are
per (problem, rollout, turn) (`seeding="episode"`), so the records are those of a local run
with `--seeding episode` and the same seed, however the work is split.

This module is a client of `mucode.rollouts` (it imports the engine; nothing imports it but the
CLI, which chooses a local or a Ray run).

Failures: an actor process that dies (killed, out of memory, node lost) is restarted by Ray (up
to `max_restarts` times, reloading its model); the trajectories it had streamed back are kept and
the rest of its chunk is queued again, for any actor. The store refuses a key it already holds,
and the driver never sends a stored key out, so nothing is lost or written twice. A chunk that
fails `max_attempts` times (e.g. an exception in the engine) stops the run with its last error;
rerunning the command resumes, like a local run.
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from mucode.generation.base import SamplingParams
from mucode.problems.prelude import DEFAULT_PREAMBLE
from mucode.prompts import PromptConfig
from mucode.rollouts import (
    COMMAND,
    RolloutConfig,
    RolloutProgress,
    RolloutStats,
    backend_options,
    check_before_run,
    check_resumable,
    collect_rollouts,
    work_items,
    write_run_metadata,
)
from mucode.store import TrajectoryStore, folder_lock, load_selected_problems
from mucode.types import Problem


if TYPE_CHECKING:
    from ray.actor import ActorHandle

logger = logging.getLogger(__name__)

NODE_CHECK_S = 10.0  # with no answer for this long, look for calls whose node has died
INSTALL_HINT = "--ray needs the ray package: pip install 'mucode[ray]' (on every node of the cluster)"
Key = tuple[str, int]  # (problem id, rollout index)


def check_ray_installed() -> None:
    """Raise ValueError with the install line when ray is missing (before any work starts)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ValueError(INSTALL_HINT)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return ray


@dataclass(frozen=True)
class WorkerSpec:
    """What every actor builds (generator, sandbox) and how it runs the engine."""

    backend: str
    model: str
    backend_options: dict[str, Any]
    rollouts: int
    turns: int
    params: SamplingParams
    max_live: int = 32
    sandbox_workers: int = 1
    timeout_s: float = 3.0
    timeout_scope: str = "test"
    preamble: str = DEFAULT_PREAMBLE
    feedback: str = "rich"
    preset: ShippedPreset | None = None  # the driver's copy of the preset `model`, for nodes that lack it

    @classmethod
    def from_config(cls, config: RolloutConfig) -> WorkerSpec:
        return cls(
            backend=config.backend,
            model=driver_path(config.model),
            backend_options=backend_options(config),
            rollouts=config.rollouts,
            turns=config.turns,
            params=config.sampling(),
            max_live=config.max_live,
            sandbox_workers=config.workers or 1,
            timeout_s=config.timeout_s,
            timeout_scope=config.timeout_scope,
            preamble=config.preamble,
            feedback=config.feedback,
        )


def driver_path(ref: str) -> str:
    """A model reference as actors must see it: a local path that exists on the driver becomes
    absolute (an actor starts in its raylet's folder, where `runs/g0/model` names nothing); preset
    names, hub ids and absolute paths pass unchanged."""
    path = Path(ref).expanduser()
    return str(path.resolve()) if not path.is_absolute() and path.exists() else ref


@dataclass(frozen=True)
class ShippedPreset:
    """A preset's cached folder put into the Ray object store once by the driver: `files` maps each
    file of `manifest` to the object holding its bytes."""

    name: str
    manifest: dict[str, Any]
    files: dict[str, Any]

    def install_here(self) -> None:
        """Cache the preset on this node from the shipped copy, unless an intact copy is already here."""
        from mucode.generation.models import cache_problem, install_preset_copy

        if cache_problem(self.name) is not None:
            ray = import_ray()
            install_preset_copy(self.name, self.manifest, lambda relative: ray.get(self.files[relative]))
            # an actor's logging goes nowhere by default; Ray forwards its stderr to the driver
            print(
                f"preset {self.name}: cached on node {ray.util.get_node_ip_address()} from the driver's copy",
                file=sys.stderr,
                flush=True,
            )


def ship_preset(model: str) -> ShippedPreset | None:
    """When `model` is a preset that resolves to the registry copy, resolve (pull) it here once and
    put its files into the object store, so that nodes whose cache lacks it need neither the
    registry nor a shared file system. None for anything else (paths, hub ids, presets read from
    the hub, which every node reads itself)."""
    import numpy as np

    from mucode.generation.models import PRESETS, read_manifest, resolve_model

    if model not in PRESETS:
        return None
    resolved = resolve_model(model)
    if resolved.kind != "folder":
        return None
    folder, ray = Path(resolved.path), import_ray()
    manifest = read_manifest(folder)  # there and intact: resolve_model checked the cached copy
    files = {}
    for relative, record in manifest["files"].items():  # memory-mapped: put copies into shared memory
        data = np.memmap(folder / relative, dtype=np.uint8, mode="r") if record["bytes"] else np.zeros(0, np.uint8)
        files[relative] = ray.put(data)
    size = sum(record["bytes"] for record in manifest["files"].values())
    logger.info("preset %s: %.0f MB in the object store for nodes whose cache lacks it", model, size / 1e6)
    return ShippedPreset(model, manifest, files)


class _StreamingSink:
    """The store an actor's engine writes to: finished records go to a queue streamed to the driver.
    `done` starts with the keys of the chunk's problems that are not the actor's to run."""

    def __init__(self, skip: set[Key]) -> None:
        self.done = skip
        self.records: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def append(self, record: dict[str, Any]) -> None:
        self.done.add((record["problem_id"], record["rollout"]))
        self.records.put(record)


class RolloutWorker:
    """The body of each Ray actor: a generator and a sandbox built once, then chunks of work."""

    def __init__(self, spec: WorkerSpec) -> None:
        from mucode.execution import Executor, Limits
        from mucode.generation.factory import make_generator

        self.spec = spec
        if spec.preset is not None:
            spec.preset.install_here()
        check_model_visible(spec.model)
        self.generator = make_generator(spec.backend, spec.model, **spec.backend_options)
        self.executor = Executor(
            workers=spec.sandbox_workers, limits=Limits(timeout_s=spec.timeout_s, timeout_scope=spec.timeout_scope)
        )

    def pid(self) -> int:
        import os

        return os.getpid()

    def node(self) -> str:
        """The id of the Ray node this actor runs on."""
        return import_ray().get_runtime_context().get_node_id()

    def run(self, problems: list[Problem], keys: list[Key]) -> Iterator[dict[str, Any]]:
        """Run the trajectories `keys` of `problems`, yielding each record as soon as it is done."""
        wanted = set(keys)
        sink = _StreamingSink({(p.id, r) for p in problems for r in range(self.spec.rollouts)} - wanted)
        failure: list[BaseException] = []
        engine = threading.Thread(
            target=self._collect, args=(problems, sink, failure), name="mucode-ray-engine", daemon=True
        )
        engine.start()
        while (record := sink.records.get()) is not None:
            yield record
        engine.join()
        if failure:
            raise failure[0]

    def _collect(self, problems: list[Problem], sink: _StreamingSink, failure: list[BaseException]) -> None:
        from mucode.generation.factory import IN_PROCESS

        spec = self.spec
        try:
            collect_rollouts(
                problems,
                self.generator,
                self.executor,
                sink,
                rollouts=spec.rollouts,
                turns=spec.turns,
                params=spec.params,
                max_live=spec.max_live,
                model_name=spec.model,
                overlap=spec.backend not in IN_PROCESS,
                seeding="episode",
                prompt_config=PromptConfig(feedback=spec.feedback),
                preamble=spec.preamble,
            )
        except BaseException as err:  # handed to the driver through `run`
            failure.append(err)
        finally:
            sink.records.put(None)

    def close(self) -> None:
        self.executor.close()
        self.generator.close()


def check_model_visible(model: str) -> None:
    """A model the driver named by an absolute path (`driver_path`) must exist on this node too."""
    path = Path(model)
    if path.is_absolute() and not path.exists():
        ray = import_ray()
        node = ray.util.get_node_ip_address() if ray.is_initialized() else "this node"
        raise FileNotFoundError(
            f"the model {model} is not visible on node {node}: every node must see it at the same path (a shared "
            "file system), or give a preset name (the driver ships its cached copy to nodes that lack it)"
        )


def start_actors(
    spec: WorkerSpec, n_actors: int, *, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0, max_restarts: int = 3
) -> list[ActorHandle]:
    """`n_actors` Ray actors running `RolloutWorker(spec)` (Ray must be initialised)."""
    ray = import_ray()
    if n_actors < 1:
        raise ValueError(f"got n_actors={n_actors}; it must be >= 1")
    actor_class = ray.remote(RolloutWorker).options(
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
        max_restarts=max_restarts,
        max_task_retries=0,
    )
    return [actor_class.remote(spec) for _ in range(n_actors)]


@dataclass
class _Chunk:
    keys: list[Key]
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def chunks_of(problems: Sequence[Problem], rollouts: int, done: set[Key], size: int) -> list[_Chunk]:
    """The missing (problem, rollout) pairs, in order, cut into chunks of at most `size`."""
    keys = [(p.id, r) for p, r in work_items(problems, rollouts, done)]
    return [_Chunk(keys[i : i + size]) for i in range(0, len(keys), size)]


def collect_rollouts_on_ray(
    problems: Sequence[Problem],
    store: TrajectoryStore,
    actors: Sequence[ActorHandle],
    *,
    rollouts: int,
    chunk_size: int | None = None,
    max_attempts: int = 3,
    on_trajectory: Callable[[dict[str, Any], RolloutStats], None] | None = None,
) -> RolloutStats:
    """Run every (problem, rollout) not yet in `store` on `actors`, appending each record to `store`.

    chunk_size: work items per actor call (default: about 4 chunks per actor, at most 128). Small
    chunks balance the load and leave the engine's batch draining more often; a killed actor costs
    only its chunk's unfinished trajectories either way.
    max_attempts: calls of one chunk before the run stops with its errors. An actor whose process
    died gets work again once Ray has restarted it; one that died more than its `max_restarts`
    is dropped."""
    ray = import_ray()
    if not actors:
        raise ValueError("got no Ray actors; start some with start_actors(spec, n)")
    by_id = {p.id: p for p in problems}
    total = sum(1 for _ in work_items(problems, rollouts, store.done))
    size = chunk_size or max(1, min(128, math.ceil(total / (4 * len(actors)))))
    pending = deque(chunks_of(problems, rollouts, store.done, size))
    pool = _Actors(actors)
    running: dict[Any, tuple[int, _Chunk]] = {}  # streaming call -> (actor index, chunk)
    stats = RolloutStats()
    started = time.perf_counter()
    while pending or running:
        while pool.idle and pending:
            index, chunk = pool.idle.pop(0), pending.popleft()
            keys = [k for k in chunk.keys if k not in store.done]
            chunk.attempts += 1
            call = actors[index].run.remote([by_id[pid] for pid in dict.fromkeys(pid for pid, _ in keys)], keys)
            running[call] = (index, chunk)
        if not running and not pool.probes:
            raise ClusterError(
                f"every Ray actor died for good; {sum(len(c.keys) for c in pending)} trajectories not run "
                f"(rerun to resume); {' | '.join(pool.deaths[-2:])}"
            )
        ready_calls, _ = ray.wait([*running, *pool.probes], num_returns=1, timeout=NODE_CHECK_S)
        if not ready_calls:  # a call to an actor on a lost node may never answer (no room to restart it)
            for call in pool.calls_on_lost_nodes(ray, running):
                index, chunk = running.pop(call)
                pool.wait_for(index)
                lost = NodeLost(f"node {pool.nodes[index]} of actor {index} was lost")
                _requeue(chunk, lost, store.done, pending, max_attempts)
            continue
        (ready,) = ready_calls
        if ready in pool.probes:
            pool.back(ray, ready)
            continue
        index, chunk = running[ready]
        try:
            record = ray.get(next(ready))
        except StopIteration:
            del running[ready]
            pool.idle.append(index)
            continue
        except ray.exceptions.RayError as err:
            del running[ready]
            if isinstance(err, ray.exceptions.RayActorError):  # it died: Ray restarts it; use it once it answers
                pool.wait_for(index)
            else:  # the engine raised: the actor itself is fine
                pool.idle.append(index)
            _requeue(chunk, err, store.done, pending, max_attempts)
            continue
        _store(record, store, stats, started, on_trajectory)
    stats.wall_s = time.perf_counter() - started
    return stats


class ClusterError(OSError):
    """The Ray cluster cannot run the work: every actor died for good (the message says why)."""


class NodeLost(RuntimeError):
    """The Ray node of an actor died while the actor ran a chunk."""


class _Actors:
    """The driver's view of its actors: which are idle, on which node each runs (learned when it
    first answers), which it waits for (probe call -> index), and why those gone for good died."""

    def __init__(self, handles: Sequence[ActorHandle]) -> None:
        self.handles = handles
        self.idle: list[int] = []
        self.nodes: dict[int, str] = {}
        self.probes: dict[Any, int] = {}
        self.deaths: list[str] = []
        for index in range(len(handles)):
            self.wait_for(index)

    def wait_for(self, index: int) -> None:
        """Probe actor `index` with a call that Ray retries until the actor is (back) up."""
        self.probes[self.handles[index].node.options(max_task_retries=-1).remote()] = index

    def back(self, ray: Any, probe: Any) -> None:
        index = self.probes.pop(probe)
        try:
            self.nodes[index] = ray.get(probe)
        except ray.exceptions.RayActorError as err:
            reason = _last_line(err)
            self.deaths.append(f"actor {index}: {reason}")
            logger.warning("Ray actor %d is gone for good (%s); going on with the others", index, reason)
            return
        self.idle.append(index)

    def calls_on_lost_nodes(self, ray: Any, running: dict[Any, tuple[int, _Chunk]]) -> list[Any]:
        dead = {node["NodeID"] for node in ray.nodes() if not node["Alive"]}
        return [call for call, (index, _) in running.items() if self.nodes.get(index) in dead]


def _last_line(err: BaseException) -> str:
    """The innermost message of a Ray error (its text ends with the cause's traceback)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _requeue(chunk: _Chunk, err: BaseException, done: set[Key], pending: deque[_Chunk], max_attempts: int) -> None:
    left = [k for k in chunk.keys if k not in done]
    chunk.errors.append(f"{type(err).__name__}: {_last_line(err)}")
    if not left:
        return
    if chunk.attempts >= max_attempts:
        raise RuntimeError(
            f"{len(left)} trajectories (first {left[0]}) failed on {chunk.attempts} actor calls; errors: {' | '.join(chunk.errors)}"
        )
    logger.warning("actor call failed (%s); %d of its trajectories queued again", chunk.errors[-1], len(left))
    pending.appendleft(_Chunk(left, chunk.attempts, chunk.errors))


def _store(
    record: dict[str, Any],
    store: TrajectoryStore,
    stats: RolloutStats,
    started: float,
    on_trajectory: Callable[[dict[str, Any], RolloutStats], None] | None,
) -> None:
    if (record["problem_id"], record["rollout"]) in store.done:
        logger.warning("trajectory %s came back twice; kept the stored one", (record["problem_id"], record["rollout"]))
        return
    store.append(record)
    stats.trajectories += 1
    stats.correct += bool(record["correct"])
    stats.completion_tokens += record.get("completion_tokens", 0)
    stats.wall_s = time.perf_counter() - started
    if on_trajectory is not None:
        on_trajectory(record, stats)


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ('auto', 'local' or HOST:PORT) unless already joined."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)


def actor_count(config: RolloutConfig, cpus_per_actor: float) -> int:
    """`config.ray_actors`, else as many actors as the cluster's CPUs (and GPUs) hold."""
    if config.ray_actors is not None:
        if config.ray_actors < 1:
            raise ValueError(f"got ray_actors={config.ray_actors}; it must be >= 1")
        return config.ray_actors
    resources = import_ray().cluster_resources()
    fits = int(resources.get("CPU", 1) // cpus_per_actor)
    if config.ray_gpus_per_actor > 0:
        fits = min(fits, int(resources.get("GPU", 0) // config.ray_gpus_per_actor))
        if fits < 1:
            raise ValueError(
                f"the Ray cluster has {resources.get('GPU', 0)} GPUs; --ray-gpus-per-actor {config.ray_gpus_per_actor} fits no actor"
            )
    return max(1, fits)


def run_rollouts_on_ray(config: RolloutConfig, progress: bool = True) -> RolloutStats:
    """`mucode rollout --ray ADDRESS`: like `run_rollouts`, with the work spread over Ray actors.
    Raises FolderInUse if another process is writing into `config.out`."""
    if not config.ray:
        raise ValueError("run_rollouts_on_ray needs config.ray (a Ray address such as 'auto')")
    check_before_run(config)  # bad input fails before the folder is touched or an actor starts
    check_ray_installed()
    check_resumable(config, Path(config.out))
    with folder_lock(config.out, COMMAND):
        return _run_on_ray(config, progress)


def _run_on_ray(config: RolloutConfig, progress: bool) -> RolloutStats:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    problem_set, problems = load_selected_problems(
        config.problems, config.problems_path, config.limit, config.seed, config.first
    )
    connect(config.ray)
    cpus_per_actor = float(config.workers or 1)
    n_actors = actor_count(config, cpus_per_actor)
    write_run_metadata(
        config, out, [p.id for p in problems], {"problems_sha256": problem_set.sha256, "ray_actors": n_actors}
    )
    store = TrajectoryStore(out)
    logger.info(
        "%d problems x %d rollouts on %d Ray actors (%s CPUs, %s GPUs each)",
        len(problems),
        config.rollouts,
        n_actors,
        cpus_per_actor,
        config.ray_gpus_per_actor,
    )
    bar = RolloutProgress(len(problems) * config.rollouts, store) if progress else None
    spec = replace(WorkerSpec.from_config(config), preset=ship_preset(config.model))
    actors = start_actors(
        spec,
        n_actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=config.ray_gpus_per_actor,
    )
    try:
        return collect_rollouts_on_ray(
            problems,
            store,
            actors,
            rollouts=config.rollouts,
            on_trajectory=bar.update if bar else None,
        )
    finally:
        ray = import_ray()
        for actor in actors:
            ray.kill(actor)
        store.close()
        if bar is not None:
            bar.close()
