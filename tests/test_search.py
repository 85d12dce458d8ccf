"""Multi-turn Best-of-N search with the real tiny model and the real sandbox: selectors, stopping,
seeding, the greedy special cases, storage and resume, the summary numbers, `mucode search`."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mucode.engine import SampledProgram, select_candidate
from mucode.execution import Executor, Limits
from mucode.generation.base import SamplingParams
from mucode.metrics import summarize_searches
from mucode.prompts import initial_messages
from mucode.search import SearchConfig, run_search, search_problems
from mucode.store import SearchStore, read_searches
from mucode.types import AssertTest, Problem


IDENTITY = "def f(x):\n    return x"
PROBLEMS = [
    {
        "id": f"p{i}",
        "prompt": f"Return {i} plus x.",
        "public_tests": [f"assert f(1) == {i + 1}"],
        "private_tests": [f"assert f(2) == {i + 2}"],
    }
    for i in range(3)
]


def problem(pid: str, public: str, private: str) -> Problem:
    return Problem(pid, "test", f"Problem {pid}: write f.", (AssertTest(public),), (AssertTest(private),))


# The identity program passes "same" (public and private), passes only the public test of "leaky",
# and fails "other".
SAME = problem("same", "assert f(1) == 1", "assert f(2) == 2")
LEAKY = problem("leaky", "assert f(1) == 1", "assert f(2) == 3")
OTHER = problem("other", "assert f(1) == 5", "assert f(2) == 6")


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    from mucode.generation.hf import TransformersGenerator

    gen = TransformersGenerator.from_pretrained(str(tiny_model_dir))
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def identity_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model trained (a second, on CPU) to answer the first message of SAME, LEAKY and
    OTHER with IDENTITY: a real model whose greedy reply to those prompts is known."""
    return train_to_reply(
        tiny_model_dir,
        tmp_path_factory.mktemp("identity-model"),
        IDENTITY,
        [initial_messages(p) for p in (SAME, LEAKY, OTHER)],
    )


