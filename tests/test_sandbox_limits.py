"""Limits of one program, whatever it starts and whoever else runs programs: per-program cgroup,
sandbox uids that no two workers share, and the timeout's scope (per test or per suite)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from mucode.execution import Executor, Limits
from mucode.types import AssertTest, IOTest, Status


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=1, limits=Limits(timeout_s=20, memory_mb=256)) as ex:
        yield ex


def needs_cgroup(executor: Executor) -> None:
    if not executor.limits_mechanism.startswith("cgroup"):
        pytest.skip(f"no per-program cgroup on this host: {executor.limits_mechanism}")


def test_the_limits_mechanism_is_named(executor, capsys):
    with capsys.disabled():
        print(f"\n[mucode sandbox] isolation mode: {executor.mode}; limits: {executor.limits_mechanism}", flush=True)
    assert executor.limits_mechanism.startswith(("cgroup v1 (", "cgroup v2 (", "rlimit (per process; no cgroup: "))


# Three processes of 120 MiB each: every one is under the 256 MiB address-space limit, together
# they are not.
MEMORY_SPREAD = (
    "import os, time\n"
    "def hold(mib):\n"
    "    block = bytearray(mib * 1024 * 1024)\n"
    "    for i in range(0, len(block), 4096):\n"
    "        block[i] = 1\n"
    "    return block\n"
    "def spread():\n"
    "    children = []\n"
    "    for _ in range(3):\n"
    "        pid = os.fork()\n"
    "        if pid == 0:\n"
    "            block = hold(120)  # kept while the others allocate\n"
    "            time.sleep(2)\n"
    "            os._exit(0)\n"
    "        children.append(pid)\n"
    "    return sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children)\n"
)


def test_memory_limit_counts_every_process_of_the_program(executor):
    needs_cgroup(executor)
    result = executor.run(MEMORY_SPREAD, [AssertTest("assert spread() == [0, 0, 0]")])
    verdict = result.verdicts[0]
    assert verdict.status is Status.FAILED, verdict
    assert -9 in eval(verdict.actual), verdict.actual  # noqa: S307 - a list of ints from our own verdict


def test_a_program_killed_for_memory_is_told_so(executor):
    needs_cgroup(executor)
    # 2 x 60 MiB in the scratch tmpfs (charged to the cgroup, not to any process), then 150 MiB:
    # the program's own process is the only one the kernel can kill.
    program = MEMORY_SPREAD + (
        "def big():\n"
        "    chunk = b'x' * (15 * 1024 * 1024)\n"  # files are limited to 16 MiB each
        "    for name in [f'{folder}/fill{i}' for folder in ('/tmp', '/dev/shm') for i in range(4)]:\n"
        "        with open(name, 'wb') as handle:\n"
        "            handle.write(chunk)\n"
        "    del chunk\n"
        "    return len(hold(150))\n"
    )
    verdict = executor.run(program, [AssertTest("assert big() == 1")]).verdicts[0]
    assert verdict.status is Status.CRASHED, verdict
    assert "out of memory: the program and its processes may use 256 MiB together" in verdict.message, verdict.message


def test_every_worker_of_every_executor_has_its_own_sandbox_uid():
    with Executor(workers=2) as first, Executor(workers=1) as second:
        if first.mode != "root":
            pytest.skip(f"programs keep the caller's uid in {first.mode} mode")
        program = "import os\ndef uid():\n    return os.getuid()\n"
        test = [AssertTest("assert uid() == -1")]
        seen = [ex.run(program, test).verdicts[0].actual for ex in (first, first, second)]
        uids = first.sandbox_uids + second.sandbox_uids
        assert len(set(uids)) == 3, uids
        assert {int(u) for u in seen} <= set(uids)


def test_a_program_of_another_executor_does_not_use_up_the_process_limit():
    # 20 processes each, limit 32: fine alone, over the limit if both counted against one uid.
    program = (
        "import os, time\n"
        "def f(hold):\n"
        "    children = []\n"
        "    for _ in range(20):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(hold)\n"
        "            os._exit(0)\n"
        "        children.append(pid)\n"
        "    return [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children]\n"
    )
    limits = Limits(timeout_s=10, max_processes=32)
    with Executor(workers=1, limits=limits) as first, Executor(workers=1, limits=limits) as second:
        holder = threading.Thread(target=first.run, args=(program, [AssertTest("assert f(3) == [0] * 20")]))
        holder.start()
        time.sleep(1.0)  # the first program's 20 processes are up
        result = second.run(program, [AssertTest("assert f(0) == [0] * 20")])
        holder.join()
    assert result.passed, result.verdicts[0].message


SLOW_TESTS = [AssertTest("assert f(0.6) == 1")] * 3
SLOW = "import time\ndef f(s):\n    time.sleep(s)\n    return 1\n"


def test_timeout_per_test_by_default():
    with Executor(workers=1, limits=Limits(timeout_s=1.0)) as ex:
        assert ex.run(SLOW, SLOW_TESTS).passed


def test_timeout_per_suite_bounds_loading_and_all_tests_together():
    with Executor(workers=1, limits=Limits(timeout_s=1.0, timeout_scope="suite")) as ex:
        started = time.monotonic()
        result = ex.run(SLOW, SLOW_TESTS)
        assert time.monotonic() - started < 3.0
        assert [v.status for v in result.verdicts] == [Status.PASSED, Status.TIMEOUT, Status.TIMEOUT]
        assert "timeout per suite" in result.verdicts[1].message and "not run" in result.verdicts[2].message
        slow_io = "import time\ntime.sleep(0.6)\nprint(input())\n"
        result = ex.run(slow_io, [IOTest("a\n", "a")] * 3)
        assert [v.status for v in result.verdicts] == [Status.PASSED, Status.TIMEOUT, Status.TIMEOUT]
        assert "not run" in result.verdicts[2].message


def test_timeout_scope_is_checked():
    with pytest.raises(ValueError, match="timeout_scope"):
        Limits(timeout_scope="program")


def test_cli_takes_the_timeout_scope(tmp_path):
    program, tests = tmp_path / "prog.py", tmp_path / "tests.py"
    program.write_text(SLOW)
    tests.write_text("\n".join(t.code for t in SLOW_TESTS) + "\n")
    args = [sys.executable, "-m", "mucode", "exec", str(program), "--tests", str(tests), "--timeout", "1"]
    per_test = subprocess.run(args, capture_output=True, text=True, timeout=120)
    per_suite = subprocess.run([*args, "--timeout-scope", "suite"], capture_output=True, text=True, timeout=120)
    assert per_test.returncode == 0 and "3/3 passed" in per_test.stdout, per_test
    assert per_suite.returncode == 1 and "1/3 passed" in per_suite.stdout, per_suite


def test_cpu_time_is_limited_per_test_not_per_program():
    # 0.25 s of CPU in each of 12 tests, 1 s per test: a correct program, though it uses more CPU in
    # total than one step's RLIMIT_CPU (2 s; it used to be killed in its ninth test).
    program = (
        "import time\n"
        "def f():\n"
        "    started = time.process_time()\n"
        "    while time.process_time() - started < 0.25:\n"
        "        pass\n"
        "    return 1\n"
    )
    with Executor(workers=1, limits=Limits(timeout_s=1)) as ex:
        result = ex.run(program, [AssertTest("assert f() == 1")] * 12)
    assert [v.status for v in result.verdicts] == [Status.PASSED] * 12, result.verdicts
