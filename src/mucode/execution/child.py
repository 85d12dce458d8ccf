"""The sandboxed side: runs inside the forked, limited, unprivileged process and nowhere else.

Everything here is under the program's control once the program runs (it can patch any of it), so
nothing here decides a verdict: it only loads the program and answers requests from the trusted
judge (call this function with these arguments, ...) with encoded values. See `judge.py`.
"""

from __future__ import annotations

import builtins
import io
import json
import linecache
import os
import sys
import traceback
import types
from typing import Any, NoReturn

from mucode.execution import codec, isolation
from mucode.execution.limits import Limits
from mucode.execution.wire import recv_frame, send_frame


PROGRAM_FILE = "<solution>"
SETUP_FILE = "<setup>"
RPC_FD = 3
MODULE_NAME = "solution"  # not "__main__": `if __name__ == "__main__":` demos must not run under tests


def prepare_zygote() -> None:
    """Once, in the zygote: the environment and standard streams every program starts with (done
    here rather than per program, because both cost a noticeable share of a short run)."""
    os.environ.clear()
    os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})
    # These wrap fds 0-2 by number: each program dup2()s its own pipes there before running.
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True
    )


def enter_sandbox(
    *,
    workdir: str,
    uid: int | None,
    limits: Limits,
    n_tests: int,
    rpc_fd: int,
    stdin_fd: int,
    stdout_fd: int,
    stderr_fd: int,
    isolated: bool,
) -> None:
    """Turn the freshly forked process into the sandbox: own session, clean fds, limits, no root."""
    os.setsid()
    os.dup2(stdin_fd, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    if rpc_fd >= 0:
        os.dup2(rpc_fd, RPC_FD)
    os.closerange(RPC_FD + 1 if rpc_fd >= 0 else 3, 1 << 16)
    os.chdir(workdir)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    isolation.set_resource_limits(limits, n_tests)
    if isolated:
        isolation.drop_privileges(uid)
    else:
        isolation.prctl(isolation.PR_SET_NO_NEW_PRIVS, 1)


def _register_source(filename: str, source: str) -> None:
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def format_exception(err: BaseException) -> tuple[str, str, str]:
    """(type name, message, traceback restricted to program lines)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename in (PROGRAM_FILE, SETUP_FILE)]
    lines = []
    for frame in frames[-5:]:
        where = "line" if frame.filename == PROGRAM_FILE else "setup line"
        lines.append(f"  {where} {frame.lineno}, in {frame.name}" + (f"\n    {frame.line}" if frame.line else ""))
    if isinstance(err, SyntaxError) and err.filename == PROGRAM_FILE:
        text = (err.text or "").rstrip()
        lines.append(f"  line {err.lineno}" + (f"\n    {text}" if text else ""))
        message = err.msg
    else:
        message = _safe_str(err)
    return type(err).__name__, message, "\n".join(lines)


def _safe_str(obj: Any, limit: int = 1000) -> str:
    try:
        text = str(obj)
    except BaseException:  # noqa: BLE001 - the program controls __str__
        text = f"<unprintable {type(obj).__name__}>"
    return text[:limit]


def _safe_repr(obj: Any, limit: int = 300) -> str:
    try:
        text = repr(obj)
    except BaseException:  # noqa: BLE001
        text = f"<unprintable {type(obj).__name__}>"
    return text[:limit]


def load_program(program: str, setup_code: str, name: str) -> dict[str, Any]:
    """Run the program, then the setup code (MBPP's test_setup_code builds test inputs with the
    program's own classes, so it must come after the program and before the tests)."""
    namespace: dict[str, Any] = {"__name__": name, "__builtins__": builtins}
    for filename, source in ((PROGRAM_FILE, program), (SETUP_FILE, setup_code)):
        if source:
            _register_source(filename, source)
            # dont_inherit: the program gets its own compile flags, not this module's __future__ imports
            exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102 - this is the sandbox
    return namespace


class _Server:
    """Answers the judge's requests about the objects of the loaded program."""

    def __init__(self, namespace: dict[str, Any], max_bytes: int) -> None:
        self.namespace = namespace
        self.max_bytes = max_bytes
        self.handles: dict[int, Any] = {}

    def handle_of(self, obj: Any) -> dict:
        hid = len(self.handles) + 1
        self.handles[hid] = obj
        return {"h": hid, "ty": type(obj).__name__[:80], "r": _safe_repr(obj), "cl": callable(obj)}

    def decode_ref(self, tag: dict) -> Any:
        if tag.get("cb"):
            return self._callback(tag["h"])
        return self.handles[tag["h"]]

    def _callback(self, cid: int):
        def call_judge(*args: Any, **kwargs: Any) -> Any:
            self.send(["callback", cid, self.encode(list(args)), self.encode(kwargs)])
            return self.receive_reply()

        return call_judge

    def encode(self, value: Any) -> Any:
        return codec.encode(value, self.handle_of)

    def send(self, message: list) -> None:
        sys.stdout.flush()
        payload = json.dumps(message, separators=(",", ":")).encode()
        if len(payload) > self.max_bytes:
            payload = json.dumps(
                ["raise", "ValueError", f"returned value too large ({len(payload)} bytes encoded)", ""]
            ).encode()
        send_frame(RPC_FD, payload)

    def receive(self) -> list:
        return json.loads(recv_frame(RPC_FD))

    def receive_reply(self) -> Any:
        """Wait for the judge's answer to a callback, serving nested requests meanwhile."""
        while True:
            message = self.receive()
            if message[0] == "reply":
                return codec.decode(message[1], self.decode_ref)
            if message[0] == "reply_raise":
                raise RuntimeError(message[1])
            self.serve_one(message)

    def names(self) -> dict[str, Any]:
        table = {}
        for name, value in self.namespace.items():
            if name.startswith("__"):
                continue
            if isinstance(value, types.ModuleType):
                table[name] = {"mod": value.__name__}
            else:
                table[name] = {"v": self.encode(value)}
        return table

    def serve_one(self, request: list) -> None:
        try:
            result = self.perform(request)
            self.send(["ok", self.encode(result)])
        except BaseException as err:  # noqa: BLE001 - every program error goes back to the judge
            self.send(["raise", *format_exception(err)])

    def perform(self, request: list) -> Any:
        op = request[0]
        target = self.handles[request[1]]
        if op == "call":
            args = codec.decode(request[2], self.decode_ref)
            kwargs = codec.decode(request[3], self.decode_ref)
            return target(*args, **kwargs)
        if op == "getattr":
            return getattr(target, request[2])
        other = codec.decode(request[2], self.decode_ref) if len(request) > 2 else None
        if op == "eq":
            return bool(target == other)
        if op == "len":
            return len(target)
        if op == "iter":
            return iter(target)
        if op == "next":
            return next(target)
        if op == "getitem":
            return target[other]
        if op == "bool":
            return bool(target)
        if op == "str":
            return _safe_str(target)
        if op == "repr":
            return _safe_repr(target)
        raise ValueError(f"unknown request {op!r}")


def serve_assert_mode(program: str, setup_code: str, limits: Limits) -> NoReturn:
    try:
        namespace = load_program(program, setup_code, MODULE_NAME)
        server = _Server(namespace, limits.max_message_bytes)
        server.send(["loaded", server.names()])
    except BaseException as err:  # noqa: BLE001
        sys.stdout.flush()
        send_frame(RPC_FD, json.dumps(["load_error", *format_exception(err)]).encode())
        os._exit(0)
    while True:
        try:
            request = server.receive()
        except EOFError:
            break
        server.serve_one(request)
    os._exit(0)


def run_script_mode(program: str, setup_code: str) -> NoReturn:
    """Run the program as `__main__` reading stdin; the judge compares what it prints."""
    code = 0
    try:
        load_program(program, setup_code, "__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException as err:  # noqa: BLE001
        name, message, where = format_exception(err)
        sys.stderr.write(
            f"Traceback (program lines):\n{where}\n{name}: {message}\n" if where else f"{name}: {message}\n"
        )
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    os._exit(code)
