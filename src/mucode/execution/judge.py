"""The trusted side of one program run: decides every verdict.

The program runs in a sandboxed process (see `child.py`). The judge evaluates the *tests* itself,
in its own process, with the program's functions bound to `Remote` proxies: calling one sends the
arguments to the sandbox and gets back an encoded result that can only decode to plain values or
to further handles (see `codec.py`). A test passes only when its statements finish here without
raising, so nothing the program prints, returns, patches or exits with can forge a pass.

Consequences worth knowing: arguments are copied into the sandbox (in-place mutation of an argument
is not seen by the test), a program object never equals a plain value, and `x in obj` compares the
items the program yields here (its `__contains__` is not trusted).
"""

from __future__ import annotations

import builtins
import importlib
import json
import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mucode.execution import codec
from mucode.execution.asserts import FAIL, TestFailure, compile_test, fail
from mucode.execution.limits import Limits
from mucode.execution.outputs import normalised_lines, outputs_match
from mucode.execution.wire import HEADER
from mucode.types import AssertTest, IOTest, Status, Verdict


KILL_GRACE_S = 1.5  # how long the sandbox parent gets to report after being asked to kill


@dataclass
class Clock:
    """Deadlines of one job. Scope 'test': each step (loading, each test) has timeout_s of its own;
    scope 'suite': all steps of the job share one timeout_s, counted from the job's start."""

    limits: Limits
    suite_end: float = field(init=False)

    def __post_init__(self) -> None:
        self.suite_end = time.monotonic() + self.limits.timeout_s

    @property
    def per_suite(self) -> bool:
        return self.limits.timeout_scope == "suite"

    def step_limit(self, test: AssertTest | IOTest | None = None) -> float:
        """Seconds one step may take: the test's own limit when it has a lower one."""
        return self.limits.timeout_s if test is None else effective_timeout(test, self.limits)

    def deadline(self, test: AssertTest | IOTest | None = None) -> float:
        step_end = time.monotonic() + self.step_limit(test)
        return min(self.suite_end, step_end) if self.per_suite else step_end

    def spent(self) -> bool:
        return self.per_suite and time.monotonic() >= self.suite_end

    def over(self, what: str, test: AssertTest | IOTest | None = None) -> str:
        if self.per_suite and time.monotonic() >= self.suite_end:
            return f"{what} ran past the {self.limits.timeout_s:g} s limit of the whole program (timeout per suite)"
        return f"{what} took longer than {self.step_limit(test):g} s"


class InfraError(RuntimeError):
    """The harness failed (not the program): the verdict is INFRA_ERROR."""


class _TimedOut(Exception):
    pass


class _ProgramGone(Exception):
    """The sandboxed process closed the channel (exited, crashed or was killed)."""


class _ChannelAbuse(Exception):
    """The sandboxed side sent bytes that are not a valid message."""


class RemoteError(Exception):
    """An exception raised by the program; `program_traceback` holds its program lines."""

    type_name = "Exception"
    program_traceback = ""


_REMOTE_CLASSES: dict[str, type] = {}
_NOT_RECREATED = {"SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseExceptionGroup", "ExceptionGroup"}


def remote_exception(type_name: str, message: str, trace: str) -> RemoteError:
    """An exception that is both a RemoteError and, for builtin types, an instance of that type, so
    that tests such as `try: f() except ValueError: ...` behave as they would in-process."""
    cls = _REMOTE_CLASSES.get(type_name)
    if cls is None:
        base = getattr(builtins, type_name, None)
        bases: tuple[type, ...] = (RemoteError,)
        if isinstance(base, type) and issubclass(base, Exception) and type_name not in _NOT_RECREATED:
            bases = (RemoteError, base)
        try:
            cls = type(f"Program{type_name}", bases, {"type_name": type_name})
        except TypeError:  # incompatible layouts
            cls = type(f"Program{type_name}", (RemoteError,), {"type_name": type_name})
        _REMOTE_CLASSES[type_name] = cls
    try:
        err = cls.__new__(cls)
    except TypeError:  # e.g. MemoryError.__new__ refuses subclasses
        err = BaseException.__new__(cls)
    Exception.__init__(err, message)
    err.program_traceback = trace
    return err


