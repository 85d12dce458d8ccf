"""Hostile programs: none is ever a pass, each verdict arrives within timeout + 2 s, the run and
the host survive, and no process or temporary file is left behind."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from mucode.execution import Executor, Limits
from mucode.types import AssertTest, Status


TIMEOUT = 1.0
TESTS = [AssertTest("assert f(1) == 2"), AssertTest("assert f(2) == 4")]


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=Limits(timeout_s=TIMEOUT, memory_mb=512)) as ex:
        yield ex


def program_uids(executor: Executor) -> set[int]:
    """Whose processes a program's can be: the workers' sandbox uids (root mode), else ours."""
    return set(executor.sandbox_uids) if executor.mode == "root" else {os.getuid()}


def worker_namespaces(executor: Executor) -> set[str]:
    """The PID namespaces of the executor's workers (each worker's zygote is PID 1 of one)."""
    found = set()
    for worker in executor._workers:
        if worker is None:
            continue
        pid = worker.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            found.update(os.readlink(f"/proc/{child}/ns/pid") for child in handle.read().split())
    return found


def _status_fields(pid: str) -> dict[str, list[str]]:
    with open(f"/proc/{pid}/status") as handle:
        return {key: value.split() for key, _, value in (line.partition(":") for line in handle)}


def sandbox_processes(uids: set[int], namespaces: set[str]) -> list[int]:
    """Processes of programs, which must all be gone once a verdict is out: every process of the
    program uids in one of the workers' PID namespaces, except its PID 1 (the zygote). Other
    sessions' sandboxes on the same host are not counted."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _status_fields(entry)
            namespace = os.readlink(f"/proc/{entry}/ns/pid")
        except OSError:
            continue
        nspid = fields.get("NSpid", [])
        if int(fields["Uid"][0]) in uids and namespace in namespaces and nspid[-1:] != ["1"]:
            found.append(int(entry))
    return found


_TEMP_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")
_TEMP_AT_START = {e.path for folder in _TEMP_FOLDERS for e in os.scandir(folder)}


def sandbox_owned_temp_files(uids: set[int]) -> list[str]:
    """Entries in the host's temporary folders that a program may have made: owned by a sandbox uid
    (root mode), or (user-namespace mode) new since this module started, owned by us and not pytest's."""
    found = []
    for folder in _TEMP_FOLDERS:
        for entry in os.scandir(folder):
            try:
                uid = entry.stat(follow_symlinks=False).st_uid
            except OSError:
                continue
            if uid not in uids:
                continue
            if uid == os.getuid() and (entry.path in _TEMP_AT_START or entry.name.startswith("pytest-")):
                continue
            found.append(entry.path)
    return found


def run_hostile(executor: Executor, program: str, tests=TESTS):
    started = time.monotonic()
    result = executor.run(program, tests)
    elapsed = time.monotonic() - started
    assert not result.passed
    assert not any(v.passed for v in result.verdicts)
    assert elapsed <= TIMEOUT + 2.0, f"verdict took {elapsed:.1f} s"
    uids, namespaces = program_uids(executor), worker_namespaces(executor)
    deadline = time.monotonic() + 2
    while sandbox_processes(uids, namespaces) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes(uids, namespaces) == []
    assert sandbox_owned_temp_files(uids) == []
    # the run survives: the same executor still judges a correct program correctly
    assert executor.run("def f(x):\n    return 2 * x\n", TESTS).passed
    return result


def statuses(result) -> list[Status]:
    return [v.status for v in result.verdicts]


def test_isolation_mode_of_this_run(executor, capsys):
    with capsys.disabled():
        mode = f"{executor.mode} (euid {os.geteuid()}); limits: {executor.limits_mechanism}"
        print(f"\n[mucode sandbox] isolation mode: {mode}", flush=True)
    assert executor.mode == ("root" if os.geteuid() == 0 else "userns")


def test_busy_loop_in_function(executor):
    result = run_hostile(executor, "def f(x):\n    while True:\n        pass\n")
    assert statuses(result) == [Status.TIMEOUT, Status.TIMEOUT]


def test_busy_loop_at_load(executor):
    result = run_hostile(executor, "while True:\n    pass\n")
    assert statuses(result) == [Status.TIMEOUT, Status.TIMEOUT]
    assert "loading" in result.verdicts[0].message


