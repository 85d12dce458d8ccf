"""Rewrite test assertions so that a failure reports what was expected and what came back.

`assert f(1) == 2` becomes, in effect:
    _mucode_l = f(1); _mucode_r = 2
    if not (_mucode_l == _mucode_r): raise TestFailure("assert f(1) == 2", expected=..., actual=...)
Each side is evaluated exactly once, as in the original statement.
"""

from __future__ import annotations

import ast
import functools
from typing import Any


LEFT, RIGHT, VALUE = "_mucode_l", "_mucode_r", "_mucode_v"
FAIL = "_mucode_fail"


class TestFailure(AssertionError):
    def __init__(self, source: str, expected: str | None, actual: str | None, note: str | None) -> None:
        super().__init__(source)
        self.source, self.expected, self.actual, self.note = source, expected, actual, note


def _short_repr(value: Any, limit: int = 300) -> str:
    if type(value) is int and value.bit_length() > 10_000:  # repr() refuses ints past 4,300 digits
        return f"<int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(source: str, op: str | None, left: Any, right: Any, note: Any) -> None:
    """Raise TestFailure; for `==`/`!=`/`is`, the right side is taken as the expected value."""
    note_text = None if note is None else str(note)[:300]
    if op in ("Eq", "NotEq", "Is", "IsNot"):
        raise TestFailure(source, _short_repr(right), _short_repr(left), note_text)
    raise TestFailure(source, None, _short_repr(left) if op == "value" else None, note_text)


class _Rewriter(ast.NodeTransformer):
    def __init__(self, code: str) -> None:
        self.code = code

    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        segment = ast.get_source_segment(self.code, node.test)
        source = "assert " + " ".join((segment or ast.unparse(node.test)).split())
        msg = node.msg if node.msg is not None else ast.Constant(None)
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            op_name = type(test.ops[0]).__name__
            new = [
                _assign(LEFT, test.left),
                _assign(RIGHT, test.comparators[0]),
                ast.If(
                    test=ast.UnaryOp(ast.Not(), ast.Compare(_name(LEFT), test.ops, [_name(RIGHT)])),
                    body=[_call_fail(source, op_name, _name(LEFT), _name(RIGHT), msg)],
                    orelse=[],
                ),
            ]
        else:
            new = [
                _assign(VALUE, test),
                ast.If(
                    test=ast.UnaryOp(ast.Not(), _name(VALUE)),
                    body=[_call_fail(source, "value", _name(VALUE), ast.Constant(None), msg)],
                    orelse=[],
                ),
            ]
        return [ast.copy_location(stmt, node) for stmt in new]


def _name(name: str) -> ast.Name:
    return ast.Name(name, ast.Load())


def _assign(name: str, value: ast.expr) -> ast.Assign:
    return ast.Assign([ast.Name(name, ast.Store())], value)


def _call_fail(source: str, op: str, left: ast.expr, right: ast.expr, msg: ast.expr) -> ast.Expr:
    call = ast.Call(_name(FAIL), [ast.Constant(source), ast.Constant(op), left, right, msg], [])
    return ast.Expr(call)


@functools.lru_cache(maxsize=4096)  # the same tests are run against many programs
def compile_test(code: str, filename: str = "<test>"):
    """Compile test statements with informative assertions (SyntaxError propagates)."""
    tree = _Rewriter(code).visit(ast.parse(code, filename))
    ast.fix_missing_locations(tree)
    return compile(tree, filename, "exec", dont_inherit=True)  # not this module's __future__ flags


def split_assert_file(text: str) -> list[str]:
    """Top-level statements of a tests file, one test per `assert` statement. Other top-level
    statements (imports, helpers) are prepended to every test so each test stands alone. A file
    without a top-level assert gives no test (its functions, e.g. pytest's `def test_*`, never run)."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    source = lambda node: "".join(lines[node.lineno - 1 : node.end_lineno])  # noqa: E731
    preamble = "".join(source(n) for n in tree.body if not isinstance(n, ast.Assert))
    asserts = [source(n) for n in tree.body if isinstance(n, ast.Assert)]
    return [preamble + code for code in asserts]