@dataclass
class _Output:
    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > room:
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class SandboxRun:
    """One sandboxed process seen from the judge: its channel, its output and its end."""

    def __init__(self, fds: dict[str, int], limits: Limits, stdin_data: bytes = b"") -> None:
        self.fds = fds  # judge ends: rpc, stdout, stderr, control (+ stdin for stdin/stdout tests)
        self.limits = limits
        self.stdout = _Output(limits.max_output_bytes)
        self.stderr = _Output(limits.max_output_bytes)
        self.rpc_buffer = bytearray()
        self.stdin_left = memoryview(stdin_data)
        self.status_text = bytearray()
        self.open = {name for name, fd in fds.items() if fd >= 0}
        for fd in fds.values():
            if fd >= 0:
                os.set_blocking(fd, False)
        if not stdin_data and "stdin" in self.open:
            self._close("stdin")
        self.deadline = 0.0
        self.callbacks: dict[int, Callable[..., Any]] = {}
        self.exit_info: dict[str, int] | None = None

    # -- low level -------------------------------------------------------------------------
    def _close(self, name: str) -> None:
        if name in self.open:
            os.close(self.fds[name])
            self.open.discard(name)

    def _pump(self, timeout: float) -> None:
        """Wait up to `timeout` s for any fd to be ready and move its bytes where they belong."""
        poller = select.poll()
        by_fd = {}
        for name in self.open:
            fd = self.fds[name]
            by_fd[fd] = name
            poller.register(fd, select.POLLOUT if name == "stdin" else select.POLLIN)
        if not by_fd:
            time.sleep(max(0.0, min(timeout, 0.01)))
            return
        for fd, _event in poller.poll(max(0, int(timeout * 1000) + 1)):
            name = by_fd[fd]
            if name == "stdin":
                self._feed_stdin()
                continue
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                self._close(name)
            elif name == "rpc":
                self.rpc_buffer += chunk
                if len(self.rpc_buffer) > self.limits.max_message_bytes + HEADER.size:
                    raise _ChannelAbuse(f"the program sent more than {self.limits.max_message_bytes} bytes")
            elif name == "stdout":
                self.stdout.add(chunk)
            elif name == "stderr":
                self.stderr.add(chunk)
            elif name == "control":
                self.status_text += chunk

    def _feed_stdin(self) -> None:
        try:
            written = os.write(self.fds["stdin"], self.stdin_left[: 1 << 16])
            self.stdin_left = self.stdin_left[written:]
        except (BlockingIOError, InterruptedError):
            return
        except BrokenPipeError:
            self.stdin_left = memoryview(b"")
        if not self.stdin_left:
            self._close("stdin")

    def _take_frame(self) -> bytes | None:
        if len(self.rpc_buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self.rpc_buffer)
        if size > self.limits.max_message_bytes:
            raise _ChannelAbuse(f"the program sent a {size}-byte message")
        if len(self.rpc_buffer) < HEADER.size + size:
            return None
        frame = bytes(self.rpc_buffer[HEADER.size : HEADER.size + size])
        del self.rpc_buffer[: HEADER.size + size]
        return frame

    def next_message(self) -> list:
        """The next message from the program, within the current deadline."""
        while True:
            frame = self._take_frame()
            if frame is not None:
                try:
                    message = json.loads(frame)
                except (ValueError, RecursionError):
                    raise _ChannelAbuse("undecodable message") from None
                if not isinstance(message, list) or not message or not isinstance(message[0], str):
                    raise _ChannelAbuse("malformed message")
                return message
            if "rpc" not in self.open:
                raise _ProgramGone()
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut()
            self._pump(remaining)

    def send(self, message: list) -> None:
        payload = json.dumps(message, separators=(",", ":")).encode()
        data = memoryview(HEADER.pack(len(payload)) + payload)
        while data:
            if "rpc" not in self.open:
                raise _ProgramGone()
            try:
                written = os.write(self.fds["rpc"], data)
                data = data[written:]
            except BlockingIOError:
                if time.monotonic() > self.deadline:
                    raise _TimedOut() from None
                self._pump(0.005)
            except (BrokenPipeError, ConnectionResetError):
                raise _ProgramGone() from None

    # -- values ------------------------------------------------------------------------------
    def decode(self, data: Any) -> Any:
        try:
            return codec.decode(data, self._remote)
        except (codec.DecodeError, RecursionError, TypeError, KeyError) as err:
            raise _ChannelAbuse(f"invalid value: {err}") from None

    def _remote(self, tag: dict) -> Remote:
        hid, type_name, text = tag.get("h"), tag.get("ty", "object"), tag.get("r", "")
        if type(hid) is not int or tag.get("cb"):
            raise codec.DecodeError("bad handle")
        return Remote(self, hid, str(type_name)[:80], str(text)[:300], bool(tag.get("cl")))

    def encode(self, value: Any) -> Any:
        return codec.encode(value, self._handle_for_program)

    def _handle_for_program(self, obj: Any) -> dict:
        if isinstance(obj, Remote):
            if obj._run is not self:
                raise TypeError("a program object from another run cannot be passed here")
            return {"h": obj._hid}
        if callable(obj):
            cid = len(self.callbacks) + 1
            self.callbacks[cid] = obj
            return {"h": cid, "cb": 1}
        raise TypeError(f"cannot pass a {type(obj).__name__} to the program")

    def request(self, message: list) -> Any:
        """Send a request about a program object and return the decoded answer."""
        self.send(message)
        while True:
            reply = self.next_message()
            kind = reply[0]
            if kind == "ok" and len(reply) == 2:
                return self.decode(reply[1])
            if kind == "raise" and len(reply) == 4 and all(isinstance(x, str) for x in reply[1:]):
                raise remote_exception(reply[1][:100], reply[2][:1000], reply[3][:2000])
            if kind == "callback" and len(reply) == 4:
                self._serve_callback(reply)
                continue
            raise _ChannelAbuse(f"unexpected message {kind!r}")

    def _serve_callback(self, message: list) -> None:
        function = self.callbacks.get(message[1]) if type(message[1]) is int else None
        if function is None:
            raise _ChannelAbuse("unknown callback")
        args, kwargs = self.decode(message[2]), self.decode(message[3])
        if type(args) is not list or type(kwargs) is not dict:
            raise _ChannelAbuse("bad callback arguments")
        try:
            result = function(*args, **kwargs)
            self.send(["reply", self.encode(result)])
        except (_TimedOut, _ProgramGone, _ChannelAbuse):
            raise
        except Exception as err:  # noqa: BLE001 - reported to the program as a RuntimeError
            self.send(["reply_raise", f"{type(err).__name__}: {err}"[:500]])

    # -- end ---------------------------------------------------------------------------------
    def finish(self) -> dict[str, int]:
        """Kill the sandbox (and everything it started), collect output and how it ended."""
        if self.exit_info is not None:
            return self.exit_info
        if "control" in self.open:  # our half of the control socket ends: the zygote kills, then reports
            with socket.socket(fileno=os.dup(self.fds["control"])) as control:
                try:
                    control.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        self._close("rpc")
        self._close("stdin")
        end = time.monotonic() + KILL_GRACE_S + self.limits.timeout_s
        while self.open & {"stdout", "stderr", "control"} and time.monotonic() < end:
            self._pump(end - time.monotonic())
        for name in list(self.open):
            self._close(name)
        try:
            info = json.loads(self.status_text.decode() or "null")
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise InfraError("the sandbox parent did not report how the program ended")
        self.exit_info = info
        return info


