"""Turn the usage examples written in a function's docstring into assert statements.

HumanEval docstrings show examples in several styles; each is recognised here:

    doctest          >>> add(2, 3)            (the next lines hold the output)
                     5
    call + arrow     add(2, 3) ==> 5          also  =>  ->  ➞  ==  =  should return  returns
                                              # returns  # =>; the call may stand anywhere on
                                              its line ("* ", "for ", "Example: " before it),
                                              a comment or "." may follow the value
    for ... output   For lst = [1, 2] the output should be 3      (also "the result should be")
    input / output   Input: arr = [1, 2], k = 1                   (also one "name : value" per line)
                     Output: [2]

A candidate is kept only if it passes `ast` validation: the call parses as a Python expression that
calls the entry point, uses no names other than builtins, the entry point and what the prompt
itself defines or imports (so `is_happy(a) => False`, with an unquoted string, is rejected), and
the expected value is a Python literal (`true`/`false` are read as True/False). Keyword arguments
named like the function's parameters are rewritten as positional arguments. The docstring is read
as written in the source (escapes not applied), so `f("a\\nb")` stays the expression the reader sees.

    >>> [e.to_assert() for e in docstring_examples('def add(a, b):\\n    "add(2, 3) ==> 5"\\n', "add")]
    ['assert add(2, 3) == 5']
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
import warnings
from dataclasses import dataclass
from typing import Iterator

from mucode.problems.base import parse_python


_BUILTINS = frozenset(dir(builtins))
_SEPARATOR = re.compile(
    r"^\s*(?:#\s*)?(?:==>|=>|->|➞|==|=|should\s+return|returns)(?!=)\s*(?P<expected>.+)$", re.IGNORECASE
)
_FOR_OUTPUT = re.compile(
    r"\bfor\s+(?P<args>.+?),?\s+the\s+(?:output|result)\s+should\s+be\s+(?P<expected>.+)$", re.IGNORECASE
)
_INPUT_OUTPUT = re.compile(r"^\s*Input\s*:(?P<input>.*?)^\s*Output\s*:(?P<expected>[^\n]*)", re.MULTILINE | re.DOTALL)
_NAME_COLON_VALUE = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*:\s*(?P<value>.+)$")


@dataclass(frozen=True)
class Example:
    """One usage example: `call` is a Python expression calling the function, `expected` a literal.

    style: "doctest", "call", "for-output" or "input-output"; line: 0-based line in the docstring.
    """

    call: str
    expected: str
    style: str
    line: int

    def to_assert(self) -> str:
        return f"assert {self.call} == {self.expected}"


@dataclass(frozen=True)
class _Function:
    """What validation needs to know about the documented function."""

    name: str
    params: tuple[str, ...]
    allowed_names: frozenset[str]
    docstring: str


def _function(prompt: str, entry_point: str) -> _Function | None:
    try:
        module = parse_python(prompt)
    except SyntaxError:
        return None
    defined = {entry_point}
    target = None
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
            if node.name == entry_point and not isinstance(node, ast.ClassDef):
                target = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    if target is None or not ast.get_docstring(target):
        return None
    params = tuple(a.arg for a in target.args.posonlyargs + target.args.args)
    docstring = _source_docstring(prompt, target)
    return _Function(entry_point, params, frozenset(defined | _BUILTINS), docstring)


def _source_docstring(prompt: str, function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The docstring as written in the source, escapes not applied: `f("a\\nb")` in a docstring
    must stay the Python expression the reader sees, not a string broken by a real newline."""
    node = function.body[0].value  # type: ignore[attr-defined]  # the docstring's Constant
    segment = (ast.get_source_segment(prompt, node) or "").lstrip("rRuU")
    quote = segment[:3] if segment[:3] in ('"""', "'''") else segment[:1]
    return inspect.cleandoc(segment[len(quote) : len(segment) - len(quote)])


def _parse_expression(text: str) -> ast.Expression:
    with warnings.catch_warnings():  # docstrings hold things like "\d" that warn when parsed
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        return ast.parse(text, mode="eval")


# --- validation --------------------------------------------------------------------------------