def test_sleep_forever(executor):
    result = run_hostile(executor, "import time\ndef f(x):\n    time.sleep(10**6)\n")
    assert statuses(result)[0] is Status.TIMEOUT


def test_input_sees_closed_stdin(executor):
    result = run_hostile(executor, "def f(x):\n    return int(input())\n")
    assert statuses(result) == [Status.ERROR, Status.ERROR]
    assert "EOFError" in result.verdicts[0].message


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exit_before_the_asserts(executor, exit_call):
    result = run_hostile(executor, f"def f(x):\n    return 2 * x\n{exit_call}\n")
    assert all(s is Status.ERROR for s in statuses(result))


def test_exit_inside_the_function(executor):
    result = run_hostile(executor, "import os\ndef f(x):\n    os._exit(0)\n")
    assert all(s is Status.ERROR for s in statuses(result))
    assert "exited with code 0" in result.verdicts[0].message


def test_object_equal_to_everything(executor):
    program = (
        "class Anything:\n"
        "    def __eq__(self, other): return True\n"
        "    def __ne__(self, other): return False\n"
        "    def __contains__(self, item): return True\n"
        "    def __iter__(self): return iter([])\n"
        "def f(x):\n    return Anything()\n"
    )
    result = run_hostile(executor, program, TESTS + [AssertTest("assert 6 in f(3)")])
    assert statuses(result) == [Status.FAILED, Status.FAILED, Status.FAILED]


def test_int_subclass_equal_to_everything(executor):
    program = "class I(int):\n    def __eq__(self, other): return True\ndef f(x):\n    return I(0)\n"
    assert statuses(run_hostile(executor, program)) == [Status.FAILED, Status.FAILED]


def test_fork_bomb(executor):
    program = "import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    result = run_hostile(executor, program)
    assert statuses(result)[0] in (Status.TIMEOUT, Status.ERROR, Status.CRASHED)


def test_allocate_50_gb(executor):
    result = run_hostile(executor, "def f(x):\n    return len(bytearray(50 * 1024**3))\n")
    assert statuses(result)[0] is Status.ERROR
    assert "MemoryError" in result.verdicts[0].message


def test_infinite_recursion_with_raised_limit(executor):
    program = "import sys\nsys.setrecursionlimit(10**9)\ndef f(x):\n    return f(x + 1)\n"
    result = run_hostile(executor, program)
    # Python 3.11+ frames live on the heap: the memory limit, the C stack or the clock ends it
    assert statuses(result)[0] in (Status.CRASHED, Status.ERROR, Status.TIMEOUT)


def test_print_one_gigabyte(executor):
    program = "import sys\ndef f(x):\n    chunk = 'x' * (1 << 20)\n    for _ in range(1024):\n        sys.stdout.write(chunk)\n    return 0\n"
    result = run_hostile(executor, program)
    assert result.output_truncated
    assert len(result.stdout) <= Limits().max_output_bytes


def test_setsid_child_ignoring_sigterm(executor):
    program = (
        "import os, signal, time\n"
        "def f(x):\n"
        "    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(10**6)\n"
        "        os._exit(0)\n"
        "    return 0\n"
    )
    run_hostile(executor, program)  # asserts that no sandbox process survives


def test_kill_parent(executor):
    # The parent is the worker's zygote, PID 1 of the worker's PID namespace: as root it belongs to
    # another uid (EPERM); without root the kernel drops every signal PID 1 has no handler for when
    # it comes from inside the namespace. The judge is outside, invisible. The harness goes on judging.
    program = "import os\ndef f(x):\n    try:\n        os.kill(os.getppid(), 9)\n    except OSError:\n        pass\n    return -1\n"
    result = run_hostile(executor, program)
    assert statuses(result) == [Status.FAILED, Status.FAILED]


