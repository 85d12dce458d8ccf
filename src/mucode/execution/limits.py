"""Resource limits of one sandboxed program, with the defaults used everywhere."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

from mucode.config import option


TIMEOUT_SCOPES = ("test", "suite")


@dataclass(frozen=True)
class Limits:
    """What one program may use (see docs/sandbox.md for which mechanism applies each limit)."""

    timeout_s: float = option(3.0, "Wall-clock limit per test (and for loading the program), in seconds.")
    timeout_scope: Literal["test", "suite"] = option(
        "test",
        "What timeout_s bounds: 'test' (loading, then each test, each on its own clock) or 'suite' "
        "(loading and all tests of one program together, as the reference code's 10 s per suite).",
    )
    memory_mb: int = option(
        2048,
        "Memory of the program and all its processes together (cgroup, where the host has one) "
        "and address space of each process, in MiB.",
    )
    max_processes: int = option(32, "Processes and threads the program may have at once.")
    max_open_files: int = option(128, "Open file descriptors per process.")
    max_file_size_mb: int = option(16, "Largest file the program may write, in MiB.")
    scratch_mb: int = option(64, "Size of the private temporary file systems (/tmp, /dev/shm, ...), in MiB.")
    max_output_bytes: int = option(64 * 1024, "Bytes of stdout and of stderr kept (the rest is read and dropped).")
    max_message_bytes: int = option(
        32 * 1024 * 1024, "Largest value a program may return to a test, in bytes once encoded."
    )

    def __post_init__(self) -> None:
        for name in (
            "timeout_s",
            "memory_mb",
            "max_processes",
            "max_open_files",
            "max_file_size_mb",
            "scratch_mb",
            "max_output_bytes",
            "max_message_bytes",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {value!r}")
        if self.timeout_scope not in TIMEOUT_SCOPES:
            scopes = ", ".join(TIMEOUT_SCOPES)
            raise ValueError(f"Limits.timeout_scope must be one of {scopes}, got {self.timeout_scope!r}")

    @property
    def cpu_time_s(self) -> int:
        """CPU-seconds backstop (RLIMIT_CPU) of one step; the wall clock normally ends a run first."""
        return math.ceil(self.timeout_s) + 1

    def cpu_time_for(self, n_tests: int) -> int:
        """RLIMIT_CPU of a process that loads the program and then serves `n_tests` tests: with a
        timeout per test, each step may use its own timeout of CPU (a process-wide limit of one
        timeout would kill a correct program in its later tests)."""
        return self.cpu_time_s * (1 if self.timeout_scope == "suite" else 1 + max(n_tests, 0))

    @property
    def judge_step_s(self) -> float:
        """Host-side deadline between two progress reports of the judge (one test, or one program's
        end, which may take a timeout plus the kill grace); past it the worker is killed."""
        return 2 * self.timeout_s + 3.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        return cls(**dict(data))
