"""Pull the program out of a model reply (METHOD.md §4).

    >>> extract_code("Here you go:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1'

Rules, in order:

1. Line endings are normalised first (CRLF and lone CR become LF).
2. A fence is a line made of optional indentation, then three or more backticks or tildes, then an
   optional info string (its first word is the language; for backtick fences the info string holds
   no backtick, as in CommonMark). Fences are recognised at the start of a line only, at any
   indentation (models indent them inside list items); a ``` in the middle of a sentence is not a
   fence. A block closes at the next line holding only the same fence character, at least as many
   times as the opener. A block with no closing fence runs to the end of the reply (the reference
   code returned an empty program here, METHOD.md §5).
3. The answer is the first block whose language is Python (`python`, `py`, `python3`, `py3`, any
   case). If there is none, the first block of any language or none. If the reply holds no fence
   at all, the whole reply.
4. The result is dedented (an indented fence usually indents its content too), leading blank lines
   and trailing whitespace are removed. An empty block gives "" (it is not skipped: the model's
   answer is the empty program, and it fails the tests).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass


PYTHON_LANGS = frozenset({"python", "py", "python3", "py3"})

# group 1: indentation, group 2: fence (``` or ~~~, 3 or more), group 3: info string
_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block: its language (lower-cased first word of the info string, "" if none),
    its raw content lines joined with LF, and whether a closing fence was found."""

    lang: str
    code: str
    terminated: bool


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block of `text`, in order. Fences inside a block are content, not openers."""
    lines = _normalise_newlines(text).split("\n")
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        opened = _opening_fence(lines[i])
        if opened is None:
            i += 1
            continue
        fence, lang = opened
        end = _closing_index(lines, i + 1, fence)
        terminated = end is not None
        stop = end if end is not None else len(lines)
        blocks.append(CodeBlock(lang, "\n".join(lines[i + 1 : stop]), terminated))
        i = stop + 1
    return blocks


def extract_code(reply: str) -> str:
    """The program in `reply`: first Python block, else first block, else the whole reply."""
    blocks = code_blocks(reply)
    if not blocks:
        return _clean(_normalise_newlines(reply))
    python = [b for b in blocks if b.lang in PYTHON_LANGS]
    return _clean((python or blocks)[0].code)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _opening_fence(line: str) -> tuple[str, str] | None:
    """(fence, language) if `line` opens a block, else None."""
    match = _OPEN.match(line)
    if match is None:
        return None
    fence, info = match.group(2), match.group(3).strip()
    if fence[0] == "`" and "`" in info:  # ```x``` on one line is inline code, not a fence
        return None
    lang = info.split()[0].lower() if info else ""
    return fence, lang.strip("{}.")  # tolerate ```{python} and ```.python


def _closing_index(lines: list[str], start: int, fence: str) -> int | None:
    """Index of the line closing a block opened with `fence`, searching from `start`."""
    char = fence[0]
    for j in range(start, len(lines)):
        stripped = lines[j].strip()
        if len(stripped) >= len(fence) and stripped == char * len(stripped):
            return j
    return None


def _clean(code: str) -> str:
    """Dedent, drop leading blank lines and trailing whitespace."""
    code = textwrap.dedent(code)
    lines = code.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines).rstrip()
