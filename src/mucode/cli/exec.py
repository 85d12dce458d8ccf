"""`mucode exec PROGRAM.py --tests TESTS.py`: run one program in the sandbox and print the verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mucode.execution.asserts import split_assert_file  # noqa: F401  (re-exported for callers of the CLI module)
from mucode.execution.limits import Limits


EXAMPLES = """
Examples:

  mucode exec solution.py --tests tests.py
  mucode exec solution.py --tests tests.py --timeout 2 --memory 512 --json
"""


@click.command("exec", epilog=EXAMPLES)
@click.argument("program", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--tests",
    "tests_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A Python file of assert statements (each top-level assert is one test).",
)
@click.option(
    "--timeout",
    type=float,
    default=Limits().timeout_s,
    show_default=True,
    help="Wall-clock limit per test, in seconds.",
)
@click.option(
    "--timeout-scope",
    type=click.Choice(["test", "suite"]),
    default=Limits().timeout_scope,
    show_default=True,
    help="What --timeout bounds: each test, or the program's whole suite (loading and all tests).",
)
@click.option(
    "--memory",
    type=int,
    default=Limits().memory_mb,
    show_default=True,
    help="Memory limit of the program, in MiB (see docs/sandbox.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--unsafe-no-isolation",
    is_flag=True,
    help="Run the program even where no sandbox isolation is possible (neither root nor user namespaces).",
)
def exec_command(
    program: Path,
    tests_path: Path,
    timeout: float,
    timeout_scope: str,
    memory: int,
    as_json: bool,
    unsafe_no_isolation: bool,
) -> int:
    """Run PROGRAM in the sandbox against the asserts in --tests. Exit code 0 iff all tests pass."""
    from mucode.execution import Executor
    from mucode.types import AssertTest

    try:
        tests = [AssertTest(code) for code in split_assert_file(tests_path.read_text())]
    except SyntaxError as err:
        raise click.ClickException(
            f"{tests_path}: line {err.lineno}: {err.msg} (the tests file must be valid Python)"
        ) from None
    if not tests:
        raise ValueError(
            f"{tests_path} contains no tests: no top-level assert statement (each top-level `assert` is one test; functions such as pytest's `def test_*` are not run)"
        )
    limits = Limits(timeout_s=timeout, timeout_scope=timeout_scope, memory_mb=memory)
    with Executor(workers=1, limits=limits, unsafe_no_isolation=unsafe_no_isolation or None) as executor:
        result = executor.run(program.read_text(), tests)
    if as_json:
        data = result.to_dict()
        data["tests"] = [t.code for t in tests]
        click.echo(json.dumps(data, indent=2))
    else:
        for index, (test, verdict) in enumerate(zip(tests, result.verdicts), 1):
            click.echo(f"test {index}: {verdict.status.value.upper()}  {test.code.strip().splitlines()[-1]}")
            if not verdict.passed:
                for line in verdict.message.splitlines():
                    click.echo(f"    {line}")
                if verdict.expected is not None:
                    click.echo(f"    expected: {verdict.expected}")
                if verdict.actual is not None:
                    click.echo(f"    actual:   {verdict.actual}")
        click.echo(f"{result.n_passed}/{len(result.verdicts)} passed")
    return 0 if result.passed else 1
