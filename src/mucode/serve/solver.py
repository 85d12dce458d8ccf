"""The solver behind `/v1/chat/completions`: one thread owns the generator and batches concurrent
requests onto it. Requests that arrive within `batch_window_s` of each other (up to `max_batch`)
and share their search settings run as one `search_problems` call, so their generation steps are
one batched generator call each; each request's turns reach it through its own callback as they
are decided (streaming)."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from mucode.engine import SearchTurn
from mucode.generation.base import SamplingParams
from mucode.search import SearchRecord, search_problems
from mucode.types import Problem


OnTurn = Callable[[int, SearchTurn], None]


@dataclass(frozen=True)
class SolveOptions:
    """The search settings of one request; requests with equal options can share a batch."""

    n: int
    turns: int
    selector: str
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


@dataclass
class _Job:
    problem: Problem
    options: SolveOptions
    on_turn: OnTurn | None
    future: Future = field(default_factory=Future)


def problem_id(prompt: str, tests: Any) -> str:
    """A request's problem id: the same problem gets the same id, so the same seeded request gives
    the same search whatever else shares its batch or how often the server restarted."""
    return "request-" + hashlib.sha256(repr((prompt, tests)).encode()).hexdigest()[:16]


class Solver:
    """Batches solve requests onto one generator (thread-safe `submit`)."""

    def __init__(
        self, generator: Any, executor: Any, scorer: Any = None, *, max_batch: int = 16, batch_window_s: float = 0.05
    ):
        self.generator, self.executor, self.scorer = generator, executor, scorer
        self.max_batch, self.batch_window_s = max_batch, batch_window_s
        self.batches: list[int] = []  # requests per generator batch, for /health and the benchmark
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="mucode-solver", daemon=True)
        self._thread.start()

    def submit(self, problem: Problem, options: SolveOptions, on_turn: OnTurn | None = None) -> Future:
        """Queue one problem; the future's result is its `SearchRecord`."""
        job = _Job(problem, options, on_turn)
        self._jobs.put(job)
        return job.future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            for group in _groups(self._collect(first)):
                self._run(group)

    def _collect(self, first: _Job) -> list[_Job]:
        batch, deadline = [first], time.monotonic() + self.batch_window_s
        while len(batch) < self.max_batch:
            try:
                job = self._jobs.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # close() after this batch
                break
            batch.append(job)
        return batch

    def _run(self, jobs: list[_Job]) -> None:
        options = jobs[0].options
        by_id = {job.problem.id: job for job in jobs}

        def on_turn(problem: Problem, search: int, number: int, turn: SearchTurn) -> None:
            callback = by_id[problem.id].on_turn
            if callback is not None:
                callback(number, turn)

        self.batches.append(len(jobs))
        try:
            records = search_problems(
                [job.problem for job in jobs],
                self.generator,
                self.executor,
                n=options.n,
                selector=options.selector,
                turns=options.turns,
                seed=options.seed,
                scorer=self.scorer,
                max_live=len(jobs),
                on_turn=on_turn,
                sampling=SamplingParams(
                    temperature=options.temperature, top_p=options.top_p, max_new_tokens=options.max_new_tokens
                ),
            )
        except Exception as err:  # noqa: BLE001  (the request gets the error; the solver thread lives on)
            for job in jobs:
                job.future.set_exception(err)
            return
        for record in records:
            by_id[record.problem_id].future.set_result(record)


def _groups(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs split into runs of equal options and distinct problem ids (a repeated identical request
    goes to a later group, so each search keeps its own seeded stream)."""
    groups: list[list[_Job]] = []
    for job in jobs:
        target = next(
            (g for g in groups if g[0].options == job.options and all(j.problem.id != job.problem.id for j in g)), None
        )
        if target is None:
            groups.append([job])
        else:
            target.append(job)
    return groups


def record_summary(record: SearchRecord) -> dict[str, Any]:
    """The documented `mucode` field of a response: every turn with its candidates, verdicts and
    scores (the search record of docs/search.md)."""
    return record.to_dict()