class Remote:
    """A program object that stays in the sandbox; operations on it are requests."""

    __slots__ = ("_run", "_hid", "_type", "_text", "_callable")

    def __init__(self, run: SandboxRun, hid: int, type_name: str, text: str, is_callable: bool) -> None:
        self._run, self._hid, self._type, self._text, self._callable = run, hid, type_name, text, is_callable

    def __repr__(self) -> str:
        return self._text or f"<{self._type} object>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._run.request(["call", self._hid, self._run.encode(list(args)), self._run.encode(kwargs)])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._run.request(["getattr", self._hid, name])

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Remote):
            return False  # a program object never equals a plain value, whatever its __eq__ says
        answer = self._run.request(["eq", self._hid, self._run.encode(other)])
        if type(answer) is not bool:
            raise TypeError("comparison of program objects did not give a bool")
        return answer

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        # Asking the program is safe here: forging one bit is no more than returning True.
        answer = self._run.request(["bool", self._hid])
        if type(answer) is not bool:
            raise TypeError("bool() of a program object did not give a bool")
        return answer

    def __len__(self) -> int:
        answer = self._run.request(["len", self._hid])
        if type(answer) is not int:
            raise TypeError("len() of a program object did not give an int")
        return answer

    def __iter__(self) -> Any:
        return self._run.request(["iter", self._hid])

    def __next__(self) -> Any:
        return self._run.request(["next", self._hid])

    def __getitem__(self, key: Any) -> Any:
        return self._run.request(["getitem", self._hid, self._run.encode(key)])

    def __contains__(self, item: Any) -> bool:
        # Not delegated to the program's __contains__ (an object "containing" everything would
        # pass `x in f()` without knowing x): the items come here as values and are compared here.
        return any(value is item or value == item for value in iter(self))

    def __str__(self) -> str:
        answer = self._run.request(["str", self._hid])
        return answer if type(answer) is str else repr(self)


