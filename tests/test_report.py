"""`mucode report`: tables, protocol and plots from search, rollout and pipeline folders built here
from hand-written records (numbers checked by hand)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from mucode.cli import main
from mucode.metrics import summarize_searches
from mucode.metrics import summarize_trajectories as summarize
from mucode.reports import load_run, load_runs, write_report


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = ("accuracy_by_turn.png", "accuracy_vs_n.png", "selectors.png", "verifier_scores.png")


def candidate(correct: bool, public: bool, score: float | None = None) -> dict:
    return {
        "reply": "```python\npass\n```",
        "program": "pass",
        "public_passed": public,
        "correct": correct,
        "score": score,
        "completion_tokens": 10,
    }


def search(problem_id: str, index: int, turns: list[tuple[list[dict], int]], selector: str, saved: int = 0) -> dict:
    """One search record; it solved the public tests iff its last selected program passes them."""
    last_candidates, last_selected = turns[-1]
    solved = last_candidates[last_selected]["public_passed"]
    return {
        "problem_id": problem_id, "search": index, "selector": selector, "n": len(turns[0][0]), "max_turns": 2,
        "turns": [{"candidates": c, "selected": s, "feedback": "..."} for c, s in turns],
        "solved_public": solved, "answer_turn": len(turns) if solved else None,
        "correct": last_candidates[last_selected]["correct"],
        "completion_tokens": 10 * sum(len(c) for c, _ in turns), "tokens_saved": saved, "generate_s": 1.0, "wall_s": 1.5,
    }  # fmt: skip


# Run A: N = 2, selector pt+lv, S = 2 searches of 2 problems, with verifier scores.
#   accuracy per search: s0 = 1/2, s1 = 2/2 -> mean 75.0; std 0.3536, t(1) = 12.7062 ->
#   half-width 12.7062 * 0.3536 / sqrt(2) = 317.7 (points): the "± over S" column. Per problem:
#   p0 2/2 = 1.0, p1 1/2 = 0.5; the bootstrap means over 2 problems are 0.5, 0.75 or 1.0 -> the
#   95% interval over problems is [50.0, 100.0]. Turn 1: 2/4 correct = 50.0; public
#   pass 3/4 = 75.0; any of S: both problems = 100.0; first-turn candidates per problem: 4, one
#   correct -> pass@1 = 25.0, pass@2 = 1 - C(3,2)/C(4,2) = 50.0; tokens 20+40+40+20 = 120; saved
#   20+20 = 40; wall 4 x 1.5 = 6.0 s.
RUN_A = [
    search("p0", 0, [([candidate(True, True, 0.9), candidate(False, False, 0.1)], 0)], "pt+lv", saved=20),
    search(
        "p0",
        1,
        [
            ([candidate(False, False, 0.2), candidate(False, False, 0.3)], 1),
            ([candidate(True, True, 0.8), candidate(False, False, 0.1)], 0),
        ],
        "pt+lv",
    ),
    search(
        "p1",
        0,
        [
            ([candidate(False, False, 0.4), candidate(False, False, 0.1)], 0),
            ([candidate(False, False, 0.5), candidate(False, False, 0.2)], 0),
        ],
        "pt+lv",
    ),
    search("p1", 1, [([candidate(False, False, 0.3), candidate(True, True, 0.6)], 1)], "pt+lv", saved=20),
]
ROW_A = "| bon | tiny-model | 2 | pt+lv | 2 | 75.0 [50.0, 100.0] | 317.7 | 50.0 | 75.0 | 100.0 | 25.0 | 50.0 | 120 | 40 | 6.0 s |"

# Run B: N = 2, selector random, S = 1, no scores, finished (summary.json holds the wall time).
RUN_B = [
    search(
        "p0",
        0,
        [([candidate(True, True), candidate(False, False)], 1), ([candidate(True, True), candidate(True, True)], 0)],
        "random",
    ),
    search(
        "p1",
        0,
        [
            ([candidate(False, False), candidate(False, False)], 0),
            ([candidate(False, False), candidate(False, False)], 1),
        ],
        "random",
    ),
]


def turn(public: bool, correct: bool, tokens: int) -> dict:
    return {
        "reply": "x", "program": "x", "public": {"verdicts": [], "passed": public}, "private": None,
        "feedback": "f", "correct": correct, "prompt_tokens": 3, "completion_tokens": tokens, "generate_s": 0.1,
    }  # fmt: skip


# Run C (rollouts, greedy, 2 turns): p0 fails then passes (correct); p1 passes public at turn 1
# but is incorrect. Accuracy 50.0, turn 1 0.0, public pass 100.0, tokens 5 + 7 + 4 = 16.
TRAJECTORIES = [
    {
        "problem_id": "p0",
        "rollout": 0,
        "max_turns": 2,
        "turns": [turn(False, False, 5), turn(True, True, 7)],
        "n_turns": 2,
        "done": True,
        "solved_public": True,
        "correct": True,
        "completion_tokens": 12,
    },
    {
        "problem_id": "p1",
        "rollout": 0,
        "max_turns": 2,
        "turns": [turn(True, False, 4)],
        "n_turns": 1,
        "done": True,
        "solved_public": True,
        "correct": False,
        "completion_tokens": 4,
    },
]
ROW_C = "| greedy | tiny-model | 1 | none | 2 | 50.0 [0.0, 100.0] | — | 0.0 | 100.0 | 50.0 | 0.0 | — | 16 | — | — |"


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def search_folder(folder: Path, records: list[dict], selector: str, searches: int, protocol: bool) -> Path:
    folder.mkdir(parents=True)
    config = {"model": "tiny-model", "verifier": "runs/v0", "problems": "mbpp:test", "n": 2, "selector": selector, "turns": 2,
              "searches": searches, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 64, "seed": 0, "limit": None, "timeout_s": 3.0, "out": str(folder)}  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    meta: dict = {"model": "tiny-model", "verifier": "runs/v0", "problem_ids": ["p0", "p1"], "package_versions": {}}
    if protocol:
        meta["protocol"] = {"public_private_rule": "the model sees the public tests and their feedback only",
                            "stopping_rule": "first selected program that passes the public tests", "n": 2, "turns": 2,
                            "temperature": 0.7, "timeout_s": 3.0, "selector": selector, "searches": searches}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(meta))
    write_jsonl(folder / "searches.jsonl", records)
    return folder


def rollout_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    config = {
        "model": "tiny-model",
        "problems": "humaneval",
        "rollouts": 1,
        "turns": 2,
        "temperature": 0.0,
        "top_p": 1.0,
        "timeout_s": 3.0,
        "seed": 0,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "run.json").write_text(json.dumps({"seed": 0, "problem_ids": ["p0", "p1"]}))
    write_jsonl(folder / "trajectories.jsonl", TRAJECTORIES)
    return folder


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    a = search_folder(tmp_path / "bon", RUN_A, "pt+lv", searches=2, protocol=True)
    b = search_folder(tmp_path / "bon-random", RUN_B, "random", searches=1, protocol=False)
    # a finished run: summary.json as `mucode search` writes it
    (b / "summary.json").write_text(json.dumps(summarize_searches(RUN_B, max_turns=2), indent=2))
    return [a, b, rollout_folder(tmp_path / "greedy")]


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > 100 and width > 100


def test_table_rows_hold_the_hand_computed_numbers(runs, tmp_path):
    text = write_report(runs, tmp_path / "report").read_text()
    assert ROW_A in text
    assert ROW_C in text
    assert (
        "| bon-random | tiny-model | 2 | random | 2 | 50.0 [0.0, 100.0] | — | 0.0 | 50.0 | 50.0 | 25.0 | 50.0 | 80 | 0 | 3.0 s |"
        in text
    )
    assert "| bon | 50.0 | 75.0 |" in text  # accuracy by turn
    assert "- **bon**: search folder" in text and "2 problems × 2 searches (4 records); numbers recomputed" in text
    assert "2 problems × 1 searches (2 records); numbers from summary.json" in text


def test_paired_comparisons_hold_the_hand_computed_numbers(runs, tmp_path):
    # bon - bon-random per problem: p0 1.0 - 1.0, p1 0.5 - 0.0 -> +25.0, bootstrap over {0, 0.5};
    # shared (problem, search) pairs: (p0, 0) both right, (p1, 0) both wrong -> no discordant pair
    text = write_report(runs, tmp_path / "report").read_text()
    assert "| bon | bon-random | 2 | +25.0 [+0.0, +50.0] | 2 | 0 | 0 | 1 |" in text
    # bon - greedy: p0 1.0 - 1.0, p1 0.5 - 0.0; pairs (p0, 0) both right, (p1, 0) both wrong
    assert "| bon | greedy | 2 | +25.0 [+0.0, +50.0] | 2 | 0 | 0 | 1 |" in text


def test_a_finished_and_a_recomputed_summary_are_equal(runs):
    finished = json.loads((runs[1] / "summary.json").read_text())
    run = load_run(runs[1])
    assert run.summary_source == "summary.json" and json.loads(json.dumps(run.summary)) == finished


def test_rollout_accuracy_by_turn_matches_the_rollout_summary(runs):
    run = load_run(runs[2])
    assert run.kind == "rollout" and run.n == 1 and run.selector == "none"
    assert run.summary["accuracy_by_turn"] == summarize(TRAJECTORIES)["accuracy_by_turn"] == [0.0, 0.5]


def test_every_applicable_plot_is_a_png_referenced_by_relative_path(runs, tmp_path):
    report = write_report(runs, tmp_path / "report")
    text = report.read_text()
    for name in ALL_PLOTS:
        assert_png(report.parent / name)
        assert f"]({name})" in text
    assert "skipped" not in text


def test_plots_that_do_not_apply_are_skipped_with_a_note(runs, tmp_path):
    (tmp_path / "greedy" / "report").mkdir()
    (tmp_path / "greedy" / "report" / "selectors.png").write_bytes(b"stale")
    report = write_report(runs[2])
    assert report == tmp_path / "greedy" / "report" / "report.md"
    text = report.read_text()
    assert_png(report.parent / "accuracy_by_turn.png")
    for name in ALL_PLOTS[1:]:
        assert not (report.parent / name).exists()
    assert "- Accuracy against N: skipped (every run uses N = 1)." in text
    assert "- Selector comparison: skipped (no N has runs with two or more selectors)." in text
    assert "- Verifier score distributions: skipped (no candidate carries a verifier score)." in text


def test_protocol_is_stated(runs, tmp_path):
    text = write_report(runs, tmp_path / "report").read_text()
    assert "## Protocol" in text
    assert "test_list[0] public; test_list[1:] and challenge_test_list private" in text
    assert "HumanEval: one docstring example (as an assert) public; the full `check` function private" in text
    assert (
        "- **Public / private tests** as stated by bon (run.json): the model sees the public tests and their feedback only."
        in text
    )
    assert "first selected program that passes the public tests" in text
    assert "except the `oracle` selector" in text and "No run here uses it." in text
    assert "| bon | mbpp:test |" in text and "| 2 | pt+lv | runs/v0 | 0.7 | 1.0 | 2 | 3.0 | 2 |" in text
    assert "| greedy | humaneval |" in text and "| 1 | none | — | 0.0 | 1.0 | 2 | 3.0 | 1 |" in text


def test_oracle_runs_are_named_as_upper_bounds(tmp_path):
    records = [dict(r, selector="oracle") for r in RUN_A]
    folder = search_folder(tmp_path / "upper", records, "oracle", searches=2, protocol=False)
    text = write_report(folder).read_text()
    assert "Runs using it: upper." in text


def test_numbers_always_come_from_the_records_and_a_stale_summary_is_named(runs):
    assert load_run(runs[1]).summary_source == "summary.json"
    (runs[0] / "summary.json").write_text(json.dumps({"problems": 2, "searches": 4, "accuracy": 0.1}))
    run_a = load_run(runs[0])
    assert run_a.summary_source == "recomputed" and run_a.summary["accuracy"] == 0.75


def test_a_run_in_progress_is_reported_without_its_cut_last_line(tmp_path):
    folder = search_folder(tmp_path / "running", RUN_A, "pt+lv", searches=2, protocol=True)
    with open(folder / "searches.jsonl", "a") as handle:
        handle.write('{"problem_id": "p2", "sea')
    run = load_run(folder)
    assert len(run.records) == 4 and run.summary["problems"] == 2


def test_pipeline_folder_expands_to_one_run_per_method(runs, tmp_path):
    pipeline = tmp_path / "pipeline"
    shutil.copytree(runs[0], pipeline / "eval" / "mucode-bon")
    shutil.copytree(runs[2], pipeline / "eval" / "instruct")
    (pipeline / "eval" / "not-a-run").mkdir()
    assert [r.name for r in load_runs([pipeline])] == ["instruct", "mucode-bon"]
    text = write_report([pipeline]).read_text()
    assert (pipeline / "report" / "report.md").is_file()
    assert "| mucode-bon | tiny-model | 2 | pt+lv |" in text and "| instruct | tiny-model | 1 | none |" in text


def test_names_replace_folder_names_and_clashes_are_qualified(runs, tmp_path):
    assert [r.name for r in load_runs(runs, ["A", "B", "C"])] == ["A", "B", "C"]
    other = tmp_path / "other"
    shutil.copytree(runs[0], other / "bon")
    assert [r.name for r in load_runs([runs[0], other / "bon"])] == [f"{tmp_path.name}/bon", "other/bon"]
    with pytest.raises(ValueError, match="--names gives 2 names for 3 runs"):
        load_runs(runs, ["A", "B"])


def test_bad_folders_raise_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        load_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is not a run folder: it holds no searches.jsonl"):
        load_runs([tmp_path / "empty"])
    broken = search_folder(tmp_path / "broken", [{"problem_id": "p0"}], "random", searches=1, protocol=False)
    with pytest.raises(ValueError, match=r"searches.jsonl: record 1 is not a search record \(missing search, turns"):
        load_run(broken)
    (broken / "searches.jsonl").write_text("")
    with pytest.raises(ValueError, match="holds no finished search yet"):
        load_run(broken)
    with pytest.raises(ValueError, match="say where the report goes with --out"):
        write_report([tmp_path / "broken", tmp_path / "empty"])


def test_cli_writes_the_report_and_reports_errors_in_one_line(runs, tmp_path, capsys):
    out = tmp_path / "cli-report"
    assert main(["report", *map(str, runs), "--out", str(out), "--names", "bon,bon-random,greedy"]) == 0
    assert ROW_A in (out / "report.md").read_text()
    assert f"wrote {out / 'report.md'}" in capsys.readouterr().out
    assert main(["report", str(runs[0]), str(runs[1])]) == 2
    assert "say where the report goes with --out" in capsys.readouterr().err
    (tmp_path / "nothing").mkdir()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("Error: ") and "nothing is not a run folder" in error and error.count("\n") == 1


PROBLEMS = [
    {"id": f"p{i}", "prompt": f"Return {i} plus x.", "public_tests": [f"assert f(1) == {i + 1}"],
     "private_tests": [f"assert f(2) == {i + 2}"]}
    for i in range(3)
]  # fmt: skip


def test_a_finished_run_stores_the_summary_the_report_recomputes(tmp_path, tiny_model_dir):
    """One metrics home: summary.json written by `mucode search` and `mucode rollout` holds the numbers
    that the report code computes from the records."""
    problems = tmp_path / "problems.jsonl"
    write_jsonl(problems, PROBLEMS)
    common = ["--model", str(tiny_model_dir), "--problems", str(problems), "--turns", "2", "--temperature", "1.0",
              "--max-new-tokens", "8", "--workers", "1"]  # fmt: skip
    assert main(["search", *common, "--n", "2", "--searches", "2", "--out", str(tmp_path / "search")]) == 0
    assert main(["rollout", *common, "--rollouts", "2", "--out", str(tmp_path / "rollout")]) == 0
    search = load_run(tmp_path / "search")
    assert search.summary_source == "summary.json"
    assert search.summary == json.loads((tmp_path / "search" / "summary.json").read_text())
    rollout = load_run(tmp_path / "rollout")
    stored = json.loads((tmp_path / "rollout" / "summary.json").read_text())
    assert stored["trajectories"] == rollout.summary["searches"] == 6
    renamed = {"correct": "accuracy", "solved_public": "public_pass_rate"}
    for key in ("problems", "correct", "accuracy_ci95", "solved_public", "accuracy_by_turn", "completion_tokens"):
        assert stored[key] == rollout.summary[renamed.get(key, key)], key
