"""`mucode problems list|show SOURCE[:SPLIT]`: look at problem sets (a thin layer over mucode.problems)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, TypeVar

import click

from mucode.problems import ProblemSet, load_problems
from mucode.types import IOTest, Problem, Test


EXAMPLES = """
\b
Examples:
  mucode problems list mbpp --path ../shared/data/mbpp
  mucode problems list humaneval
  mucode problems show mbpp:test 11 --path ../shared/data/mbpp
  mucode problems show humaneval HumanEval/0 --json
  mucode problems show my_problems.jsonl --limit 3

SOURCE is mbpp, mbpp-sanitized, humaneval, a .jsonl file or folder of <split>.jsonl files, or
hf:<dataset id or folder>[:config[:split]]; add :SPLIT to select one split.
"""

F = TypeVar("F", bound=Callable[..., object])


def _path_option(command: F) -> F:
    return click.option(
        "--path",
        type=click.Path(path_type=Path),
        default=None,
        help="MBPP data: mbpp.jsonl / sanitized-mbpp.json or a folder holding them (before $MUCODE_MBPP_PATH and the hub).",
    )(command)


def _load(source: str, path: Path | None) -> ProblemSet:
    """load_problems with user mistakes turned into one-line CLI errors."""
    try:
        return load_problems(source, path=path)
    except (ValueError, OSError) as err:
        raise click.ClickException(str(err)) from err


@click.group("problems", epilog=EXAMPLES)
def problems() -> None:
    """Inspect problem sets: MBPP, HumanEval, JSONL files and Hugging Face datasets."""


def _split_rows(problem_set: ProblemSet) -> list[tuple[str, int, int, int, int]]:
    """(split, problems, public tests, private tests, skipped) per split, then the total."""
    rows = []
    for split in problem_set.splits():
        members = problem_set.in_split(split)
        skipped = sum(s.split == split for s in problem_set.skipped)
        rows.append(
            (
                split,
                len(members),
                sum(len(p.public_tests) for p in members),
                sum(len(p.private_tests) for p in members),
                skipped,
            )
        )
    totals = tuple(sum(row[i] for row in rows) for i in range(1, 5))
    return rows + [("total", *totals)]


@problems.command("list", epilog=EXAMPLES)
@click.argument("source")
@_path_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def list_command(source: str, path: Path | None, as_json: bool) -> None:
    """Count problems, public and private tests, and skipped problems per split of SOURCE[:SPLIT]."""
    problem_set = _load(source, path)
    rows = _split_rows(problem_set)
    if as_json:
        keys = ("problems", "public_tests", "private_tests", "skipped")
        click.echo(
            json.dumps(
                {
                    "name": problem_set.name,
                    "split": problem_set.split,
                    "origin": problem_set.origin,
                    "sha256": problem_set.sha256,
                    "splits": {r[0]: dict(zip(keys, r[1:])) for r in rows},
                    "skipped": [{"id": s.id, "split": s.split, "reason": s.reason} for s in problem_set.skipped],
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"{problem_set.name}: {len(problem_set)} problems from {problem_set.origin} (sha256 {problem_set.sha256[:16]})"
    )
    click.echo(f"{'split':<12}{'problems':>10}{'public':>10}{'private':>10}{'skipped':>10}")
    for split, *counts in rows:
        click.echo(f"{split:<12}" + "".join(f"{n:>10}" for n in counts))
    for skipped in problem_set.skipped:
        click.echo(f"skipped {skipped.id} ({skipped.split}): {skipped.reason}")


def _matches(problem: Problem, wanted: str) -> bool:
    """`wanted` is the full id, or its last part ("11" for "mbpp/11", "0" for "HumanEval/0")."""
    return problem.id == wanted or problem.id.rsplit("/", 1)[-1] == wanted


def _describe_test(test: Test) -> str:
    if isinstance(test, IOTest):
        return f"stdin:\n{test.stdin}\nexpected stdout:\n{test.expected_stdout}"
    return test.code


def _describe(problem: Problem, split: str) -> str:
    lines = [f"=== {problem.id}  (split {split}, entry point {problem.entry_point or '-'})", problem.prompt.rstrip()]
    if problem.setup_code:
        lines += ["--- setup code", problem.setup_code]
    for label, tests in (("public", problem.public_tests), ("private", problem.private_tests)):
        lines.append(f"--- {label} tests ({len(tests)})")
        lines += [_describe_test(test).rstrip() for test in tests]
    return "\n".join(lines) + "\n"


@problems.command("show", epilog=EXAMPLES)
@click.argument("source")
@click.argument("problem_id", required=False)
@_path_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line: the JSONL problem schema.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most this many problems.")
def show_command(source: str, problem_id: str | None, path: Path | None, as_json: bool, limit: int | None) -> None:
    """Print the problems of SOURCE[:SPLIT] (or the one with PROBLEM_ID): id, prompt and tests."""
    problem_set = _load(source, path)
    chosen = [p for p in problem_set if problem_id is None or _matches(p, problem_id)]
    if problem_id is not None and not chosen:
        example = problem_set.problems[0].id if problem_set.problems else "-"
        raise click.ClickException(f"no problem {problem_id!r} in {source}; ids look like {example!r}")
    for problem in chosen[:limit]:
        if as_json:
            click.echo(json.dumps(problem.to_dict(), ensure_ascii=False))
        else:
            click.echo(_describe(problem, problem_set.split_of[problem.id]))


@problems.command("verify", epilog=EXAMPLES)
@click.argument("source")
@_path_option
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Sandbox workers (default: one per CPU core)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Wall-clock limit per test, in seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a summary.")
def verify_command(source: str, path: Path | None, workers: int | None, timeout: float, as_json: bool) -> int:
    """Run every reference solution of SOURCE[:SPLIT] in the sandbox against its public and private
    tests. Exit code 0 iff all pass; problems without a reference solution are counted apart."""
    import time

    from mucode.execution import Executor, Limits

    problem_set = _load(source, path)
    with_reference = [p for p in problem_set if p.reference_solution]
    jobs = [(p.reference_solution, p.public_tests + p.private_tests, p.setup_code) for p in with_reference]
    started = time.perf_counter()
    with Executor(workers=workers, limits=Limits(timeout_s=timeout)) as executor:
        results = executor.run_many(jobs, progress=not as_json, desc=f"verifying {problem_set.name}")
        mode, n_workers = executor.mode, executor.n_workers
    elapsed = time.perf_counter() - started
    failures = {
        p.id: next(v for v in r.verdicts if not v.passed) if r.verdicts else None
        for p, r in zip(with_reference, results)
        if not r.passed
    }
    summary = {
        "source": source,
        "problems": len(problem_set),
        "with_reference": len(with_reference),
        "passed": len(with_reference) - len(failures),
        "seconds": round(elapsed, 2),
        "isolation": mode,
        "workers": n_workers,
        "failures": {pid: (v.to_dict() if v else "no tests") for pid, v in failures.items()},
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"{problem_set.name}: {summary['passed']}/{len(with_reference)} reference solutions pass all their tests "
            f"({len(problem_set) - len(with_reference)} without a reference) in {elapsed:.1f} s "
            f"with {n_workers} sandbox workers (isolation: {mode})"
        )
        for pid, verdict in failures.items():
            click.echo(
                f"  {pid}: "
                + (
                    f"{verdict.status.value}: {verdict.message.splitlines()[0] if verdict.message else ''}"
                    if verdict
                    else "no tests"
                )
            )
    return 0 if not failures else 1