def _literal(text: str) -> str | None:
    """`text` normalised as a Python literal (None if it is not one); true/false -> True/False."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        text = text.capitalize()
    try:
        tree = _parse_expression(text)
        ast.literal_eval(tree)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    return ast.unparse(tree)


def _expected_variants(text: str) -> Iterator[str]:
    """Readings of the text after a separator, most specific first: with a trailing period, a
    trailing comment, or a worked computation (`1 + 9 = 10`) removed."""
    text = text.strip()
    options = [text]
    if "#" in text:
        options.append(text[: text.index("#")])
    for option in list(options):
        if " = " in option:
            options.append(option.rsplit(" = ", 1)[1])
    for option in options:
        option = option.strip()
        if option.endswith("."):
            yield option.rstrip(".")
        yield option


def _first_literal(text: str) -> str | None:
    return next((lit for lit in map(_literal, _expected_variants(text)) if lit is not None), None)


def _valid_call(text: str, function: _Function) -> str | None:
    """`text` normalised if it is an expression calling the function with allowed names only."""
    try:
        tree = _parse_expression(text.strip())
    except SyntaxError:
        return None
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function.name
    ]
    if not calls or not names <= function.allowed_names:
        return None
    for call in calls:
        if not _keywords_to_positional(call, function.params):
            return None
    return ast.unparse(tree)


def _keywords_to_positional(call: ast.Call, params: tuple[str, ...]) -> bool:
    """Rewrite `f(b=2, a=1)` as `f(1, 2)` in place; False if a keyword is not a parameter."""
    if not call.keywords:
        return True
    given = {kw.arg: kw.value for kw in call.keywords}
    order = params[len(call.args) :]
    if None in given or not set(given) <= set(order):
        return False
    missing = [name for name in order[: len(given)] if name not in given]
    if missing:  # keywords that skip a parameter cannot become positional; leave them as they are
        return True
    call.args = call.args + [given[name] for name in order[: len(given)]]
    call.keywords = []
    return True


# --- the styles --------------------------------------------------------------------------------


def _doctest_examples(function: _Function) -> Iterator[Example]:
    import doctest  # imported on use: it pulls in pdb and unittest

    try:
        parsed = doctest.DocTestParser().get_examples(function.docstring)
    except ValueError:  # inconsistent indentation and the like
        return
    for example in parsed:
        call = _valid_call(example.source, function)
        expected = _literal(example.want) if example.want.strip() else None
        if call and expected:
            yield Example(call, expected, "doctest", example.lineno)


def _call_end(text: str, start: int, function: _Function) -> tuple[str, int] | None:
    """The shortest `text[start:end]` that is a valid call of the function (may span lines)."""
    for end in (i + 1 for i, char in enumerate(text) if char == ")" and i > start):
        call = _valid_call(text[start:end], function)
        if call is not None:
            return call, end
    return None


def _call_examples(function: _Function) -> Iterator[Example]:
    doc = function.docstring
    pattern = re.compile(rf"(?<![\w.]){re.escape(function.name)}\s*\(")
    for match in pattern.finditer(doc):
        found = _call_end(doc, match.start(), function)
        if found is None:
            continue
        call, end = found
        rest = doc[end:].split("\n", 1)[0]
        separator = _SEPARATOR.match(rest)
        expected = _first_literal(separator["expected"]) if separator else None
        if expected is not None:
            yield Example(call, expected, "call", doc.count("\n", 0, match.start()))


def _arguments(text: str, function: _Function) -> str | None:
    """The longest comma-separated prefix of `text` that reads as arguments, as a call."""
    cuts = [len(text)] + [i for i in range(len(text) - 1, 0, -1) if text[i] == ","]
    for cut in cuts:
        call = _valid_call(f"{function.name}({text[:cut]})", function)
        if call is not None:
            return call
    return None


def _for_output_examples(function: _Function) -> Iterator[Example]:
    for number, line in enumerate(function.docstring.splitlines()):
        match = _FOR_OUTPUT.search(line)
        if match is None:
            continue
        call = _arguments(match["args"], function)
        expected = _first_literal(match["expected"])
        if call and expected:
            yield Example(call, expected, "for-output", number)


def _input_output_examples(function: _Function) -> Iterator[Example]:
    doc = function.docstring
    for match in _INPUT_OUTPUT.finditer(doc):
        lines = [line.strip() for line in match["input"].splitlines() if line.strip()]
        lines = [_NAME_COLON_VALUE.sub(r"\g<name> = \g<value>", line) for line in lines]
        call = _arguments(", ".join(lines), function)
        expected = _first_literal(match["expected"])
        if call and expected:
            yield Example(call, expected, "input-output", doc.count("\n", 0, match.start()))


_STYLES = (_doctest_examples, _call_examples, _for_output_examples, _input_output_examples)


def docstring_examples(prompt: str, entry_point: str) -> list[Example]:
    """Every valid example in the docstring of `entry_point` (defined in `prompt`), in the order
    they appear. Empty if the function or its docstring is missing or no example validates."""
    function = _function(prompt, entry_point)
    if function is None:
        return []
    examples = {}
    for style in _STYLES:
        for example in style(function):
            examples.setdefault((example.call, example.line), example)
    return sorted(examples.values(), key=lambda e: e.line)
