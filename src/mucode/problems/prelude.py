"""What runs before a program: the problem's own prelude and, optionally, the reference code's block
of common imports (METHOD.md §4; `--preamble none|problem|reference`).

    program_to_run(program, problem, "problem")     # prelude + "\n\n" + program
    program_to_run(program, problem, "reference")   # REFERENCE_IMPORTS + prelude + program

A problem's prelude is `problem.metadata["prelude"]`: for HumanEval the prompt text before the
entry point's `def` (its imports and helper functions, e.g. `is_palindrome` of HumanEval/10); MBPP
and JSONL problems have none unless their metadata gives one. The stored `program` stays the
model's text: only the sandbox sees the composed one, so tracebacks count lines from the top of
the composed text (as in the reference code, which prepends the same way).
"""

from __future__ import annotations

from typing import Literal

from mucode.types import Problem


Preamble = Literal["none", "problem", "reference"]
PREAMBLES = ("none", "problem", "reference")
DEFAULT_PREAMBLE: Preamble = "problem"

# The reference code's ALLOWED_IMPORTS block (portal-cornell/muCode, human_eval_pack_wrapper.py,
# taken from DeepSeek-Coder's HumanEval harness). numpy is optional here: a sandbox without it must
# not fail every program on the import line.
REFERENCE_IMPORTS = """\
import math
import re
import copy
import datetime
import itertools
import collections
import heapq
import functools
import hashlib
try:
    import numpy
    import numpy as np
except ImportError:
    pass
import string
from typing import *
from collections import *
import os
import sys
"""


def problem_prelude(problem: Problem) -> str:
    """The code the problem itself puts before the entry point ("" when it has none)."""
    return str(problem.metadata.get("prelude") or "")


def humaneval_prelude(prompt: str, entry_point: str) -> str:
    """The HumanEval prompt before `def <entry_point>(`, as the reference code cuts it."""
    cut = prompt.find(f"def {entry_point}(")
    return prompt[:cut].rstrip() + "\n" if cut > 0 and prompt[:cut].strip() else ""


def program_to_run(program: str, problem: Problem, preamble: str = DEFAULT_PREAMBLE) -> str:
    """The program text the sandbox runs under `preamble` (see the module docstring)."""
    if preamble not in PREAMBLES:
        raise ValueError(f"got preamble={preamble!r}; choose one of {', '.join(PREAMBLES)}")
    parts = [REFERENCE_IMPORTS] if preamble == "reference" else []
    if preamble != "none":
        parts.append(problem_prelude(problem))
    head = "\n".join(p for p in parts if p)
    return f"{head}\n\n{program}" if head else program
