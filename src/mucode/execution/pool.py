"""`Executor`: runs many programs in parallel, each in its own sandbox, through a pool of workers.

    with Executor(workers=4) as executor:
        result = executor.run(program, tests)                  # one ExecResult
        results = executor.run_many([(program, tests, setup)])  # many, in order

It is a plain callable too (`executor(program, tests)`), e.g. for another framework's reward
function. Workers are separate processes started fresh (never forked from the caller, which may
hold models and threads); a worker that dies is replaced and its job reported as INFRA_ERROR.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

from mucode.execution.limits import Limits
from mucode.execution.wire import HEADER, read_exact, send_frame
from mucode.types import ExecResult, Status, Test, Verdict, test_to_dict


Job = tuple[str, Sequence[Test], str]

_warned_modes: set[str] = set()
_MODE_WARNINGS = {
    "userns": "mucode sandbox: running without root, so programs keep your uid (inside user, PID, "
    "mount and network namespaces); run as root for a dedicated unprivileged uid per worker.",
    "none": "mucode sandbox: Linux namespaces are unavailable here, so programs have NO network or "
    "file-system isolation and escaped descendants may survive; only resource limits apply.",
}
UNSAFE_ENV = "MUCODE_UNSAFE_NO_ISOLATION"
# The only variables a worker (and so every program, in /proc/self/environ) starts with.
_WORKER_ENV_PASSED = ("LD_LIBRARY_PATH", "MUCODE_SANDBOX_UID_BASE")


class IsolationUnavailable(OSError):
    """Neither root nor user namespaces: untrusted code would run unisolated, so it does not run
    (an OSError, so that every command reports it as a one-line `Error:`)."""


class _JudgeStalled(Exception):
    pass


def worker_environment() -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update({name: os.environ[name] for name in _WORKER_ENV_PASSED if name in os.environ})
    return env


# The worker gets the caller's import path explicitly (never the current folder, which may hold
# anything) so that it runs the same mucode whether installed or used from a source tree.
_WORKER_BOOT = "import json, sys; sys.argv.pop(0); sys.path[:] = json.loads(sys.argv[0]); from mucode.execution.worker import main; main()"


def _import_path() -> list[str]:
    return [os.path.abspath(p) for p in sys.path if p]


class _Worker:
    """A worker process and the pipes to it; used by one thread at a time."""

    def __init__(self, index: int) -> None:
        self.index = index
        # A minimal environment and a neutral folder: programs can read the environment their
        # worker started with (/proc/self/environ), and the caller's may hold secrets.
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOT, json.dumps(_import_path()), str(index), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_environment(),
            cwd="/",
            close_fds=True,
        )
        hello = self._receive(time.monotonic() + 60)
        if "fatal" in hello:
            self.close()
            raise RuntimeError(f"mucode sandbox worker failed to start: {hello['fatal']}")
        self.mode = hello.get("mode", "none")
        self.uid: int | None = hello.get("uid")
        self.limits_mechanism = str(hello.get("limits_mechanism", "rlimit"))

    def _read_exact(self, size: int, end: float) -> bytes:
        fd = self.process.stdout.fileno()

        def wait_readable() -> None:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _JudgeStalled()

        return read_exact(fd, size, wait_readable)

    def _receive(self, end: float) -> dict:
        (size,) = HEADER.unpack(self._read_exact(HEADER.size, end))
        return json.loads(self._read_exact(size, end))

    def run(self, job: dict, step_s: float) -> dict:
        """Send a job and wait for its result. The judge reports progress after every step (loading,
        each test, each program's end); if it goes silent for `step_s` (e.g. stuck in a C loop over
        a value the program returned, where its own alarm cannot interrupt it), it is killed."""
        send_frame(self.process.stdin.fileno(), json.dumps(job).encode())
        while True:
            reply = self._receive(time.monotonic() + step_s)
            if "progress" not in reply:
                return reply

    def kill(self) -> None:
        try:
            self.process.send_signal(signal.SIGKILL)
        except OSError:
            pass

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Executor:
    """Pool of sandbox workers. `workers=None` means one per CPU core."""

    def __init__(
        self, workers: int | None = None, limits: Limits | None = None, unsafe_no_isolation: bool | None = None
    ) -> None:
        """`unsafe_no_isolation`: run programs even where no isolation is possible (neither root nor
        user namespaces); default: the environment variable MUCODE_UNSAFE_NO_ISOLATION=1."""
        if unsafe_no_isolation is None:
            unsafe_no_isolation = os.environ.get(UNSAFE_ENV) == "1"
        self.n_workers = workers or os.cpu_count() or 1
        if self.n_workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.limits = limits or Limits()
        self._idle: queue.Queue[int] = queue.Queue()
        self._workers: list[_Worker | None] = [None] * self.n_workers
        for index in range(self.n_workers):
            self._idle.put(index)
        self._threads = ThreadPoolExecutor(self.n_workers, thread_name_prefix="mucode-exec")
        first = self._worker(0)  # start one now: fail early, and learn the isolation mode
        self.mode = first.mode
        # How memory and process limits apply: "cgroup v1 (...)", "cgroup v2 (...)" or "rlimit (...)".
        self.limits_mechanism = first.limits_mechanism
        if self.mode == "none" and not unsafe_no_isolation:
            self.close()
            raise IsolationUnavailable(
                "no sandbox isolation is possible here (neither root nor Linux user namespaces), so mucode refuses "
                f"to run untrusted code; pass --unsafe-no-isolation (or set {UNSAFE_ENV}=1) to run it anyway"
            )
        if self.mode in _MODE_WARNINGS and self.mode not in _warned_modes:
            _warned_modes.add(self.mode)
            warnings.warn(_MODE_WARNINGS[self.mode], RuntimeWarning, stacklevel=2)
        if not self.limits_mechanism.startswith("cgroup") and "rlimit" not in _warned_modes:
            _warned_modes.add("rlimit")
            warnings.warn(
                "mucode sandbox: memory and process limits apply per process, not per program: "
                + self.limits_mechanism,
                RuntimeWarning,
                stacklevel=2,
            )

    @property
    def sandbox_uids(self) -> tuple[int, ...]:
        """The uids programs of the running workers have (root mode; empty otherwise): each is held
        by one worker on this host at a time."""
        return tuple(w.uid for w in self._workers if w is not None and w.uid is not None)

    def _worker(self, index: int) -> _Worker:
        worker = self._workers[index]
        if worker is None or worker.process.poll() is not None:
            worker = self._workers[index] = _Worker(index)
        return worker

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        for index, worker in enumerate(self._workers):
            if worker is not None:
                worker.close()
                self._workers[index] = None

    def __call__(
        self, program: str, tests: Sequence[Test], setup_code: str = "", limits: Limits | None = None
    ) -> ExecResult:
        return self.run(program, tests, setup_code, limits)

    def run(
        self, program: str, tests: Sequence[Test], setup_code: str = "", limits: Limits | None = None
    ) -> ExecResult:
        """Run `program` against `tests` (verdicts in test order)."""
        job = {
            "program": program,
            "setup_code": setup_code,
            "tests": [test_to_dict(t) for t in tests],
            "limits": (limits or self.limits).to_dict(),
        }
        index = self._idle.get()
        try:
            return self._run_on(index, job, len(tests))
        finally:
            self._idle.put(index)

    def _run_on(self, index: int, job: dict, n_tests: int) -> ExecResult:
        step_s = Limits.from_dict(job["limits"]).judge_step_s
        verdict: Verdict | None = None
        try:
            reply = self._worker(index).run(job, step_s)
        except _JudgeStalled:
            reply = {}
            verdict = Verdict(
                Status.TIMEOUT,
                f"the judge made no progress for {step_s:g} s (e.g. a test computing on a huge value the program returned); it was stopped",
            )
        except (OSError, EOFError, ValueError) as err:
            reply = {"fatal": f"worker died: {type(err).__name__}: {err}"}
        if "result" in reply:
            return ExecResult.from_dict(reply["result"])
        worker = self._workers[index]
        if worker is not None:
            worker.kill()
            worker.close()
            self._workers[index] = None
        verdict = verdict or Verdict(Status.INFRA_ERROR, f"sandbox worker failure: {reply.get('fatal', 'unknown')}")
        return ExecResult(verdicts=(verdict,) * n_tests)

    def run_many(self, jobs: Iterable[Job], progress: bool = False, desc: str = "executing") -> list[ExecResult]:
        """Run many (program, tests, setup_code) jobs in parallel; results in job order."""
        jobs = list(jobs)
        futures = [self._threads.submit(self.run, program, tests, setup) for program, tests, setup in jobs]
        if not progress:
            return [f.result() for f in futures]
        from tqdm.auto import tqdm

        results = []
        with tqdm(total=len(futures), desc=desc, unit="prog") as bar:
            for future in futures:
                results.append(future.result())
                bar.update(1)
        return results
