"""Code extraction from model replies: one test per rule in mucode/extraction.py."""

from __future__ import annotations

import pytest

from mucode.extraction import code_blocks, extract_code


PROGRAM = "def f(x):\n    return x + 1"


def test_first_python_block():
    reply = f"Sure.\n```python\n{PROGRAM}\n```\nAnd another:\n```python\nprint(2)\n```\n"
    assert extract_code(reply) == PROGRAM


def test_python_block_preferred_over_earlier_other_block():
    reply = f"Output:\n```text\n3\n```\nCode:\n```python\n{PROGRAM}\n```"
    assert extract_code(reply) == PROGRAM


@pytest.mark.parametrize("lang", ["py", "python3", "py3", "Python", "PYTHON", "{python}"])
def test_python_aliases(lang):
    reply = f"```text\nnot this\n```\n```{lang}\n{PROGRAM}\n```"
    assert extract_code(reply) == PROGRAM


def test_info_string_after_language():
    assert extract_code(f"```python title='sol.py'\n{PROGRAM}\n```") == PROGRAM


def test_untagged_block_when_no_python_block():
    assert extract_code(f"Here:\n```\n{PROGRAM}\n```\n") == PROGRAM


def test_first_block_of_any_language_when_no_python_block():
    reply = f"```c\nint x;\n```\n```\n{PROGRAM}\n```"
    assert extract_code(reply) == "int x;"


def test_unterminated_fence_runs_to_end():
    assert extract_code(f"Here:\n```python\n{PROGRAM}\n") == PROGRAM


def test_unterminated_fence_at_very_end_is_empty():
    assert extract_code("I will write it:\n```python") == ""


def test_no_fence_returns_whole_reply():
    assert extract_code(PROGRAM) == PROGRAM


def test_no_fence_keeps_prose():
    reply = f"Here is the code:\n{PROGRAM}"
    assert extract_code(reply) == reply


def test_leading_and_trailing_whitespace_removed():
    assert extract_code(f"```python\n\n\n{PROGRAM}   \n\n\t\n```") == PROGRAM
    assert extract_code(f"\n\n  \n{PROGRAM}\n\n  ") == PROGRAM


def test_inner_blank_lines_and_indentation_kept():
    program = "def f(x):\n\n    y = x\n\n    return y"
    assert extract_code(f"```python\n{program}\n```") == program


def test_crlf_and_cr_line_endings():
    reply = "```python\r\ndef f(x):\r\n    return x + 1\r\n```\r\nbye"
    assert extract_code(reply) == PROGRAM
    assert extract_code(reply.replace("\r\n", "\r")) == PROGRAM


def test_tilde_fence():
    assert extract_code(f"~~~python\n{PROGRAM}\n~~~") == PROGRAM


def test_tilde_fence_not_closed_by_backticks():
    reply = "~~~python\nx = '''\n```\n'''\n~~~"
    assert extract_code(reply) == "x = '''\n```\n'''"


def test_longer_fence_contains_shorter_one():
    reply = "````python\ns = '''\n```\n'''\n````"
    assert extract_code(reply) == "s = '''\n```\n'''"


def test_indented_fence_is_dedented():
    reply = "1. Write the function:\n\n    ```python\n    def f(x):\n        return x + 1\n    ```\n"
    assert extract_code(reply) == PROGRAM


def test_indented_closing_fence():
    assert extract_code(f"```python\n{PROGRAM}\n  ```\nmore") == PROGRAM


def test_fence_mid_sentence_is_not_a_fence():
    reply = "Use ```python blocks``` like this:\n```python\nx = 1\n```"
    assert extract_code(reply) == "x = 1"


def test_empty_block_gives_empty_program():
    reply = f"```python\n```\n```python\n{PROGRAM}\n```"
    assert extract_code(reply) == ""


def test_whitespace_only_block_gives_empty_program():
    assert extract_code("```python\n   \n\n```") == ""


def test_code_blocks_reports_language_and_termination():
    blocks = code_blocks("```Py\na\n```\ntext\n~~~\nb\n")
    assert [(b.lang, b.code, b.terminated) for b in blocks] == [("py", "a", True), ("", "b\n", False)]