def train_to_reply(base: Path, out: Path, reply: str, conversations: list[list[dict]]) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    rows = []
    for conversation in conversations:
        prompt = tokenizer(
            tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        target = tokenizer(reply + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only wait on each other (50x slower on a loaded machine)
    try:
        for _ in range(200):
            model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=Limits(timeout_s=2)) as ex:
        yield ex


class CountingGenerator:
    """Wraps a real generator and records every conversation it is asked to continue."""

    def __init__(self, inner):
        self.inner = inner
        self.conversations: list[list[dict]] = []
        self.calls = 0

    def generate(self, conversations, params):
        self.calls += 1
        self.conversations.extend(conversations)
        return self.inner.generate(conversations, params)

    def close(self):
        pass


def load(path: Path) -> list[Problem]:
    from mucode.problems import load_problems

    return list(load_problems(str(path)))


@pytest.fixture
def problems_file(tmp_path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def without_times(records) -> list[dict]:
    return [{k: v for k, v in r.to_dict().items() if k not in ("generate_s", "wall_s")} for r in records]


SAMPLED = SamplingParams(temperature=1.0, max_new_tokens=10)


# -- selectors on constructed candidates -----------------------------------------------------------


def cand(public: bool = False, correct: bool = False, score: float | None = None) -> SampledProgram:
    return SampledProgram(reply="", program="", public_passed=public, correct=correct, score=score)


def picks(selector: str, candidates: list[SampledProgram], draws: int = 60) -> set[int]:
    return {select_candidate(selector, candidates, random.Random(seed)) for seed in range(draws)}


@pytest.mark.parametrize(
    "selector, candidates, expected",
    [
        ("random", [cand(), cand(True, True), cand()], {0, 1, 2}),
        ("pt", [cand(), cand(True), cand(), cand(True)], {1, 3}),
        ("pt", [cand(), cand(), cand()], {0, 1, 2}),  # no public pass: any
        ("lv", [cand(True, True, 0.1), cand(score=0.9), cand(score=0.5)], {1}),
        ("lv", [cand(score=0.9), cand(score=0.2), cand(score=0.9)], {0, 2}),  # ties: either
        ("pt+lv", [cand(score=0.99), cand(True, score=0.2), cand(True, score=0.5), cand(score=0.1)], {2}),
        ("pt+lv", [cand(score=0.3), cand(score=0.7), cand(score=0.1)], {1}),  # no public pass: best overall
        ("oracle", [cand(True), cand(correct=True), cand(True, True), cand(True, True)], {2, 3}),  # correct and public
        ("oracle", [cand(True), cand(correct=True), cand()], {1}),  # correct beats public
        ("oracle", [cand(), cand(True), cand()], {1}),  # none correct: pt
        ("oracle", [cand(), cand(), cand()], {0, 1, 2}),  # nothing: random
    ],
)
def test_selector_keeps_the_candidates_its_rule_allows(selector, candidates, expected):
    assert picks(selector, candidates) == expected


def test_verifier_selectors_need_scores_and_a_verifier():
    with pytest.raises(ValueError, match="without scores"):
        select_candidate("lv", [cand(), cand()], random.Random(0))
    with pytest.raises(ValueError, match="pass --verifier"):
        SearchConfig(selector="pt+lv")
    with pytest.raises(ValueError, match="greedy decoding gives one program"):
        SearchConfig(n=5, temperature=0.0)
    with pytest.raises(ValueError, match="greedy searches are identical"):
        SearchConfig(n=1, temperature=0.0, searches=3)
    assert SearchConfig(n=1, temperature=0.8, selector="random").n == 1  # n = 1 with sampling is allowed


# -- the engine ------------------------------------------------------------------------------------


def test_a_search_stops_at_its_first_selected_public_pass_and_spends_no_more_generation(identity_model_dir, executor):
    from mucode.generation.hf import TransformersGenerator

    counting = CountingGenerator(TransformersGenerator.from_pretrained(str(identity_model_dir)))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    records = search_problems([SAME, LEAKY, OTHER], counting, executor, n=1, selector="pt", turns=3, sampling=greedy)
    same, leaky, other = records
    assert [t.chosen.program for t in same.turns] == [IDENTITY]
    assert (same.solved_public, same.answer_turn, same.correct) == (True, 1, True)
    assert (leaky.solved_public, leaky.answer_turn, leaky.correct) == (True, 1, False)  # public pass, private fail
    assert (other.solved_public, other.answer_turn, len(other.turns)) == (False, None, 3)
    # 3 conversations at turn 1, then only OTHER's at turns 2 and 3
    assert len(counting.conversations) == 5 and counting.calls == 3
    assert same.tokens_saved == 2 * same.turns[0].chosen.completion_tokens > 0
    assert other.tokens_saved == 0
    assert counting.conversations[3][-1]["content"] == other.turns[0].feedback  # feedback extends the history


# OTHER's chat exactly (so the identity model answers it with IDENTITY), but a private test that the
# identity program passes: an answer that fails the public test and passes the private one.
HIDDEN = Problem("hidden", "test", OTHER.prompt, OTHER.public_tests, (AssertTest("assert f(2) == 2"),))


def test_an_answer_failing_the_public_test_is_incorrect_even_when_it_passes_the_private_ones(
    identity_model_dir, executor
):
    from mucode.generation.hf import TransformersGenerator

    generator = TransformersGenerator.from_pretrained(str(identity_model_dir))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    (record,) = search_problems([HIDDEN], generator, executor, n=1, selector="pt", turns=1, sampling=greedy)
    answer = record.turns[-1].chosen
    assert answer.program == IDENTITY and (answer.public_passed, answer.private_passed) == (False, True)
    assert not answer.correct and not record.correct
    assert summarize_searches([record], max_turns=1)["accuracy"] == 0.0
    assert summarize_searches([record], max_turns=1)["private_only_accuracy"] == 1.0


def test_searches_are_seeded_per_search_not_per_batch(generator, executor, problems_file):
    problems = load(problems_file)[:2]

    def run(**kw):
        return search_problems(problems, generator, executor, n=2, selector="random", turns=2, sampling=SAMPLED, **kw)

    three = run(searches=3, seed=5, max_live=4)
    again = run(searches=3, seed=5, max_live=4)
    assert without_times(three) == without_times(again)
    one = run(searches=1, seed=5, max_live=1)  # other batches, other company
    assert without_times(one) == without_times([r for r in three if r.search == 0])
    assert without_times(run(searches=1, seed=6)) != without_times(one)
    replies = [c.reply for r in three for t in r.turns for c in t.candidates]
    assert len(set(replies)) > len(replies) // 2  # searches and candidates differ from each other


def test_seeding_by_step_batches_all_searches_in_one_call(generator, executor, problems_file):
    counting = CountingGenerator(generator)
    records = search_problems(
        load(problems_file),
        counting,
        executor,
        n=2,
        selector="pt",
        turns=1,
        searches=2,
        sampling=SAMPLED,
        seeding="step",
    )
    assert counting.calls == 1 and len(counting.conversations) == 6
    assert all(len(r.turns[0].candidates) == 2 for r in records)


@pytest.mark.parametrize("turns", [1, 3])
def test_greedy_search_with_n_1_is_the_greedy_episode(generator, executor, problems_file, turns):
    from mucode.episode import run_episodes

    problems = load(problems_file)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    records = search_problems(problems, generator, executor, n=1, selector="random", turns=turns, sampling=greedy)
    episodes = run_episodes(
        problems,
        lambda chats: [c[0].text for c in generator.generate(chats, replace(greedy, n=1))],
        executor,
        max_turns=turns,
    )
    for record, episode in zip(records, episodes):
        assert [(t.chosen.reply, t.chosen.program, t.feedback, t.chosen.correct) for t in record.turns] == [
            (t.reply, t.program, t.feedback, t.correct) for t in episode.turns
        ]
        assert record.correct == episode.correct and record.solved_public == episode.solved_public


def test_verifier_scores_every_candidate_and_pt_lv_keeps_the_best(tiny_model_dir, generator, executor, problems_file):
    from mucode.verifier.model import VerifierSpec, load_backbone
    from mucode.verifier.scoring import VerifierScorer

    model, tokenizer = load_backbone(str(tiny_model_dir), seed=0)
    scorer = VerifierScorer(model.eval(), tokenizer, VerifierSpec(max_length=512))
    records = search_problems(
        load(problems_file)[:2], generator, executor, n=3, selector="pt+lv", turns=2, sampling=SAMPLED, scorer=scorer
    )
    for record in records:
        for turn in record.turns:
            scores = [c.score for c in turn.candidates]
            assert all(isinstance(s, float) for s in scores) and len(set(scores)) > 1
            passing = [c.score for c in turn.candidates if c.public_passed] or scores
            assert turn.chosen.score == max(passing)
    with pytest.raises(ValueError, match="pass --verifier"):
        search_problems(load(problems_file), generator, executor, n=2, selector="lv", turns=1, sampling=SAMPLED)


# -- storage, resume, command ----------------------------------------------------------------------


def config_for(tiny_model_dir: Path, problems_file: Path, out: Path, **changes) -> SearchConfig:
    settings = dict(
        model=str(tiny_model_dir),
        problems=str(problems_file),
        out=str(out),
        n=2,
        selector="pt",
        turns=2,
        searches=2,
        temperature=1.0,
        max_new_tokens=10,
        workers=1,
        timeout_s=2.0,
        max_live=3,
    )
    return SearchConfig(**{**settings, **changes})


def test_a_cut_run_resumes_to_exactly_the_uninterrupted_records(tmp_path, tiny_model_dir, problems_file):
    whole = run_search(config_for(tiny_model_dir, problems_file, tmp_path / "whole"), progress=False)
    assert whole.searches_run == 6
    lines = (tmp_path / "whole" / "searches.jsonl").read_text().splitlines(keepends=True)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "searches.jsonl").write_text("".join(lines[:2]) + lines[2][:50])  # as if killed while writing line 3
    resumed = run_search(config_for(tiny_model_dir, problems_file, cut), progress=False)
    assert resumed.searches_run == 4

    def key(r):
        return r["problem_id"], r["search"]

    def strip(rs):
        return sorted(({k: v for k, v in r.items() if k not in ("generate_s", "wall_s")} for r in rs), key=key)

    assert strip(read_searches(cut)) == strip(read_searches(tmp_path / "whole"))
    assert len({key(r) for r in read_searches(cut)}) == 6
    assert run_search(config_for(tiny_model_dir, problems_file, cut), progress=False).searches_run == 0
    with pytest.raises(ValueError, match="n differ"):
        run_search(config_for(tiny_model_dir, problems_file, cut, n=3), progress=False)


def test_a_repeated_search_record_is_an_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "searches.jsonl").write_text('{"problem_id": "p0", "search": 0}\n' * 2)
    with pytest.raises(ValueError, match="line 2 repeats search"):
        SearchStore(out)