# -- verdicts --------------------------------------------------------------------------------------


def _program_error_message(err: RemoteError, limits: Limits) -> str:
    if err.type_name == "MemoryError":
        text = f"MemoryError: the program ran out of memory (its limit is {limits.memory_mb} MiB)"
    else:
        text = f"{err.type_name}: {err}" if str(err) else err.type_name
    return f"{text}\n{err.program_traceback}" if err.program_traceback else text


def _ending_verdict(info: dict[str, int], when: str) -> Verdict:
    """Verdict for a program that ended (on its own or by a signal) before the tests finished."""
    sig = info.get("signal")
    if sig:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        reason = {
            "SIGXCPU": " (CPU time limit)",
            "SIGXFSZ": " (file size limit)",
            "SIGSEGV": " (e.g. stack overflow)",
        }.get(name, "")
        if info.get("oom"):
            reason = f" (out of memory: the program and its processes may use {info['oom']} MiB together)"
        return Verdict(Status.CRASHED, f"the program was killed by {name}{reason} {when}")
    return Verdict(Status.ERROR, f"the program exited with code {info.get('exit', '?')} {when}")


def _on_alarm(signum: int, frame: Any) -> None:
    raise _TimedOut()


class _Alarm:
    """SIGALRM backstop for judge-side computation fed by program values (e.g. range(10**18))."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        if signal.getsignal(signal.SIGALRM) is not _on_alarm:
            signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self.seconds, 0.001))

    def __exit__(self, *exc: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)


# Modules the worker imports before it forks a program (a program's `import math` costs nothing).
PRELOADED_MODULES = (
    "array",
    "bisect",
    "cmath",
    "collections",
    "copy",
    "datetime",
    "decimal",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "json",
    "math",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "sys",
    "typing",
    "unicodedata",
)
# Modules the judge may bind for a test when the program imported them (tests often use the
# program's `import math`). Nothing else is ever imported on the program's word: importing a module
# runs its code in the trusted judge (e.g. `venv.__main__` creates virtual environments).
TEST_MODULES = frozenset(PRELOADED_MODULES) | {"numbers", "time", "textwrap", "enum", "dataclasses"}


def _namespace(run: SandboxRun, names: Any) -> dict[str, Any]:
    if not isinstance(names, dict):
        raise _ChannelAbuse("bad name table")
    namespace: dict[str, Any] = {"__name__": "__test__", "__builtins__": builtins, FAIL: fail}
    for name, entry in names.items():
        if not isinstance(entry, dict) or not name.isidentifier():
            raise _ChannelAbuse("bad name table")
        if "mod" in entry:
            module = str(entry["mod"])
            if module in TEST_MODULES:
                namespace[name] = importlib.import_module(module)
        elif "v" in entry:
            namespace[name] = run.decode(entry["v"])
    return namespace


def effective_timeout(test: AssertTest | IOTest, limits: Limits) -> float:
    """The test's own limit when it has one below the run's (the run's sets the sandbox's rlimits)."""
    return min(test.timeout_s, limits.timeout_s) if test.timeout_s else limits.timeout_s


def _clip(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit} more characters]"


def _run_one_assert(
    run: SandboxRun, namespace: dict[str, Any], test: AssertTest, limits: Limits, clock: Clock
) -> Verdict:
    started = time.monotonic()
    run.deadline = clock.deadline(test)
    took = lambda: time.monotonic() - started  # noqa: E731
    try:
        code = compile_test(test.code)
    except SyntaxError as err:
        return Verdict(Status.INFRA_ERROR, f"the test itself does not compile: {err.msg} (line {err.lineno})")
    try:
        if run.deadline <= started:
            raise _TimedOut()
        with _Alarm(run.deadline - started + 0.25):
            exec(code, namespace)  # noqa: S102 - test code is trusted; program values are proxies
    except TestFailure as failure:
        message = failure.source + (f"  # {failure.note}" if failure.note else "")
        return Verdict(Status.FAILED, message, failure.expected, failure.actual, took())
    except RemoteError as err:
        return Verdict(Status.ERROR, _program_error_message(err, limits), duration_s=took())
    except (_TimedOut, _ProgramGone, _ChannelAbuse):
        raise
    except RecursionError:
        return Verdict(Status.ERROR, "RecursionError: maximum recursion depth exceeded", duration_s=took())
    except MemoryError:
        return Verdict(
            Status.ERROR,
            "MemoryError: the test ran out of memory computing on the program's values",
            duration_s=took(),
        )
    except Exception as err:  # noqa: BLE001 - e.g. NameError for a missing function
        return Verdict(Status.ERROR, f"{type(err).__name__}: {err}"[:1000], duration_s=took())
    return Verdict(Status.PASSED, duration_s=took())


def run_assert_tests(
    run: SandboxRun,
    tests: Sequence[AssertTest],
    limits: Limits,
    progress: Callable[[], None] = lambda: None,
    clock: Clock | None = None,
) -> list[Verdict]:
    """Load the program in the sandbox, then run each test here against it (`progress()` after
    loading and after each test)."""
    clock = clock or Clock(limits)
    verdicts: list[Verdict] = []
    run.deadline = clock.deadline()
    pending: Verdict | None = None  # verdict for every remaining test once the program is gone
    try:
        message = run.next_message()
        if message[0] == "load_error" and len(message) == 4:
            text = f"{message[1]}: {message[2]}" + (f"\n{message[3]}" if message[3] else "")
            pending = Verdict(Status.ERROR, f"the program failed to load: {text}"[:2000])
        elif message[0] == "loaded" and len(message) == 2:
            namespace = _namespace(run, message[1])
        else:
            raise _ChannelAbuse("unexpected first message")
    except _TimedOut:
        pending = Verdict(Status.TIMEOUT, clock.over("loading the program"))
    except _ProgramGone:
        pending = _ending_verdict(run.finish(), "while loading")
    except _ChannelAbuse as err:
        pending = Verdict(Status.ERROR, f"the program corrupted the test channel: {err}")
    progress()
    for index, test in enumerate(tests):
        if index:
            progress()
        if pending is not None:
            verdicts.append(pending)
            continue
        try:
            verdicts.append(_run_one_assert(run, namespace, test, limits, clock))
        except _TimedOut:
            verdicts.append(Verdict(Status.TIMEOUT, clock.over("the test", test), duration_s=clock.step_limit(test)))
            pending = Verdict(Status.TIMEOUT, f"not run: the program was stopped after test {index + 1} timed out")
        except _ProgramGone:
            info = run.finish()
            verdicts.append(_ending_verdict(info, "during the test"))
            pending = _ending_verdict(info, f"during test {index + 1} (this test did not run)")
        except _ChannelAbuse as err:
            verdicts.append(Verdict(Status.ERROR, f"the program corrupted the test channel: {err}"))
            pending = Verdict(Status.ERROR, "not run: the program corrupted the test channel")
    return verdicts


def judge_io(run: SandboxRun, test: IOTest, limits: Limits, clock: Clock | None = None) -> Verdict:
    """Wait for the script to finish, then compare its stdout with the expected output."""
    clock = clock or Clock(limits)
    started = time.monotonic()
    run.deadline = clock.deadline(test)
    while "control" in run.open and time.monotonic() < run.deadline:  # open until the zygote reports
        run._pump(run.deadline - time.monotonic())
    timed_out = "control" in run.open
    info = run.finish()
    took = time.monotonic() - started
    if timed_out:
        return Verdict(Status.TIMEOUT, clock.over("the program", test), duration_s=took)
    if info.get("signal") or info.get("exit"):
        verdict = _ending_verdict(info, "")
        tail = run.stderr.text().strip()[-1500:]
        return Verdict(verdict.status, (verdict.message.strip() + (f"\n{tail}" if tail else "")), duration_s=took)
    if run.stdout.truncated:
        return Verdict(
            Status.FAILED, f"the program printed more than {limits.max_output_bytes} bytes", duration_s=took
        )
    try:
        if outputs_match(test.expected_stdout, run.stdout.text(), test.compare):
            return Verdict(Status.PASSED, duration_s=took)
    except ValueError as err:  # an unknown comparison: the test is broken, not the program
        return Verdict(Status.INFRA_ERROR, str(err), duration_s=took)
    expected, actual = normalised_lines(test.expected_stdout), normalised_lines(run.stdout.text())
    return Verdict(Status.FAILED, "wrong output", _clip("\n".join(expected)), _clip("\n".join(actual)), took)
