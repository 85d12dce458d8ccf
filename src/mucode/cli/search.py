"""`mucode search` (multi-turn Best-of-N over a problem set, resumable) and `mucode solve` (the same
search on one problem given on the command line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mucode.cli.options import build_config, config_options
from mucode.engine import SELECTORS
from mucode.problems.prelude import DEFAULT_PREAMBLE, PREAMBLES
from mucode.prompts import FEEDBACK_STYLES
from mucode.search import SearchConfig


SEARCH_EXAMPLES = """
\b
Examples:
  mucode search --model smollm2-135m --problems humaneval --n 1 --temperature 0 --turns 3 --out runs/he-greedy
  mucode search --model qwen2.5-coder-0.5b --verifier runs/v0 --problems mbpp:test \\
      --problems-path ../shared/data/mbpp --n 5 --selector pt+lv --turns 3 --searches 10 --out runs/mbpp-bon
  mucode search --problems humaneval --n 1,2,4,8 --selector pt --searches 3 --out runs/he-vs-n   # accuracy vs N
"""

SOLVE_EXAMPLES = """
\b
Examples:
  mucode solve "Write a function add(a, b) that returns the sum." --tests tests.py
  mucode solve --problem problem.json --model qwen2.5-coder-0.5b --n 5 --selector pt
  mucode solve "..." --tests tests.py --verifier runs/v0 --n 5 > solution.py
