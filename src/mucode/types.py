"""Records shared by every part of mucode: problems, tests, verdicts, turns, episodes.

Plain dataclasses with no behaviour beyond (de)serialisation, so that every other module can import
them without pulling anything else in.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Union


@dataclass(frozen=True)
class AssertTest:
    """Python statements run after the program; the test passes iff they finish without raising.
    `timeout_s`: this test's own time limit (a benchmark's), used when below the run's limit."""

    code: str
    kind: Literal["assert"] = "assert"
    timeout_s: float | None = None


@dataclass(frozen=True)
class IOTest:
    """The program runs as a script with `stdin` as its input; it passes iff its standard output
    equals `expected_stdout` (trailing whitespace of each line and trailing blank lines ignored).
    `compare` names another benchmark's rule (`mucode.execution.outputs.COMPARE_MODES`);
    `timeout_s` is this test's own time limit, used when below the run's limit."""

    stdin: str
    expected_stdout: str
    kind: Literal["io"] = "io"
    compare: str = "lines"
    timeout_s: float | None = None


Test = Union[AssertTest, IOTest]


_TEST_DEFAULTS = {"compare": "lines", "timeout_s": None}


def test_to_dict(test: Test) -> dict[str, Any]:
    """The test's fields, leaving out `compare` and `timeout_s` at their defaults (older records)."""
    return {k: v for k, v in asdict(test).items() if k not in _TEST_DEFAULTS or v != _TEST_DEFAULTS[k]}


def test_from_dict(data: Mapping[str, Any]) -> Test:
    kind = data.get("kind", "assert")
    timeout_s = data.get("timeout_s")
    if kind == "assert":
        return AssertTest(code=data["code"], timeout_s=timeout_s)
    if kind == "io":
        compare = data.get("compare") or "lines"
        return IOTest(data["stdin"], data["expected_stdout"], compare=compare, timeout_s=timeout_s)
    raise ValueError(f"unknown test kind {kind!r}; expected 'assert' or 'io'")


@dataclass(frozen=True)
class Problem:
    """One programming problem.

    `public_tests` are shown to the model and drive feedback; `private_tests` decide correctness and
    are never shown. `setup_code` (MBPP's `test_setup_code`) runs after the program and before the
    tests: it may build test inputs with the program's own classes.
    """

    id: str
    source: str
    prompt: str
    public_tests: tuple[Test, ...]
    private_tests: tuple[Test, ...]
    entry_point: str | None = None
    setup_code: str = ""
    reference_solution: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "prompt": self.prompt,
            "public_tests": [test_to_dict(t) for t in self.public_tests],
            "private_tests": [test_to_dict(t) for t in self.private_tests],
            "entry_point": self.entry_point,
            "setup_code": self.setup_code,
            "reference_solution": self.reference_solution,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        return cls(
            id=str(data["id"]),
            source=data.get("source", ""),
            prompt=data["prompt"],
            public_tests=tuple(test_from_dict(t) for t in data.get("public_tests", ())),
            private_tests=tuple(test_from_dict(t) for t in data.get("private_tests", ())),
            entry_point=data.get("entry_point"),
            setup_code=data.get("setup_code") or "",
            reference_solution=data.get("reference_solution"),
            metadata=dict(data.get("metadata") or {}),
        )


class Status(str, enum.Enum):
    """Outcome of one test. Only PASSED counts as a pass; INFRA_ERROR means the harness itself failed
    and the result must be retried or reported, never counted as the program's fault or success."""

    PASSED = "passed"
    FAILED = "failed"  # an assertion failed or the output differed
    ERROR = "error"  # the program raised, did not load, or exited early
    TIMEOUT = "timeout"
    CRASHED = "crashed"  # killed by a signal (segfault, CPU limit, ...)
    INFRA_ERROR = "infra_error"


@dataclass(frozen=True)
class Verdict:
    """Result of one test. `message` is short and free of sandbox paths; `expected`/`actual` are
    reprs when the harness could recover them (a failed `assert x == y`, a wrong stdout)."""

    status: Status
    message: str = ""
    expected: str | None = None
    actual: str | None = None
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(
            status=Status(data["status"]),
            message=data.get("message", ""),
            expected=data.get("expected"),
            actual=data.get("actual"),
            duration_s=data.get("duration_s", 0.0),
        )


@dataclass(frozen=True)
class ExecResult:
    """Verdicts of one program against a list of tests (same order), plus what it printed."""

    verdicts: tuple[Verdict, ...]
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        """True iff there was at least one test and every test passed."""
        return bool(self.verdicts) and all(v.passed for v in self.verdicts)

    @property
    def infra_error(self) -> bool:
        return any(v.status is Status.INFRA_ERROR for v in self.verdicts)

    @property
    def n_passed(self) -> int:
        return sum(v.passed for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdicts": [v.to_dict() for v in self.verdicts],
            "stdout": self.stdout,
            "stderr": self.stderr,
            "output_truncated": self.output_truncated,
            "duration_s": self.duration_s,
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecResult:
        return cls(
            verdicts=tuple(Verdict.from_dict(v) for v in data["verdicts"]),
            stdout=data.get("stdout", ""),
            stderr=data.get("stderr", ""),
            output_truncated=data.get("output_truncated", False),
            duration_s=data.get("duration_s", 0.0),
        )
