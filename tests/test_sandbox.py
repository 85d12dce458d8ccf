"""What the executor reports for ordinary programs: every verdict kind, feedback, IO tests."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from mucode.execution import Executor, Limits
from mucode.types import AssertTest, IOTest, Status


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=Limits(timeout_s=1.0)) as ex:
        yield ex


def one(executor, program, test, setup=""):
    return executor.run(program, [AssertTest(test)], setup).verdicts[0]


def test_pass_and_fail_with_expected_and_actual(executor):
    result = executor.run(
        "def add(a, b):\n    return a + b + (a == 2)\n",
        [AssertTest("assert add(1, 2) == 3"), AssertTest("assert add(2, 2) == 4")],
    )
    assert [v.status for v in result.verdicts] == [Status.PASSED, Status.FAILED]
    assert result.verdicts[1].message == "assert add(2, 2) == 4"
    assert (result.verdicts[1].expected, result.verdicts[1].actual) == ("4", "5")
    assert not result.passed and result.n_passed == 1


def test_error_names_type_message_and_program_line_without_sandbox_paths(executor):
    verdict = one(executor, "def f(x):\n    return 1 / x\n", "assert f(0) == 1")
    assert verdict.status is Status.ERROR
    assert verdict.message.startswith("ZeroDivisionError: division by zero")
    assert "line 2, in f" in verdict.message and "return 1 / x" in verdict.message
    for leak in ("/tmp", "mucode", "worker", "judge", ".py"):
        assert leak not in verdict.message


def test_syntax_error_fails_every_test_with_the_line(executor):
    result = executor.run("def f(x)\n    return x\n", [AssertTest("assert f(1) == 1")] * 2)
    assert [v.status for v in result.verdicts] == [Status.ERROR, Status.ERROR]
    assert "SyntaxError" in result.verdicts[0].message and "line 1" in result.verdicts[0].message


def test_missing_function_is_an_error(executor):
    verdict = one(executor, "def g(x):\n    return x\n", "assert f(1) == 1")
    assert verdict.status is Status.ERROR and "NameError" in verdict.message


def test_timeout_then_remaining_tests_not_run(executor):
    result = executor.run(
        "def f(x):\n    while x:\n        pass\n    return x\n",
        [AssertTest("assert f(0) == 0"), AssertTest("assert f(1) == 1"), AssertTest("assert f(0) == 0")],
    )
    assert [v.status for v in result.verdicts] == [Status.PASSED, Status.TIMEOUT, Status.TIMEOUT]
    assert "not run" in result.verdicts[2].message


def test_segfault_is_a_crash(executor):
    verdict = one(executor, "import ctypes\ndef f(x):\n    return ctypes.string_at(0)\n", "assert f(1) == 1")
    assert verdict.status is Status.CRASHED and "SIGSEGV" in verdict.message


def test_setup_code_runs_after_the_program_and_before_the_tests(executor):
    program = (
        "class Node:\n    def __init__(self, v):\n        self.v = v\ndef value(node):\n    return node.v + BASE\n"
    )
    verdict = one(executor, program, "assert value(root) == 11", setup="BASE = 10\nroot = Node(1)")
    assert verdict.passed


def test_builtin_types_cross_the_boundary(executor):
    program = (
        "def keep(items, kind):\n    return [x for x in items if isinstance(x, kind)]\ndef kind():\n    return str\n"
    )
    assert one(executor, program, "assert keep([1, 'a', 2.0], int) == [1] and kind() is str").passed


def test_program_exceptions_can_be_expected_by_tests(executor):
    program = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    verdict = one(
        executor, program, "try:\n    f(-1)\n    raise AssertionError('no error')\nexcept ValueError:\n    pass"
    )
    assert verdict.passed


def test_program_assertion_error_is_an_error_not_a_failure(executor):
    verdict = one(executor, "def f(x):\n    assert x > 0\n    return x\n", "assert f(0) == 0")
    assert verdict.status is Status.ERROR and verdict.message.startswith("AssertionError")


def test_generators_classes_and_callbacks_work_through_the_boundary(executor):
    program = (
        "class Pair:\n"
        "    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
        "def longest(pairs):\n    return max(p.b - p.a for p in pairs)\n"
        "def squares(n):\n    yield from (i * i for i in range(n))\n"
        "def apply(fn, x):\n    return fn(x) + 1\n"
    )
    tests = [
        "assert longest([Pair(1, 5), Pair(2, 3)]) == 4",
        "assert list(squares(4)) == [0, 1, 4, 9]",
        "assert apply(lambda v: v * 10, 2) == 21",
        "assert sorted({'b', 'a'}) == ['a', 'b'] and Pair(1, 2).b == 2",
    ]
    result = executor.run(program, [AssertTest(t) for t in tests])
    assert [v.status for v in result.verdicts] == [Status.PASSED] * 4, result.verdicts


def test_plain_values_of_many_types_round_trip(executor):
    program = (
        "import collections, decimal, fractions, math\n"
        "def f():\n"
        "    return [1, 2.5, 'x', b'y', (1,), {1: {2}}, frozenset([3]), None, True, 3j, math.inf,\n"
        "            collections.OrderedDict(a=1), collections.Counter('aab'), collections.deque([1]),\n"
        "            decimal.Decimal('1.5'), fractions.Fraction(1, 3), range(3), 10**40]\n"
    )
    test = (
        "import collections, decimal, fractions, math\n"
        "assert f() == [1, 2.5, 'x', b'y', (1,), {1: {2}}, frozenset([3]), None, True, 3j, math.inf,\n"
        "    collections.OrderedDict(a=1), collections.Counter('aab'), collections.deque([1]),\n"
        "    decimal.Decimal('1.5'), fractions.Fraction(1, 3), range(3), 10**40]"
    )
    assert one(executor, program, test).passed


def test_stdout_is_captured(executor):
    result = executor.run(
        "print('hello')\ndef f(x):\n    print('called', x)\n    return x\n", [AssertTest("assert f(3) == 3")]
    )
    assert result.passed and result.stdout == "hello\ncalled 3\n"


def test_io_tests(executor):
    program = "n = int(input())\nprint(n * 2)\nprint()\n"
    tests = [IOTest("21\n", "42\n"), IOTest("1\n", "3"), IOTest("x\n", "0")]
    result = executor.run(program, tests)
    assert [v.status for v in result.verdicts] == [Status.PASSED, Status.FAILED, Status.ERROR]
    assert (result.verdicts[1].expected, result.verdicts[1].actual) == ("3", "2")
    assert "ValueError" in result.verdicts[2].message


def test_io_test_reads_large_input_and_times_out(executor):
    big = "\n".join(str(i) for i in range(200_000)) + "\n"
    summing = "import sys\nprint(sum(int(line) for line in sys.stdin))\n"
    assert executor.run(summing, [IOTest(big, str(sum(range(200_000))))]).passed
    verdict = executor.run("while True:\n    pass\n", [IOTest("", "")]).verdicts[0]
    assert verdict.status is Status.TIMEOUT


def test_mixed_assert_and_io_tests_keep_their_order(executor):
    program = (
        "import sys\ndef f(x):\n    return x\nif __name__ == '__main__':\n    print(f(sys.stdin.read().strip()))\n"
    )
    result = executor.run(program, [IOTest("a", "a"), AssertTest("assert f(1) == 1"), IOTest("b", "c")])
    assert [v.status for v in result.verdicts] == [Status.PASSED, Status.PASSED, Status.FAILED]


def test_main_block_does_not_run_under_assert_tests(executor):
    program = "def f(x):\n    return x\nif __name__ == '__main__':\n    input()\n"
    assert one(executor, program, "assert f(1) == 1").passed


def test_hash_order_is_deterministic_across_workers(executor):
    program = "def f():\n    return list({'alpha', 'beta', 'gamma', 'delta', 'epsilon'})\n"
    results = executor.run_many([(program, [AssertTest("assert f() == []")], "")] * 4)
    assert len({r.verdicts[0].actual for r in results}) == 1


def test_executor_is_a_plain_callable_and_run_many_keeps_order(executor):
    jobs = [(f"def f():\n    return {i}\n", [AssertTest(f"assert f() == {i}")], "") for i in range(10)]
    assert all(r.passed for r in executor.run_many(jobs))
    assert executor("def f():\n    return 1\n", [AssertTest("assert f() == 1")]).passed


def test_no_tests_is_not_a_pass(executor):
    assert not executor.run("x = 1\n", []).passed


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="timeout_s"):
        Limits(timeout_s=0)


def test_a_worker_dying_mid_job_is_an_infra_error_then_replaced():
    with Executor(workers=1, limits=Limits(timeout_s=5)) as ex:
        worker = ex._workers[0]
        killer = threading.Timer(0.5, os.kill, (worker.process.pid, signal.SIGKILL))
        killer.start()
        result = ex.run("import time\ndef f():\n    time.sleep(3)\n    return 1\n", [AssertTest("assert f() == 1")])
        killer.join()
        assert result.infra_error and not result.passed
        assert [v.status for v in result.verdicts] == [Status.INFRA_ERROR]
        assert ex.run("def f():\n    return 1\n", [AssertTest("assert f() == 1")]).passed


def test_result_serialises_to_json(executor):
    result = executor.run("def f():\n    return 1\n", [AssertTest("assert f() == 2")])
    data = json.loads(json.dumps(result.to_dict()))
    assert data["verdicts"][0]["status"] == "failed" and data["passed"] is False