def test_search_command_writes_the_agreed_files(tmp_path, tiny_model_dir, problems_file, capsys):
    from mucode.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "search",
            "--model",
            str(tiny_model_dir),
            "--problems",
            str(problems_file),
            "--n",
            "2",
            "--selector",
            "pt",
            "--turns",
            "2",
            "--searches",
            "2",
            "--temperature",
            "1.0",
            "--max-new-tokens",
            "8",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "by turn: t1=" in printed and "tokens:" in printed
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == str(tiny_model_dir) and run["verifier"] is None and run["problem_ids"] == ["p0", "p1", "p2"]
    assert set(run["protocol"]) == {
        "public_private_rule",
        "stopping_rule",
        "n",
        "turns",
        "temperature",
        "timeout_s",
        "selector",
        "searches",
        "preamble",
        "feedback",
    }
    assert "torch" in run["package_versions"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 3 and summary["searches"] == 6 and len(summary["accuracy_by_turn"]) == 2
    assert set(summary["pass_at_k"]) == {"1", "2"} and summary["accuracy_spread"]["n"] == 2
    record = read_searches(out)[0]
    assert set(record) == {
        "problem_id",
        "search",
        "selector",
        "n",
        "max_turns",
        "turns",
        "solved_public",
        "answer_turn",
        "correct",
        "completion_tokens",
        "tokens_saved",
        "generate_s",
        "wall_s",
    }
    assert set(record["turns"][0]) == {"candidates", "selected", "feedback"}
    assert set(record["turns"][0]["candidates"][0]) == {
        "reply",
        "program",
        "public_passed",
        "correct",
        "private_passed",
        "score",
        "completion_tokens",
    }
    assert (out / "config.yaml").is_file()


def test_search_command_reports_a_bad_selector_setting_in_one_line(tmp_path, capsys):
    from mucode.cli import main

    code = main(["search", "--selector", "lv", "--out", str(tmp_path / "x")])
    assert code != 0 and "pass --verifier" in capsys.readouterr().err


# -- summary numbers -------------------------------------------------------------------------------


def stored(
    pid: str, search: int, turns: list[list[tuple[bool, bool]]], selected: list[int], max_turns: int = 3
) -> dict:
    """A record in the searches.jsonl format: turns of (public_passed, correct) candidates."""
    from mucode.engine import SearchTurn
    from mucode.search import SearchRecord

    built = [
        SearchTurn([SampledProgram("r", "p", pub, cor, None, 10) for pub, cor in cands], sel, "fb")
        for cands, sel in zip(turns, selected)
    ]
    return SearchRecord(pid, search, "pt", len(turns[0]), max_turns, built).to_dict()


def test_summary_numbers_on_constructed_records():
    # (public passed, stored `correct`); C: passes the private tests but fails the public one, which
    # the paper's rule (all tests) counts as incorrect
    F, P, C = (False, False), (True, True), (False, True)
    records = [
        stored("a", 0, [[F, P]], [1]),  # solved at turn 1
        stored("a", 1, [[F, F], [F, C], [P, F]], [0, 1, 0]),  # private-only pass at turn 2, answer at 3 correct
        stored("b", 0, [[F, F], [F, F], [F, F]], [0, 0, 0]),  # never
        stored("b", 1, [[C, F], [F, F], [F, C]], [0, 1, 1]),  # private-only passes at turns 1 and 3: never correct
    ]
    summary = summarize_searches(records, max_turns=3)
    assert summary["problems"] == 2 and summary["searches"] == 4
    assert summary["accuracy_by_turn"] == [0.25, 0.25, 0.5]
    assert summary["accuracy"] == 0.5  # a0, a1 correct; b0, b1 not
    assert summary["public_pass_rate"] == 0.5
    assert summary["any_of_s_accuracy"] == 0.5
    # by search index: index 0 -> (a yes, b no) 0.5; index 1 -> (a yes, b no) 0.5
    spread = summary["accuracy_spread"]
    assert spread["mean"] == 0.5 and spread["std"] == 0.0 and spread["n"] == 2
    # over problems: a 2/2, b 0/2 -> bootstrap means 0, 0.5 or 1
    assert summary["accuracy_ci95"]["low"] == 0.0 and summary["accuracy_ci95"]["high"] == 1.0
    # turn-1 candidates: problem a 4 samples, 1 correct; problem b 4 samples, none correct (C fails public)
    assert summary["pass_at_k"] == {"1": pytest.approx(0.125), "2": pytest.approx(0.25)}
    assert summary["completion_tokens"] == 10 * (2 + 6 + 6 + 6)
    assert summary["tokens_saved"] == 2 * 2 * 10  # only a0 stopped early
    lone = summarize_searches(records[:1], max_turns=3)
    assert lone["accuracy_spread"]["std"] is None  # one search index: no spread, and valid JSON
    json.dumps(lone, allow_nan=False)


def test_answer_by_turn_keeps_the_first_public_pass():
    record = stored("a", 0, [[(False, False)], [(True, True)]], [0, 0], max_turns=3)
    assert summarize_searches([record], max_turns=3)["accuracy_by_turn"] == [0.0, 1.0, 1.0]
    wrong = stored("a", 0, [[(False, True)], [(True, False)]], [0, 0], max_turns=3)
    assert summarize_searches([wrong], max_turns=3)["accuracy_by_turn"] == [0.0, 0.0, 0.0]


def test_search_command_on_humaneval_ignores_the_mbpp_path(tmp_path, tiny_model_dir, mbpp_dir):
    """--problems-path is the MBPP location; it used to be handed to the HumanEval loader ("not a file")."""
    from mucode.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "search",
            "--model",
            str(tiny_model_dir),
            "--problems",
            "humaneval",
            "--problems-path",
            str(mbpp_dir),
            "--limit",
            "1",
            "--n",
            "1",
            "--turns",
            "1",
            "--temperature",
            "0",
            "--max-new-tokens",
            "4",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert json.loads((out / "run.json").read_text())["problem_ids"][0].startswith("HumanEval/")


def test_search_with_a_list_of_n_runs_one_search_per_n_and_reports_accuracy_against_n(
    tmp_path, tiny_model_dir, problems_file, capsys
):
    from mucode.cli import main

    out = tmp_path / "sweep"
    code = main([
        "search", "--model", str(tiny_model_dir), "--problems", str(problems_file), "--n", "1,2", "--selector", "pt",
        "--turns", "1", "--searches", "2", "--temperature", "1.0", "--max-new-tokens", "4", "--workers", "1", "--seed", "3",
        "--out", str(out),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "report:" in printed
    configs = {name: yaml.safe_load((out / name / "config.yaml").read_text()) for name in ("n1", "n2", "greedy")}
    assert [configs[k]["n"] for k in ("n1", "n2", "greedy")] == [1, 2, 1]
    assert {c["seed"] for c in configs.values()} == {3} and configs["greedy"]["temperature"] == 0.0
    assert len(read_searches(out / "n2")) == 6 and len(read_searches(out / "greedy")) == 3
    report = (out / "report" / "report.md").read_text()
    assert (out / "report" / "accuracy_vs_n.png").is_file() and "accuracy_vs_n.png" in report
    assert "| n1 |" in report and "| n2 |" in report and "| greedy |" in report
    assert main(["search", "--n", "1,x", "--out", str(tmp_path / "bad")]) != 0
    assert "Error: got --n '1,x'" in capsys.readouterr().err


def test_pass_at_k_with_many_single_turn_samples_reports_the_ks_asked_for(tmp_path, tiny_model_dir, problems_file):
    """`mucode search --turns 1 --n K --k ...`: Codex-style pass@k, the unbiased estimator over each
    problem's N x S turn-1 samples; a k above them is refused before anything runs."""
    from mucode.cli import main
    from mucode.metrics import candidate_correct, mean_pass_at_k

    out = tmp_path / "passk"
    code = main([
        "search", "--model", str(tiny_model_dir), "--problems", str(problems_file), "--n", "3", "--selector", "random",
        "--turns", "1", "--searches", "2", "--temperature", "1.0", "--max-new-tokens", "4", "--workers", "1",
        "--k", "1,4,6", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["pass_at_k"]) == ["1", "4", "6"]
    by_problem: dict[str, list[bool]] = {}
    for record in read_searches(out):
        by_problem.setdefault(record["problem_id"], []).extend(
            candidate_correct(c) for c in record["turns"][0]["candidates"]
        )
    samples, correct = [len(v) for v in by_problem.values()], [sum(v) for v in by_problem.values()]
    assert samples == [6] * len(by_problem)
    for k in (1, 4, 6):
        assert summary["pass_at_k"][str(k)] == pytest.approx(mean_pass_at_k(samples, correct, k))
    assert main(["search", "--n", "3", "--k", "1,7", "--out", str(tmp_path / "bad")]) != 0
    assert not (tmp_path / "bad").exists()
