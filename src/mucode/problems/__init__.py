"""Programming problems: MBPP, HumanEval, JSONL files and Hugging Face datasets, all as
`mucode.types.Problem` records grouped in a `ProblemSet`.

    from mucode.problems import load_problems
    train = load_problems("mbpp:train", path="../shared/data/mbpp")   # 374 problems
    humaneval = load_problems("humaneval")                           # 164, bundled, no network
    mine = load_problems("data/my_problems.jsonl")

Sources ("SOURCE[:SPLIT]", see `registry`): mbpp, mbpp-sanitized (path, $MUCODE_MBPP_PATH or the
hub), humaneval (bundled), a .jsonl file or folder, hf:<id or folder>[:config[:split]], and the
published benchmarks codecontests, livecodebench, apps, humaneval+, mbpp+ (path, their
$MUCODE_*_PATH variable, or the hub; `mucode.problems.published`).

JSONL schema (details and test forms in `mucode.problems.jsonl`, and in docs/problems.md): one
JSON object per line with
    id                  str | int, required, unique
    prompt              str, required
    public_tests        list, required: each "assert ..." | {"kind": "assert", "code": ...}
                        | {"stdin": ..., "expected_stdout": ...}
    private_tests       list, required, at least one test; same forms
    entry_point, setup_code, reference_solution, source   str | null, optional
    metadata            object | null, optional
Missing or malformed data raises `ProblemDataError` naming the file, the line and the field;
duplicate ids are an error. A problem a loader cannot use is listed in `ProblemSet.skipped` (and
logged), never dropped silently. Every `ProblemSet` carries the sha256 of its source data.

Importing this package is cheap (standard library only): `datasets` is imported by the function
that needs it, and no data is read until a loader is called.
"""

from __future__ import annotations

from mucode.problems.apps import load_apps
from mucode.problems.base import (
    ProblemDataError,
    ProblemSet,
    ProblemSourceUnavailable,
    Skipped,
)
from mucode.problems.codecontests import load_codecontests
from mucode.problems.evalplus import calibrate_time_limits, load_humaneval_plus, load_mbpp_plus
from mucode.problems.hf import load_hf
from mucode.problems.humaneval import load_humaneval
from mucode.problems.jsonl import load_jsonl, write_jsonl
from mucode.problems.livecodebench import load_livecodebench
from mucode.problems.mbpp import load_mbpp, load_mbpp_sanitized
from mucode.problems.registry import load_problems, mbpp_data_path, parse_spec


__all__ = [
    "ProblemDataError",
    "ProblemSet",
    "ProblemSourceUnavailable",
    "Skipped",
    "calibrate_time_limits",
    "load_apps",
    "load_codecontests",
    "load_hf",
    "load_humaneval",
    "load_humaneval_plus",
    "load_livecodebench",
    "load_jsonl",
    "load_mbpp",
    "load_mbpp_plus",
    "load_mbpp_sanitized",
    "load_problems",
    "mbpp_data_path",
    "parse_spec",
    "write_jsonl",
]
