"""Relabeling (METHOD.md §2 step 3) on a worked example built by hand: the expert ranking modes,
top-m, successful trajectories' own final programs on every state, unsolved drop/keep, the STaR
and Multi-STaR baselines, accumulation over folders, dedupe, the output format and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest
from click.testing import CliRunner

from mucode.cli import app
from mucode.episode import Episode
from mucode.training.relabel import (
    RelabelConfig,
    RelabelOptions,
    Trajectory,
    build_sft_data,
    load_trajectories,
    read_scores,
    relabel,
    run_relabel,
    score_final_programs,
    to_score,
)
from mucode.types import AssertTest, ExecResult, Problem, Status, Verdict


PASS, FAIL = Verdict(Status.PASSED), Verdict(Status.FAILED, "assert f(1) == 1")


def problem(pid: str) -> Problem:
    return Problem(
        id=pid,
        source="test",
        prompt=f"Solve {pid}.",
        public_tests=(AssertTest("assert f(1) == 1"),),
        private_tests=(AssertTest("assert f(2) == 2"),),
    )


def reply(pid: str, rollout: int, turn: int) -> str:
    return f"```python\n# {pid} rollout {rollout} turn {turn}\n```"


def make_record(
    pid: str, rollout: int, correct: Sequence[bool], replies: Sequence[str] | None = None, max_turns: int = 3
) -> dict:
    """A real trajectory record (Episode.to_dict + rollout): one turn per entry of `correct`
    (whether that turn's program passes the private tests). Every turn but the last fails the
    public tests; the last passes them unless the episode used all its turns."""
    episode = Episode(problem(pid), max_turns=max_turns)
    replies = list(replies) if replies is not None else [reply(pid, rollout, t) for t in range(len(correct))]
    for t, (text, ok) in enumerate(zip(replies, correct)):
        last = t == len(correct) - 1
        public_pass = last and (len(correct) < max_turns or ok)
        episode.record(text, ExecResult((PASS if public_pass else FAIL,)), ExecResult((PASS if ok else FAIL,)))
    assert episode.done
    return {**episode.to_dict(), "rollout": rollout, "n_turns": len(correct), "infra_error": False}


T, F = True, False
# Problem A (solved): successes r1 (1 turn) and r4 (2 turns); failures r0, r2, r3, r5 (scores below).
# Problem B (unsolved): failures r0, r1. Problem C (solved only at turn 1, never on the first turn).
RECORDS = [
    make_record("A", 0, [F, F, F]),
    make_record("A", 1, [T]),
    make_record("A", 2, [F, F]),
    make_record("A", 3, [F]),
    make_record("A", 4, [F, T]),
    make_record("A", 5, [F, F, F]),
    make_record("B", 0, [F, F, F]),
    make_record("B", 1, [F]),
    make_record("C", 0, [F, T]),
    make_record("C", 1, [F, F, F]),
]
SCORES = {
    (0, "A", 0): 0.9,
    (0, "A", 1): 0.1,
    (0, "A", 2): 0.5,
    (0, "A", 3): -1.0,
    (0, "A", 4): 0.7,
    (0, "A", 5): 0.2,
    (0, "B", 0): 0.3,
    (0, "B", 1): 0.6,
    (0, "C", 0): 0.0,
    (0, "C", 1): 0.4,
}


def trajectories(records=RECORDS, folder: int = 0) -> list[Trajectory]:
    return [Trajectory.from_record(r, folder) for r in records]


def by_source(result, source: str) -> set[tuple[str, int, int]]:
    return {(e.problem_id, e.rollout, e.state) for e in result.examples if e.source == source}


def targets(result, pid: str) -> set[str]:
    return {e.completion for e in result.examples if e.problem_id == pid and e.source == "expert"}


def test_trajectory_states_are_the_episode_states():
    record = RECORDS[0]
    t = Trajectory.from_record(record)
    episode = Episode.from_dict(record)
    assert len(t.states) == 3 and [list(s) for s in t.states] == [episode.state(i) for i in range(3)]
    assert t.states[2][-1]["role"] == "user" and t.states[2][-2] == {"role": "assistant", "content": reply("A", 0, 1)}
    assert t.final_reply == reply("A", 0, 2) and t.correct is False


def test_mucode_combined_expert_top_m_and_own_finals():
    result = relabel(trajectories(), "mucode", SCORES, RelabelOptions(top_m=3, dedupe=False))
    # A: expert = the correct final program with the highest score (r4, 0.7 beats r1, 0.1) even
    # though the incorrect r0 scores 0.9; the three best-scored failures r0, r2, r5 get it on
    # every state; r3 (lowest score) does not. Successes keep their own final reply on every state.
    assert targets(result, "A") == {reply("A", 4, 1)}
    assert {(p, r, s) for p, r, s in by_source(result, "expert") if p == "A"} == {
        ("A", 0, 0),
        ("A", 0, 1),
        ("A", 0, 2),
        ("A", 2, 0),
        ("A", 2, 1),
        ("A", 5, 0),
        ("A", 5, 1),
        ("A", 5, 2),
    }
    own = [e for e in result.examples if e.source == "own" and e.problem_id == "A"]
    assert {(e.rollout, e.state, e.completion) for e in own} == {
        (1, 0, reply("A", 1, 0)),
        (4, 0, reply("A", 4, 1)),
        (4, 1, reply("A", 4, 1)),
    }
    # B is unsolved: dropped by default. C: expert r0's final (the only correct one) on r1's states.
    assert not [e for e in result.examples if e.problem_id == "B"]
    assert targets(result, "C") == {reply("C", 0, 1)}
    assert (
        result.stats.problems == 3
        and result.stats.solved == 2
        and result.stats.dropped == 1
        and result.stats.kept_unsolved == 0
    )
    assert result.stats.expert == 8 + 3 and result.stats.own == 3 + 2 and result.stats.duplicates == 0


def test_top_m_limits_the_relabeled_failures():
    one = relabel(trajectories(), "mucode", SCORES, RelabelOptions(top_m=1, dedupe=False))
    assert {(p, r) for p, r, _ in by_source(one, "expert")} == {("A", 0), ("C", 1)}
    none = relabel(trajectories(), "mucode", SCORES, RelabelOptions(top_m=0, dedupe=False))
    assert by_source(none, "expert") == set() and none.stats.own == 5
    every = relabel(trajectories(), "mucode", SCORES, RelabelOptions(top_m=10, dedupe=False))
    assert {(p, r) for p, r, _ in by_source(every, "expert")} == {("A", 0), ("A", 2), ("A", 3), ("A", 5), ("C", 1)}


def test_expert_rank_verifier_and_oracle():
    verifier = relabel(trajectories(), "mucode", SCORES, RelabelOptions(expert_rank="verifier", dedupe=False))
    assert targets(verifier, "A") == {reply("A", 0, 2)}  # the incorrect r0 has the highest score
    oracle = relabel(trajectories(), "mucode", None, RelabelOptions(expert_rank="oracle", top_m=10, dedupe=False))
    assert targets(oracle, "A") <= {reply("A", 1, 0), reply("A", 4, 1)} and len(targets(oracle, "A")) == 1
    # oracle ties are broken by a seeded draw per problem: the same seed gives the same expert,
    # and some seed picks the other correct program
    experts = {
        frozenset(targets(relabel(trajectories(), "mucode", None, RelabelOptions(expert_rank="oracle", seed=s)), "A"))
        for s in range(20)
    }
    assert experts == {frozenset({reply("A", 1, 0)}), frozenset({reply("A", 4, 1)})}
    again = relabel(trajectories(), "mucode", None, RelabelOptions(expert_rank="oracle", top_m=10, dedupe=False))
    assert [e.to_dict() for e in again.examples] == [e.to_dict() for e in oracle.examples]


def test_combined_and_verifier_ranking_need_every_score():
    partial = {k: v for k, v in SCORES.items() if k != (0, "A", 3)}
    with pytest.raises(ValueError, match=r"no verifier score for trajectory \(0, 'A', 3\)"):
        relabel(trajectories(), "mucode", partial)
    with pytest.raises(ValueError, match="no verifier score"):
        relabel(trajectories(), "mucode", None, RelabelOptions(expert_rank="verifier"))


def test_unsolved_keep_uses_the_best_scored_incorrect_program():
    result = relabel(trajectories(), "mucode", SCORES, RelabelOptions(unsolved="keep", dedupe=False))
    assert targets(result, "B") == {reply("B", 1, 0)}  # score 0.6 beats 0.3
    assert {(r, s) for p, r, s in by_source(result, "expert") if p == "B"} == {(0, 0), (0, 1), (0, 2), (1, 0)}
    assert result.stats.dropped == 0 and result.stats.kept_unsolved == 1


def test_multi_star_keeps_successful_trajectories_only():
    result = relabel(trajectories(), "multi-star", options=RelabelOptions(dedupe=False))
    assert by_source(result, "expert") == set()
    assert {(e.problem_id, e.rollout, e.state, e.completion) for e in result.examples} == {
        ("A", 1, 0, reply("A", 1, 0)),
        ("A", 4, 0, reply("A", 4, 1)),
        ("A", 4, 1, reply("A", 4, 1)),
        ("C", 0, 0, reply("C", 0, 1)),
        ("C", 0, 1, reply("C", 0, 1)),
    }


def test_star_keeps_correct_first_turns_only():
    # D's first turn passed the private tests but failed the public one (so it went on): under the
    # paper's rule (correct = all tests) it is not a correct program and is not imitated
    records = RECORDS + [make_record("D", 0, [T, F, F], max_turns=3)]
    result = relabel(trajectories(records), "star", options=RelabelOptions(dedupe=False))
    assert {(e.problem_id, e.rollout, e.state, e.completion) for e in result.examples} == {
        ("A", 1, 0, reply("A", 1, 0))
    }
    assert all(len(e.prompt) == 1 and e.prompt[0]["role"] == "user" for e in result.examples)
    assert result.stats.solved == 1


def test_dedupe_keeps_one_copy_of_repeated_examples():
    same = "```python\ndef f(x):\n    return x\n```"
    records = [
        make_record("E", 0, [T], [same]),
        make_record("E", 1, [T], [same]),
        make_record("E", 2, [F]),
        make_record("E", 3, [F]),
    ]
    scores = {(0, "E", 0): 0.5, (0, "E", 1): 0.5, (0, "E", 2): 0.1, (0, "E", 3): 0.2}
    kept = relabel(trajectories(records), "mucode", scores)
    # state 0 is the same prompt for every trajectory: one (prompt, same) example in all
    assert len(kept.examples) == 1 and kept.stats.duplicates == 3 and kept.stats.own == 1 and kept.stats.expert == 0
    assert len(relabel(trajectories(records), "mucode", scores, RelabelOptions(dedupe=False)).examples) == 4


def test_unknown_labels_and_sandbox_failures_are_skipped():
    unknown = make_record("A", 6, [F])
    unknown["turns"][-1]["correct"] = None
    broken = {**make_record("A", 7, [T]), "infra_error": True}
    result = relabel(trajectories(RECORDS + [unknown, broken]), "mucode", SCORES)
    assert result.stats.skipped == 2 and result.stats.trajectories == len(RECORDS)
    assert not [e for e in result.examples if e.rollout in (6, 7)]


def write_folder(folder: Path, records: Sequence[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_accumulation_over_folders(tmp_path):
    # iteration 1 solves B with a new program; A's expert is chosen over both folders
    it1 = [
        make_record("A", 0, [F]),
        make_record("A", 1, [T], ["```python\n# A best\n```"]),
        make_record("B", 0, [F, T]),
    ]
    folders = [write_folder(tmp_path / "it0", RECORDS), write_folder(tmp_path / "it1", it1)]
    loaded = load_trajectories(folders)
    assert {t.folder for t in loaded} == {0, 1} and len(loaded) == len(RECORDS) + 3
    scores = {**SCORES, (1, "A", 0): 0.0, (1, "A", 1): 0.8, (1, "B", 0): 0.1}
    result = relabel(loaded, "mucode", scores, RelabelOptions(top_m=3, dedupe=False))
    assert targets(result, "A") == {"```python\n# A best\n```"}  # 0.8 from folder 1 beats 0.7 from folder 0
    assert targets(result, "B") == {reply("B", 0, 1)}  # solved in iteration 1: kept now
    expert_a = {(e.folder, e.rollout) for e in result.examples if e.problem_id == "A" and e.source == "expert"}
    assert expert_a == {(0, 0), (0, 2), (0, 5), (1, 0)}  # top-m per folder
    assert {(e.folder, e.rollout) for e in result.examples if e.problem_id == "B" and e.source == "expert"} == {
        (0, 0),
        (0, 1),
    }


def test_build_sft_data_writes_trl_rows_that_datasets_loads(tmp_path):
    folder = write_folder(tmp_path / "it0", RECORDS)
    out = tmp_path / "sft" / "data.jsonl"
    stats = build_sft_data("mucode", [folder], out, scores=SCORES)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (
        len(rows) == stats.examples
        and json.loads((tmp_path / "sft" / "data.stats.json").read_text())["examples"] == stats.examples
    )
    row = rows[0]
    assert set(row) == {"prompt", "completion", "problem_id", "folder", "rollout", "state", "source"}
    assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"
    assert len({(json.dumps(r["prompt"]), r["completion"][0]["content"]) for r in rows}) == len(rows)  # deduped
    import datasets

    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    assert len(loaded) == len(rows) and loaded[0]["completion"] == row["completion"]


def test_scores_from_verifier_score_files(tmp_path):
    folder = write_folder(tmp_path / "it0", RECORDS)
    rows = [{"problem_id": p, "rollout": r, "turn": 0, "final": True, "score": s} for (_, p, r), s in SCORES.items()]
    rows.append(
        {"problem_id": "A", "rollout": 0, "turn": 0, "final": False, "score": 99.0}
    )  # not a final turn: ignored
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_scores([tmp_path / "scores.jsonl"]) == SCORES
    config = RelabelConfig(
        trajectories=[str(folder)], scores=[str(tmp_path / "scores.jsonl")], out=str(tmp_path / "sft.jsonl")
    )
    stats = run_relabel(config, progress=False)
    # every state 0 of a problem is the same prompt: A's three relabeled failures repeat r4's own
    # (state 0 -> the expert reply, which is r4's final reply), and so does C's r1 (C's r0)
    assert stats.own == 5 and stats.expert == 11 - 3 - 1 and stats.duplicates == 4
    assert (tmp_path / "sft.config.yaml").is_file()


def test_to_score_skips_dropped_problems():
    wanted = {t.key for t in to_score(trajectories(), "mucode", RelabelOptions())}
    assert wanted == {k for k in SCORES if k[1] != "B"}
    assert {t.key for t in to_score(trajectories(), "mucode", RelabelOptions(unsolved="keep"))} == set(SCORES)
    assert to_score(trajectories(), "star", RelabelOptions()) == []


def test_bad_input_gives_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no trajectories.jsonl"):
        load_trajectories([tmp_path])
    with pytest.raises(ValueError, match="unknown method"):
        relabel(trajectories(), "rft")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_m=-1"):
        RelabelOptions(top_m=-1)
    with pytest.raises(ValueError, match="one per folder"):
        RelabelConfig(trajectories=["a", "b"], scores=["s"])
    with pytest.raises(ValueError, match="pass --verifier"):
        run_relabel(RelabelConfig(trajectories=[str(tmp_path)]), progress=False)


def test_cli_relabel_star_and_mucode(tmp_path):
    it0 = write_folder(tmp_path / "it0", RECORDS)
    it1 = write_folder(tmp_path / "it1", [make_record("B", 0, [T])])
    out = tmp_path / "star.jsonl"
    result = CliRunner().invoke(
        app,
        ["generator", "relabel", "--trajectories", str(it0), str(it1), "--method", "star", "--out", str(out)],
        standalone_mode=False,
    )
    assert result.exception is None, result.output
    assert "star: 3 problems" in result.output
    assert {json.loads(line)["problem_id"] for line in out.read_text().splitlines()} == {"A", "B"}
    result = CliRunner().invoke(
        app,
        [
            "generator",
            "relabel",
            "--trajectories",
            str(it0),
            "--expert-rank",
            "oracle",
            "--top-m",
            "1",
            "--unsolved",
            "keep",
            "--seed",
            "3",
            "--out",
            str(tmp_path / "mu.jsonl"),
        ],
        standalone_mode=False,
    )
    assert result.exception is None, result.output
    assert "1 kept" in result.output
    missing = CliRunner().invoke(
        app,
        ["generator", "relabel", "--trajectories", str(it0), "--out", str(tmp_path / "x.jsonl")],
        standalone_mode=False,
    )
    assert missing.exception is not None and "--verifier" in str(missing.exception)


def test_relabel_with_a_verifier_scores_final_replies_for_the_original_problem(tmp_path, tiny_model_dir):
    from mucode.verifier.model import load_backbone
    from mucode.verifier.scoring import VerifierScorer

    model, tokenizer = load_backbone(str(tiny_model_dir), seed=0)  # a random head: scores are arbitrary but fixed
    verifier = tmp_path / "verifier"
    model.save_pretrained(verifier)
    tokenizer.save_pretrained(verifier)
    scorer = VerifierScorer.load(str(verifier))
    loaded = trajectories()
    scores = score_final_programs(loaded, scorer)
    assert set(scores) == set(SCORES)
    a0 = next(t for t in loaded if t.key == (0, "A", 0))
    assert scores[a0.key] == pytest.approx(scorer.score([list(a0.prompt)], [a0.final_reply])[0])
    folder = write_folder(tmp_path / "it0", RECORDS)
    out = tmp_path / "sft.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "generator",
            "relabel",
            "--trajectories",
            str(folder),
            "--verifier",
            str(verifier),
            "--out",
            str(out),
            "--no-dedupe",
        ],
        standalone_mode=False,
    )
    assert result.exception is None, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expert_a = {r["completion"][0]["content"] for r in rows if r["problem_id"] == "A" and r["source"] == "expert"}
    best_correct = max((t for t in loaded if t.problem_id == "A" and t.correct), key=lambda t: scores[t.key])
    assert expert_a == {best_correct.final_reply}
