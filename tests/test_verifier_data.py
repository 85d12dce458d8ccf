"""Verifier data: labels, pairs (every rule of METHOD.md §2 on a worked example), seeding,
one-class problems, accumulation over folders, views, the split, and the TRL export formats."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

import pytest

from mucode.verifier.config import VerifierDataConfig
from mucode.verifier.data import (
    build_pairs,
    candidates_from_records,
    export_data,
    labeled,
    load_candidates,
    pair_records,
    prepare_data,
    row_record,
    split_problems,
    turn_label,
    write_records,
)


def make_record(
    problem_id: str, rollout: int, correct: Sequence[bool | None], replies: Sequence[str] | None = None
) -> dict:
    """A trajectory record in the rollouts.md format: one turn per entry of `correct`."""
    replies = (
        list(replies)
        if replies is not None
        else [f"```python\ndef f_{problem_id}_{rollout}_{t}():\n    return {t}\n```" for t in range(len(correct))]
    )
    turns = [
        {
            "reply": reply,
            "program": reply.split("```python\n")[-1].rstrip("`\n"),
            "feedback": f"Feedback:\nturn {t} failed",
            "correct": c,
        }
        for t, (reply, c) in enumerate(zip(replies, correct))
    ]
    prompt = [{"role": "user", "content": f"Solve problem {problem_id}."}]
    return {
        "problem_id": problem_id,
        "rollout": rollout,
        "problem": {"id": problem_id, "prompt": f"Solve problem {problem_id}."},
        "prompt": prompt,
        "turns": turns,
        "n_turns": len(turns),
        "max_turns": 3,
        "done": True,
        "solved_public": bool(correct[-1]),
        "correct": correct[-1],
    }


T, F, N = True, False, None
# Problem A has both classes: positives (r0,t1) (r1,t0) (r4,t1); negatives (r0,t0) (r2,t0..2) (r3,t1);
# unused (r3,t0): correct but not final, (r4,t0): private tests not run.
WORKED = [
    make_record("A", 0, [F, T]),
    make_record("A", 1, [T]),
    make_record("A", 2, [F, F, F]),
    make_record("A", 3, [T, F]),
    make_record("A", 4, [N, T]),
    make_record("B", 0, [T]),
    make_record("B", 1, [T]),  # only correct
    make_record("C", 0, [F, F]),  # only incorrect
    make_record("D", 0, [N]),  # no labeled turn
]


def write_folder(folder: Path, records: Sequence[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def refs(candidates):
    return {(c.problem_id, c.rollout, c.turn) for c in candidates}


def test_turn_labels():
    assert turn_label(1, 2, True) is True  # final turn of a success
    assert turn_label(0, 1, True) is True
    assert turn_label(0, 2, False) is False and turn_label(1, 2, False) is False  # every failed turn
    assert turn_label(0, 2, True) is None  # correct but not final: the episode went on
    assert turn_label(0, 1, None) is None  # private tests not run


def test_a_stored_final_turn_that_failed_its_public_test_is_a_negative():
    record = make_record("Z", 0, [F, F, T])  # written under the private-only rule: `correct` True
    record["turns"][-1]["public"] = {"passed": False, "verdicts": []}
    final = candidates_from_records([record])[-1]
    assert final.correct is False and final.label is False


def test_labels_on_the_worked_example():
    candidates = candidates_from_records(WORKED)
    assert len(candidates) == 2 + 1 + 3 + 2 + 2 + 1 + 1 + 2 + 1
    positives = refs(c for c in candidates if c.label is True)
    negatives = refs(c for c in candidates if c.label is False)
    assert positives == {("A", 0, 1), ("A", 1, 0), ("A", 4, 1), ("B", 0, 0), ("B", 1, 0)}
    assert negatives == {("A", 0, 0), ("A", 2, 0), ("A", 2, 1), ("A", 2, 2), ("A", 3, 1), ("C", 0, 0), ("C", 0, 1)}
    assert refs(labeled(candidates)) == positives | negatives


def test_pairs_and_counts_on_the_worked_example():
    pairs, stats = build_pairs(candidates_from_records(WORKED), k=32, seed=0)
    assert len(pairs) == 3 * 5  # fewer combinations than k: all of them, once each
    assert {p.chosen.problem_id for p in pairs} == {"A"}
    assert all(p.chosen.label is True and p.rejected.label is False for p in pairs)
    assert len({(p.chosen.ref, p.rejected.ref) for p in pairs}) == 15
    assert stats.to_dict() == {
        "problems": 4,
        "both": 1,
        "positive_only": 1,
        "negative_only": 1,
        "unlabeled": 1,
        "positives": 5,
        "negatives": 7,
        "unused_turns": 3,
        "duplicates": 0,
        "pairs": 15,
    }


def test_pair_sampling_is_seeded_and_independent_of_order_and_other_problems():
    def chosen_pairs(records, seed, k=4):
        pairs, _ = build_pairs(candidates_from_records(records), k=k, seed=seed)
        return [(p.chosen.ref, p.rejected.ref) for p in pairs]

    first = chosen_pairs(WORKED, seed=0)
    assert len(first) == 4 == len(set(first))  # k drawn without replacement
    shuffled = list(WORKED)
    random.Random(1).shuffle(shuffled)
    assert chosen_pairs(shuffled, seed=0) == first  # storage order does not matter
    only_a = [r for r in WORKED if r["problem_id"] == "A"]
    assert chosen_pairs(only_a, seed=0) == first  # nor do the other problems
    assert any(chosen_pairs(WORKED, seed=s) != first for s in range(1, 5))  # the seed does


def test_pairs_accumulate_over_folders_without_mixing_them(tmp_path):
    a = write_folder(tmp_path / "it0", WORKED)
    b = write_folder(tmp_path / "it1", [make_record("A", 0, [T]), make_record("A", 1, [F]), make_record("C", 0, [T])])
    candidates = load_candidates([a, b])
    pairs, stats = build_pairs(candidates, k=32, seed=0)
    assert len(pairs) == 15 + 1 + 0  # C: negative-only in it0, positive-only in it1: no cross-folder pair
    assert all(p.chosen.source == p.rejected.source for p in pairs)
    assert stats.problems == 4 + 2 and stats.both == 1 + 1
    with pytest.raises(FileNotFoundError, match="trajectories.jsonl"):
        load_candidates([tmp_path / "missing"])


def test_dedupe_drops_repeated_texts_within_a_problem_and_class():
    records = [make_record("A", i, [T], ["same"]) for i in range(3)] + [
        make_record("A", 3, [F], ["same"]),
        make_record("A", 4, [F], ["other"]),
    ]
    pairs, stats = build_pairs(candidates_from_records(records), k=32, dedupe=True)
    assert stats.positives == 1 and stats.negatives == 2 and stats.duplicates == 2 and len(pairs) == 2
    assert len(build_pairs(candidates_from_records(records), k=32)[0]) == 3 * 2


def test_views_reply_or_program_and_problem_or_history():
    record = make_record("A", 0, [F, T], ["first ```python\nx = 1\n```", "```python\nx = 2\n```"])
    raw = candidates_from_records([record])
    assert raw[1].completion == "```python\nx = 2\n```" and raw[1].prompt == tuple(record["prompt"])
    program = candidates_from_records([record], reply_view="program")
    assert program[1].completion == "x = 2"
    history = candidates_from_records([record], context="history")
    assert history[0].prompt == tuple(record["prompt"])
    assert [m["role"] for m in history[1].prompt] == ["user", "assistant", "user"]
    assert history[1].prompt[1]["content"] == record["turns"][0]["reply"]  # the history holds raw replies
    assert history[1].prompt[2]["content"] == record["turns"][0]["feedback"]
    assert history[1].messages()[-1] == {"role": "assistant", "content": record["turns"][1]["reply"]}


def test_split_is_by_problem_seeded_and_disjoint():
    ids = [f"p{i}" for i in range(10)]
    train, held = split_problems(ids + ids, 0.3, seed=0)  # repeated ids are one problem
    assert len(held) == 3 and len(train) == 7 and not set(train) & set(held) and sorted(train + held) == sorted(ids)
    assert split_problems(reversed(ids), 0.3, seed=0) == (train, held)
    assert any(split_problems(ids, 0.3, seed=s)[1] != held for s in range(1, 5))
    assert split_problems(ids, 0.0) == (sorted(ids), [])
    assert len(split_problems(["a", "b"], 0.01)[1]) == 1  # a positive fraction holds out at least one


def test_prepare_data_keeps_every_row_of_a_problem_on_one_side(tmp_path):
    records = [make_record(f"p{i}", r, [F, T] if r % 2 else [F]) for i in range(10) for r in range(3)]
    config = VerifierDataConfig(
        trajectories=[str(write_folder(tmp_path / "r", records))], holdout_fraction=0.2, seed=3
    )
    data = prepare_data(config)
    assert len(data.heldout_ids) == 2
    assert {p.chosen.problem_id for p in data.train_pairs} <= set(data.train_ids)
    assert {c.problem_id for c in data.heldout_rows} <= set(data.heldout_ids)
    assert data.train_stats.problems == 8 and data.heldout_stats.problems == 2


def test_export_formats_load_with_datasets_as_trl_expects(tmp_path):
    datasets = pytest.importorskip("datasets")
    is_conversational = pytest.importorskip("trl.data_utils").is_conversational

    config = VerifierDataConfig(
        trajectories=[str(write_folder(tmp_path / "r", WORKED))], holdout_fraction=0.25, seed=0
    )
    files = export_data(prepare_data(config), tmp_path / "data")
    assert {f.name for f in files} >= {"train_pairs.jsonl", "train_rows.jsonl"}
    pairs = datasets.load_dataset("json", data_files=str(tmp_path / "data" / "train_pairs.jsonl"), split="train")
    if len(pairs):
        row = pairs[0]
        assert is_conversational(row) and set(row) >= {"prompt", "chosen", "rejected", "problem_id"}
        assert row["chosen"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"
    rows = datasets.load_dataset("json", data_files=str(tmp_path / "data" / "train_rows.jsonl"), split="train")
    assert set(rows.column_names) >= {"prompt", "completion", "label"} and isinstance(rows[0]["label"], bool)
    parquet = write_records(pair_records(build_pairs(candidates_from_records(WORKED))[0]), tmp_path / "pairs.parquet")
    assert len(datasets.load_dataset("parquet", data_files=str(parquet), split="train")) == 15
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert set(stats) == {"train", "heldout"}


def test_history_pairs_use_the_implicit_prompt_format():
    pairs, _ = build_pairs(candidates_from_records(WORKED, context="history"), k=32)
    records = pair_records(pairs)
    assert all("prompt" not in r for r in records)  # histories differ: whole conversations
    assert all(r["chosen"][-1]["role"] == "assistant" and r["chosen"][0]["role"] == "user" for r in records)


def test_row_record_needs_a_label():
    unused = next(c for c in candidates_from_records(WORKED) if c.label is None)
    with pytest.raises(ValueError, match="no label"):
        row_record(unused)


def test_importing_the_verifier_package_and_cli_loads_no_heavy_module():
    import subprocess
    import sys

    code = "import sys, mucode.verifier, mucode.cli.verifier; print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets', 'numpy') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr


def test_pairs_with_replacement_draw_exactly_k_seeded_pairs_as_the_reference_does():
    candidates = candidates_from_records(WORKED)
    pairs, stats = build_pairs(candidates, k=32, seed=0, replacement=True)
    assert len(pairs) == 32 == stats.pairs  # problem A has 3 x 5 combinations: k draws repeat some
    assert len({(p.chosen.ref, p.rejected.ref) for p in pairs}) < 32
    assert all(p.chosen.label is True and p.rejected.label is False for p in pairs)
    again, _ = build_pairs(list(reversed(candidates)), k=32, seed=0, replacement=True)
    assert [(p.chosen.ref, p.rejected.ref) for p in again] == [(p.chosen.ref, p.rejected.ref) for p in pairs]


def test_prepare_data_honours_pairs_with_replacement(tmp_path):
    folder = write_folder(tmp_path / "it0", WORKED)
    plain = prepare_data(VerifierDataConfig(trajectories=[str(folder)], pairs_per_problem=20))
    drawn = prepare_data(
        VerifierDataConfig(trajectories=[str(folder)], pairs_per_problem=20, pairs_with_replacement=True)
    )
    assert len(plain.train_pairs) == 15 and len(drawn.train_pairs) == 20