"""


@click.command("search", epilog=SEARCH_EXAMPLES)
@config_options(SearchConfig)
def search_command(config_file: Path | None, **flags: Any) -> int:
    """Multi-turn Best-of-N: N programs per turn, a selector keeps one; stop at the first kept
    program that passes the public tests. Writes OUT/searches.jsonl and OUT/summary.json."""
    from mucode.search import parse_n_values, run_search, run_search_sweep

    try:
        ns = parse_n_values(flags["n"]) if flags.get("n") is not None else None
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    flags["n"] = ns[0] if ns else None
    config = build_config(SearchConfig, config_file, flags)
    if ns is not None and len(ns) > 1:
        sweep = run_search_sweep(config, ns)
        for name, run in sweep.runs.items():
            click.echo(f"{name}: accuracy {run.metrics['accuracy']:.1%} ({run.out})")
        click.echo(f"report: {sweep.report}")
        return 0
    summary = run_search(config)
    for line in summary_lines(summary.metrics):
        click.echo(line)
    click.echo(f"{config.out} (this run: {summary.searches_run} searches in {summary.wall_s:.1f} s)")
    return 0


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    by_turn = ", ".join(f"t{t}={a:.1%}" for t, a in enumerate(metrics["accuracy_by_turn"], 1))
    ci, spread = metrics["accuracy_ci95"], metrics["accuracy_spread"]
    interval = f" (95% CI {ci['low']:.1%}-{ci['high']:.1%} over problems"
    if spread["n"] > 1:
        interval += f"; spread over {spread['n']} searches ±{(spread['ci95_high'] - spread['ci95_low']) / 2:.1%}"
    interval += ")"
    pass_k = "  ".join(f"pass@{k} {v:.1%}" for k, v in metrics["pass_at_k"].items())
    generated, saved = metrics["completion_tokens"], metrics["tokens_saved"]
    return [
        f"{metrics['searches']} searches over {metrics['problems']} problems",
        f"accuracy {metrics['accuracy']:.1%}{interval}  by turn: {by_turn}",
        f"public pass {metrics['public_pass_rate']:.1%}  any of S {metrics['any_of_s_accuracy']:.1%}  turn 1: {pass_k}",
        f"tokens: {generated:,} generated, {saved:,} saved by stopping ({saved / max(generated + saved, 1):.0%} of running every turn)",
    ]


# -- solve -----------------------------------------------------------------------------------------


def _help(name: str) -> str:
    """The help of a SearchConfig field (one wording for `mucode search` and `mucode solve`)."""
    return SearchConfig.__dataclass_fields__[name].metadata["help"]


@click.command("solve", epilog=SOLVE_EXAMPLES)
@click.argument("statement", required=False)
@click.option(
    "--tests",
    "tests_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Python file of assert statements: the public tests (each top-level assert is one test).",
)
@click.option(
    "--problem",
    "problem_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON or one-line JSONL problem (schema of docs/problems.md) instead of STATEMENT.",
)
@click.option(
    "--model",
    default="smollm2-135m",
    show_default=True,
    help="Preset name, hub id, local folder, GGUF file, or served model name.",
)
@click.option("--verifier", default=None, help="Trained verifier folder (selectors lv and pt+lv).")
@click.option("--n", type=int, default=1, show_default=True, help="Programs sampled per turn.")
@click.option("--turns", type=int, default=3, show_default=True, help="Most turns.")
@click.option(
    "--selector",
    type=click.Choice(SELECTORS),
    default=None,
    help="How one program per turn is kept  [default: pt+lv with --verifier, else pt]",
)
@click.option(
    "--temperature", type=float, default=None, help="Sampling temperature  [default: 0 (greedy) for --n 1, else 0.7]"
)
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling mass.")
@click.option("--max-new-tokens", type=int, default=512, show_default=True, help="Most tokens per reply.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of sampling and selection.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "hf", "openvino", "openai", "vllm"]),
    default="auto",
    show_default=True,
    help="Generation backend (auto: OpenVINO on CPU if installed, vLLM on CUDA, else hf).",
)
@click.option("--base-url", default=None, help="OpenAI-compatible server URL (openai backend).")
@click.option(
    "--timeout-s", type=float, default=3.0, show_default=True, help="Sandbox wall-clock limit per test, in seconds."
)
@click.option(
    "--preamble", type=click.Choice(PREAMBLES), default=DEFAULT_PREAMBLE, show_default=True, help=_help("preamble")
)
@click.option(
    "--feedback", type=click.Choice(FEEDBACK_STYLES), default="rich", show_default=True, help=_help("feedback")
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Save the problem, the search record (every turn and candidate) and the final program here.",
)
@click.option(
    "--print-unsolved", is_flag=True, help="Print the last kept program on stdout even when it fails the public tests."
)
def solve_command(
    statement: str | None,
    tests_path: Path | None,
    problem_path: Path | None,
    out_dir: Path | None,
    print_unsolved: bool,
    **options: Any,
) -> int:
    """Search for a program that passes the tests; stream each turn to stderr, print the program
    that passes the public tests on stdout (nothing when none does, unless --print-unsolved).
    Exit code 0 iff it passes the public tests. A program is called correct only when the problem
    has hidden (private) tests and it passes them too."""
    from mucode.generation.checks import check_generator

    problem = _cli_problem(statement, tests_path, problem_path)
    config = _solve_config(options)
    check_generator(config.backend, config.model, base_url=config.base_url)
    record = _run_solve(problem, config)
    answer = record.turns[-1].chosen
    if record.solved_public or print_unsolved:
        click.echo(answer.program)
    if record.solved_public:
        click.echo(f"passes the public tests (turn {record.answer_turn} of {config.turns})", err=True)
    else:
        click.echo(f"not solved: no kept program passed the public tests in {config.turns} turns", err=True)
    if problem.private_tests:
        click.echo(f"hidden tests: {'pass: correct' if answer.correct else 'fail: not correct'}", err=True)
    else:
        click.echo("no hidden tests were given, so correctness is not known", err=True)
    if out_dir is not None:
        click.echo(f"saved to {_save_solve(out_dir, problem, config, record)}", err=True)
    return 0 if record.solved_public else 1


def _save_solve(out_dir: Path, problem: Any, config: SearchConfig, record: Any) -> Path:
    """problem.jsonl (a docs/problems.md row; a problem set when it has private tests), config.yaml, searches.jsonl (the search record as
    `mucode search` writes it, so `mucode report` reads the folder) and solution.py."""
    from dataclasses import replace

    from mucode.problems.jsonl import write_jsonl
    from mucode.store import SEARCHES, write_config, write_jsonl_file

    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "problem.jsonl", [problem])
    write_config(replace(config, out=str(out_dir)), out_dir)
    write_jsonl_file(out_dir / SEARCHES, [record])
    (out_dir / "solution.py").write_text(record.turns[-1].chosen.program, encoding="utf-8")
    return out_dir


def _solve_config(options: dict[str, Any]) -> SearchConfig:
    n = options["n"]
    temperature = options["temperature"] if options["temperature"] is not None else (0.0 if n == 1 else 0.7)
    selector = options["selector"] or ("pt+lv" if options["verifier"] else "pt")
    try:
        return SearchConfig(
            model=options["model"],
            verifier=options["verifier"],
            n=n,
            selector=selector,
            turns=options["turns"],
            temperature=temperature,
            top_p=options["top_p"],
            max_new_tokens=options["max_new_tokens"],
            seed=options["seed"],
            backend=options["backend"],
            base_url=options["base_url"],
            timeout_s=options["timeout_s"],
            out="",
            workers=1,
            preamble=options["preamble"],
            feedback=options["feedback"],
        )
    except ValueError as err:
        raise click.ClickException(str(err)) from None


def _run_solve(problem: Any, config: SearchConfig) -> Any:
    from mucode.execution import Executor
    from mucode.generation.factory import make_generator
    from mucode.prompts import PromptConfig
    from mucode.search import generator_options, load_scorer, search_problems

    scorer = load_scorer(config.verifier)
    generator = make_generator(config.backend, config.model, **generator_options(config))
    try:
        with Executor(workers=config.workers, limits=config.limits()) as executor:
            return search_problems(
                [problem],
                generator,
                executor,
                n=config.n,
                selector=config.selector,
                turns=config.turns,
                sampling=config.sampling(),
                seed=config.seed,
                scorer=scorer,
                on_turn=_stream_turn(config),
                prompt_config=PromptConfig(feedback=config.feedback),
                preamble=config.preamble,
            )[0]
    finally:
        generator.close()


def _stream_turn(config: SearchConfig):
    def show(problem: Any, search: int, number: int, turn: Any) -> None:
        chosen = turn.chosen
        passing = sum(c.public_passed for c in turn.candidates)
        public = chosen.public
        verdict = f"{public.n_passed}/{len(public.verdicts)} public tests passed" if public is not None else ""
        click.echo(
            f"--- turn {number}/{config.turns}: kept candidate {turn.selected + 1} of {len(turn.candidates)} "
            f"({config.selector}); {verdict}; {passing} of {len(turn.candidates)} candidates pass",
            err=True,
        )
        click.echo(_indent(chosen.program or "(empty program)"), err=True)
        if not chosen.public_passed:
            click.echo(_indent(turn.feedback), err=True)

    return show


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _cli_problem(statement: str | None, tests_path: Path | None, problem_path: Path | None) -> Any:
    from dataclasses import replace

    if (statement is None) == (problem_path is None):
        raise click.UsageError("give either a problem STATEMENT (with --tests) or --problem FILE, not both or neither")
    tests = _public_tests(tests_path) if tests_path is not None else None
    if problem_path is not None:
        problem = _read_problem_file(problem_path)
        problem = replace(problem, public_tests=tuple(tests)) if tests is not None else problem
    else:
        if tests is None:
            raise click.UsageError("a STATEMENT needs --tests FILE (assert statements the program must pass)")
        from mucode.types import Problem

        problem = Problem(id="solve", source="cli", prompt=statement, public_tests=tuple(tests), private_tests=())  # type: ignore[arg-type]
    if not problem.public_tests:
        raise click.ClickException(
            "the problem has no public tests; the search needs them for feedback and stopping (add --tests FILE)"
        )
    return problem


def _public_tests(path: Path) -> list[Any]:
    from mucode.execution.asserts import split_assert_file
    from mucode.types import AssertTest

    try:
        tests = [AssertTest(code) for code in split_assert_file(path.read_text())]
    except SyntaxError as err:
        raise click.ClickException(
            f"{path}: line {err.lineno}: {err.msg} (the tests file must be valid Python)"
        ) from None
    if not tests:
        raise click.ClickException(f"{path} contains no tests (expected assert statements)")
    return tests


def _read_problem_file(path: Path) -> Any:
    """One problem from a JSON file or a one-line JSONL file; private tests may be missing."""
    from dataclasses import replace

    from mucode.problems.base import RowError
    from mucode.problems.jsonl import row_to_problem

    text = path.read_text(encoding="utf-8")
    try:
        rows = [json.loads(text)]
    except json.JSONDecodeError:
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise click.ClickException(f"{path}: not JSON or JSONL ({err.msg}, line {err.lineno})") from None
    if len(rows) != 1:
        raise click.ClickException(
            f"{path} holds {len(rows)} problems; solve takes one (use `mucode search --problems {path}` for a set)"
        )
    row = rows[0]
    has_private = isinstance(row, dict) and bool(row.get("private_tests"))
    if isinstance(row, dict) and not has_private:
        row = {**row, "private_tests": row.get("public_tests") or ["pass"]}  # solve judges on the public tests
    try:
        problem = row_to_problem(row, default_source=f"file:{path.name}")
    except RowError as err:
        raise click.ClickException(f"{path}: field {err.field!r}: {err.message}") from None
    return problem if has_private else replace(problem, private_tests=())