@pytest.fixture
def outside_dir():
    """A world-writable folder outside /tmp (on the repository's file system) with a file in it."""
    path = Path(__file__).resolve().parent / f".sandbox-target-{os.getpid()}"
    path.mkdir()
    path.chmod(0o777)
    (path / "precious.txt").write_text("keep me")
    (path / "precious.txt").chmod(0o666)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_write_and_delete_outside_workdir(executor, outside_dir):
    program = (
        "import os\n"
        f"TARGET = {str(outside_dir)!r}\n"
        "def f(x):\n"
        "    for action in (lambda: os.remove(os.path.join(TARGET, 'precious.txt')),\n"
        "                   lambda: open(os.path.join(TARGET, 'new.txt'), 'w').write('x'),\n"
        "                   lambda: open('/tmp/planted.txt', 'w').write('x')):\n"
        "        try:\n"
        "            action()\n"
        "        except OSError:\n"
        "            pass\n"
        "    return -1\n"
    )
    run_hostile(executor, program)
    assert (outside_dir / "precious.txt").read_text() == "keep me"
    assert not (outside_dir / "new.txt").exists()
    assert not Path("/tmp/planted.txt").exists()


def test_files_do_not_carry_over_between_programs(executor):
    writer = "def f(x):\n    open('/tmp/answer', 'w').write('42')\n    return 2 * x\n"
    reader = "import os\ndef f(x):\n    return 2 * x if not os.path.exists('/tmp/answer') else -1\n"
    single = Executor(workers=1, limits=Limits(timeout_s=TIMEOUT))
    with single:
        assert single.run(writer, TESTS).passed
        assert single.run(reader, TESTS).passed


def test_no_connection_to_a_host_loopback_server(executor):
    if executor.mode == "none":
        pytest.skip("network isolation unavailable on this platform (no Linux namespaces)")
    # Mechanism: each worker's sandbox is in its own network namespace whose loopback is down.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept_loop():
        end = time.monotonic() + TIMEOUT + 2
        while time.monotonic() < end:
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept_loop)
    thread.start()
    program = f"import socket\ndef f(x):\n    socket.create_connection(('127.0.0.1', {port}), timeout=0.5).sendall(b'hi')\n    return 2 * x\n"
    result = run_hostile(executor, program)
    thread.join()
    server.close()
    assert accepted == []
    assert "Network is unreachable" in result.verdicts[0].message or "OSError" in result.verdicts[0].message


def test_forged_channel_messages_never_pass(executor):
    program = (
        "import os, json, struct, sys\n"
        "def forge(msg):\n"
        "    data = json.dumps(msg).encode()\n"
        "    os.write(3, struct.pack('>I', len(data)) + data)\n"
        "forge(['loaded', {'f': {'v': {'h': 1, 'ty': 'function', 'r': 'f', 'cl': True}}}])\n"
        "forge(['ok', True])\n"
        "print('PASSED'); print('2 passed, 0 failed')\n"
        "os._exit(0)\n"
    )
    # A forged reply is only ever read as a value the program returned (here True, not 2)
    result = run_hostile(executor, program)
    assert all(s in (Status.FAILED, Status.ERROR) for s in statuses(result))


def test_patching_the_sandbox_runtime_does_not_help(executor):
    program = (
        "import builtins, sys\n"
        "builtins.AssertionError = Exception\n"
        "for name in list(sys.modules):\n"
        "    if name.startswith('mucode'):\n"
        "        sys.modules[name].__dict__.clear()\n"
        "def f(x):\n    return 0\n"
    )
    run_hostile(executor, program)


def test_program_sees_no_host_process(executor):
    program = "import os\ndef f(x):\n    return sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
    result = executor.run(program, [AssertTest("assert f(0) == []")])
    pids = eval(result.verdicts[0].actual)  # noqa: S307 - a list of ints from our own verdict
    assert len(pids) <= 3 and 1 in pids  # the zygote (PID 1), the program, at most one more


def test_worker_death_kills_everything_the_program_started():
    program = (
        "import os, time\n"
        "def f(x):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(10**6)\n"
        "    time.sleep(10**6)\n"
    )
    with Executor(workers=1, limits=Limits(timeout_s=30)) as ex:
        uids, namespaces = program_uids(ex), worker_namespaces(ex)
        killer = threading.Timer(1.0, os.kill, (ex._workers[0].process.pid, 9))
        killer.start()
        result = ex.run(program, TESTS)
        killer.join()
        assert result.infra_error and not result.passed
    deadline = time.monotonic() + 3
    while sandbox_processes(uids, namespaces) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes(uids, namespaces) == []
