"""`mucode run`: presets, config checks, stage skipping, and the smoke preset end to end with a
kill and resume (real tiny model, real sandbox, real training)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mucode.pipeline import PRESETS, Pipeline, PipelineConfig, pipeline_config, run_pipeline, subsample_jsonl


def test_every_preset_loads_and_names_its_own_settings():
    for name in PRESETS:
        config = pipeline_config(name)
        assert isinstance(config, PipelineConfig)
    demo = pipeline_config("demo", overrides={"out": "x"})
    assert (demo.model, demo.iterations, demo.verifier_preset) == ("smollm2-135m", 1, "cpu-head")
    paper = pipeline_config("paper")
    assert (paper.rollouts, paper.turns, paper.temperature, paper.iterations, paper.eval_n) == (15, 3, 0.7, 2, 5)
    # the reference code's settings (docs/pipeline.md's table) and the paper's lengths
    assert (paper.union, paper.preamble, paper.feedback, paper.unsolved, paper.dedupe, paper.timeout_s) == (
        "paper",
        "reference",
        "reference",
        "keep",
        False,
        10.0,
    )
    assert paper.generator["max_length"] == 8192 and paper.verifier["max_length"] == 2048
    stages = Pipeline(pipeline_config("paper", overrides={"out": "runs/p"}))
    rollout, search = stages.rollout_config("m", Path("r")), stages.search_config("m", "humaneval", {}, Path("s"))
    verifier = stages.verifier_config("mucode", 0, Path("v"))
    assert (rollout.timeout_s, rollout.timeout_scope, search.timeout_s, search.timeout_scope) == (
        10.0,
        "suite",
        10.0,
        "suite",
    )
    assert (verifier.max_length, verifier.pairs_with_replacement) == (2048, True)
    assert pipeline_config().timeout_scope == "test"
    default = pipeline_config()
    assert (default.union, default.preamble, default.feedback) == ("paper", "problem", "rich")
    assert pipeline_config(overrides={"union": "relabel-all"}).union == "relabel-all"
    with pytest.raises(ValueError, match="union"):
        pipeline_config(overrides={"union": "all"})


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        pipeline_config("fast")
    with pytest.raises(ValueError, match="method"):
        pipeline_config(overrides={"method": "dpo"})
    with pytest.raises(ValueError, match="did you mean 'rollouts'"):
        pipeline_config(overrides={"rolouts": 3})
    with pytest.raises(ValueError, match="eval_problems is empty"):
        pipeline_config(overrides={"eval_problems": []})


def test_subsample_is_seeded_and_keeps_order(tmp_path):
    source = tmp_path / "all.jsonl"
    source.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(50)))
    kept = subsample_jsonl(source, tmp_path / "a.jsonl", 10, seed=3)
    subsample_jsonl(source, tmp_path / "b.jsonl", 10, seed=3)
    rows = [json.loads(line)["i"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert kept == 10 and rows == sorted(rows) and len(set(rows)) == 10
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert subsample_jsonl(source, tmp_path / "c.jsonl", None, seed=3) == 50


def _wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended early:\n{process.stdout.read() if process.stdout else ''}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


def test_smoke_preset_end_to_end_resumes_after_kill_and_skips_finished_stages(tmp_path, mbpp_dir):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "mucode",
        "run",
        "--preset",
        "smoke",
        "--problems-path",
        str(mbpp_dir),
        "--out",
        str(out),
        "--quiet",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        _wait_for(out / "iter0/rollouts/.done.json", process, timeout=240)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "eval").exists()

    config = pipeline_config("smoke", overrides={"out": str(out), "problems_path": str(mbpp_dir)})
    result = run_pipeline(config, say=lambda message: None, progress=False)
    assert result.stages["iter0/rollouts"]["skipped"] and not result.stages["iter1/rollouts"]["skipped"]
    expected = {
        "models/tiny-random",
        "iter0/rollouts",
        "iter0/verifier",
        "iter1/sft",
        "iter1/generator",
        "iter1/rollouts",
        "iter1/verifier",
    }
    assert expected <= set(result.stages)
    assert list(result.stages) == Pipeline(config).plan()  # one method: today's folders, as `--check` lists them
    evals = sorted(name for name in result.stages if name.startswith("eval/"))
    assert evals == [
        "eval/mbpp-test.base.bon2-pt+lv",
        "eval/mbpp-test.base.greedy",
        "eval/mbpp-test.mucode.bon2-pt+lv",
        "eval/mbpp-test.mucode.greedy",
    ]
    for name in result.stages:
        assert (out / name / ".done.json").is_file(), name
    assert json.loads((out / "iter0/verifier/.done.json").read_text())["finished_on"]["cores"] >= 1

    records = [json.loads(line) for line in (out / "iter0/rollouts/trajectories.jsonl").read_text().splitlines()]
    assert len({(r["problem_id"], r["rollout"]) for r in records}) == len(records) == 6  # 3 problems x 2 rollouts
    assert Path(result.stages["iter1/generator"]["model"]).joinpath("config.json").is_file()
    assert result.report is not None and "Protocol" in result.report.read_text()
    assert [row["run"] for row in result.table] == [
        Path(e).name
        for e in [
            "mbpp-test.base.greedy",
            "mbpp-test.base.bon2-pt+lv",
            "mbpp-test.mucode.greedy",
            "mbpp-test.mucode.bon2-pt+lv",
        ]
    ]
    saved = json.loads((out / "run.json").read_text())
    assert saved["seed"] == 0 and "torch" in saved["package_versions"]
    assert json.loads((out / "stages.json").read_text()).keys() == result.stages.keys()

    again = run_pipeline(config, say=lambda message: None, progress=False)
    assert all(stage["skipped"] for stage in again.stages.values())
    assert again.table == result.table

    with pytest.raises(ValueError, match="different config .*rollouts"):
        run_pipeline(
            pipeline_config("smoke", overrides={"out": str(out), "problems_path": str(mbpp_dir), "rollouts": 3}),
            say=lambda m: None,
            progress=False,
        )


def _trajectory(problem_id: str, rollout: int, correct: bool, model: str = "smollm2-135m") -> dict:
    turn = {
        "reply": "```python\ndef f(): pass\n```",
        "program": "def f(): pass",
        "public": {"passed": correct},
        "correct": correct,
    }
    return {
        "problem_id": problem_id,
        "rollout": rollout,
        "model": model,
        "max_turns": 3,
        "turns": [turn],
        "n_turns": 1,
        "correct": correct,
        "solved_public": correct,
        "completion_tokens": 7,
    }


def _reference_rollouts(folder: Path, mbpp_dir: Path, limit: int, seed: int) -> list[str]:
    """A real iteration-0 rollout folder of MBPP train problems (the pipeline's seeded subset):
    rollout 0 answers with the reference solution (a correct program), rollout 1 with a wrong one.
    Run through real episodes and the real sandbox; returns the reference replies."""
    from mucode.episode import run_episodes
    from mucode.execution import Executor
    from mucode.store import load_selected_problems

    _, problems = load_selected_problems("mbpp:train", str(mbpp_dir), limit, seed)
    references = {p.id: f"```python\n{p.reference_solution}\n```" for p in problems}
    wrong = "```python\ndef nothing():\n    return None\n```"
    records = []
    with Executor(workers=1) as executor:
        for rollout, reply in ((0, None), (1, wrong)):
            replies = [reply or references[p.id] for p in problems]
            episodes = run_episodes(problems, _replying(problems, replies), executor, max_turns=2)
            for episode in episodes:
                record = episode.to_dict()
                record.update(rollout=rollout, model="tiny-random", n_turns=len(episode.turns), infra_error=False,
                              prompt_tokens=0, completion_tokens=0, generate_s=0.0)  # fmt: skip
                records.append(record)
    folder.mkdir(parents=True)
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert any(r["correct"] for r in records) and not all(r["correct"] for r in records)
    return list(references.values())


def _replying(problems, replies):
    """generate(chats) for run_episodes: each problem's chat (known by its first user message)
    gets its fixed reply, at every turn."""
    from mucode.prompts import initial_messages

    reply_of = {initial_messages(p)[-1]["content"]: r for p, r in zip(problems, replies)}
    return lambda chats: [reply_of[next(m["content"] for m in chat if m["role"] == "user")] for chat in chats]


def test_the_pipeline_data_flows_as_the_method_says(tmp_path, mbpp_dir):
    """Two methods from one iteration 0 in one run folder: iterI/<method>/sft relabeled by
    iter{I-1}'s verifier of that method (paper union: earlier parts kept as they were), verifier I
    trained from the base model on rollouts 0..I, each SFT from the base model with the same budget,
    a correct program imitated, the base evaluated once and each generator with its own verifier."""
    import yaml

    out = tmp_path / "run"
    references = _reference_rollouts(tmp_path / "iter0-source", mbpp_dir, limit=3, seed=0)
    config = pipeline_config("smoke", overrides={
        "out": str(out), "problems_path": str(mbpp_dir), "iter0_rollouts": str(tmp_path / "iter0-source"), "iterations": 2,
        "last_rollouts": False, "eval_selectors": [], "eval_limit": 1, "methods": ["star", "mucode"],
        "eval_extra_selectors": {"mucode": ["pt"]}, "rollout": {"backend": "hf", "seeding": "episode"},
        "search": {"backend": "hf"},
    })  # fmt: skip
    result = run_pipeline(config, say=lambda message: None, progress=False)
    assert list(result.stages) == Pipeline(config).plan()
    base = result.stages["models/tiny-random"]["path"]
    for method in ("star", "mucode"):

        def folder(i: int, kind: str, method=method) -> Path:
            return out / (f"iter{i}/{kind}" if i == 0 else f"iter{i}/{method}/{kind}")

        for i in (1, 2):
            sft = json.loads((folder(i, "sft") / ".done.json").read_text())
            relabeled_by = str(folder(i - 1, "verifier")) if method == "mucode" else None  # star: no verifier
            assert (sft["method"], sft["union"], sft["relabeled_by"]) == (method, "paper", relabeled_by)
            assert sft["rollouts"] == [str(folder(i - 1, "rollouts"))] and sft["max_sft_examples"] is None
            assert sft["parts"] == [str(folder(j, "sft") / "part.jsonl") for j in range(1, i + 1)]
            generator = yaml.safe_load((folder(i, "generator") / "config.yaml").read_text())
            assert generator["model"] == base and generator["data"] == [str(folder(i, "sft") / "sft.jsonl")]
            assert generator["max_steps"] == 2  # the same SFT budget for every method
        for i in (0, 1):
            verifier = yaml.safe_load((folder(i, "verifier") / "config.yaml").read_text())
            assert verifier["model"] == base
            assert verifier["trajectories"] == [str(folder(j, "rollouts")) for j in range(i + 1)]
        # D0 (relabeled by V0) stays in iteration 2's data exactly as iteration 1 wrote it
        part1 = (folder(1, "sft") / "part.jsonl").read_text()
        assert (folder(2, "sft") / "all.jsonl").read_text() == part1 + (folder(2, "sft") / "part.jsonl").read_text()
        assert (folder(1, "sft") / "all.jsonl").read_text() == part1
        own = [e for e in map(json.loads, part1.splitlines()) if e["source"] == "own"]
        assert own and {e["completion"][0]["content"] for e in own} <= set(references)
        search = yaml.safe_load((out / f"eval/mbpp-test.{method}.greedy/config.yaml").read_text())
        final = result.stages[f"iter2/{method}/generator"]["model"]
        assert (search["model"], search["backend"]) == (final, "hf")
        rollout = yaml.safe_load((folder(1, "rollouts") / "config.yaml").read_text())  # the sections reach the stages
        generator1 = result.stages[f"iter1/{method}/generator"]["model"]
        assert (rollout["backend"], rollout["seeding"], rollout["model"]) == ("hf", "episode", generator1)
    assert not (out / "iter1/sft").exists() and not (out / "iter1/rollouts").exists()
    evals = sorted(name for name in result.stages if name.startswith("eval/"))
    assert evals == ["eval/mbpp-test.base.greedy", "eval/mbpp-test.mucode.bon2-pt", "eval/mbpp-test.mucode.greedy",
                     "eval/mbpp-test.star.greedy"]  # fmt: skip
    bon = yaml.safe_load((out / "eval/mbpp-test.mucode.bon2-pt/config.yaml").read_text())
    assert bon["verifier"] == str(out / "iter1/mucode/verifier")
    report = result.report.read_text()
    assert "## SFT budget per method" in report and "| star | 2 |" in report and "| mucode | 1 |" in report


def test_iter0_rollouts_are_copied_complete_lines_only_and_must_come_from_the_base_model(tmp_path):
    source = tmp_path / "rollouts"
    source.mkdir()
    compact = {"separators": (",", ":")}  # not json.dumps's default layout: the copy must keep the bytes
    lines = [
        json.dumps(_trajectory("mbpp/1", 0, True), **compact),
        json.dumps(_trajectory("mbpp/1", 1, False), **compact),
    ]
    writing = json.dumps(_trajectory("mbpp/2", 0, False))[:25]  # a line another process is still writing
    (source / "trajectories.jsonl").write_text("\n".join(lines) + "\n" + writing)
    (source / "config.yaml").write_text("model: smollm2-135m\n")
    pipeline = Pipeline(PipelineConfig(out=str(tmp_path / "run"), iter0_rollouts=str(source)), say=lambda m: None)
    folder = tmp_path / "run/iter0/rollouts"
    folder.mkdir(parents=True)

    info = pipeline.import_rollouts(folder)

    assert (folder / "trajectories.jsonl").read_text() == "\n".join(lines) + "\n"
    assert (source / "trajectories.jsonl").read_text().endswith(writing)  # the source is left alone
    assert info["trajectories"] == 2 and info["correct"] == 0.5 and info["source"] == str(source.resolve())
    assert (folder / "source-config.yaml").is_file() and json.loads((folder / "summary.json").read_text())[
        "problems"
    ] == 1

    other = Pipeline(
        PipelineConfig(out=str(tmp_path / "run2"), iter0_rollouts=str(source), model="qwen2.5-coder-0.5b"),
        say=lambda m: None,
    )
    with pytest.raises(ValueError, match="not of the base generator 'qwen2.5-coder-0.5b'"):
        other.import_rollouts(tmp_path / "run2")
    # a rollout folder that says what it will hold (run.json, config.yaml) is refused until it holds it all
    (source / "run.json").write_text(json.dumps({"problem_ids": ["mbpp/1", "mbpp/2"]}))
    (source / "config.yaml").write_text("model: smollm2-135m\nrollouts: 2\n")
    with pytest.raises(ValueError, match="holds 2 of its 4 trajectories; let its `mucode rollout` finish"):
        pipeline.import_rollouts(tmp_path / "run")
    missing = Pipeline(
        PipelineConfig(out=str(tmp_path / "run3"), iter0_rollouts=str(tmp_path / "nowhere")), say=lambda m: None
    )
    with pytest.raises(FileNotFoundError, match="written by `mucode rollout`"):
        missing.import_rollouts(tmp_path / "run3")


def test_run_command_passes_no_eval_base_to_the_config(tmp_path, capsys):
    from mucode.cli import main
    from mucode.config import save_config

    out = tmp_path / "run"
    out.mkdir()
    save_config(pipeline_config("smoke", overrides={"out": str(out)}), out / "config.yaml")  # eval_base: true
    code = main(["run", "--preset", "smoke", "--no-eval-base", "--out", str(out), "--quiet"])
    assert code != 0 and "eval_base differ" in capsys.readouterr().err


def test_rollout_and_search_sections_reach_the_stage_configs(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "rollout: {backend: hf, seeding: episode, workers: 2}\nsearch: {backend: openvino, dtype: bfloat16}\n"
    )
    pipeline = Pipeline(pipeline_config("smoke", path, {"out": str(tmp_path / "run")}), say=lambda m: None)
    rollout = pipeline.rollout_config("some-model", tmp_path / "r")
    got = (rollout.backend, rollout.seeding, rollout.workers, rollout.dtype, rollout.max_new_tokens)
    assert got == ("hf", "episode", 2, None, 16)
    search = pipeline.search_config("some-model", "humaneval", pipeline.search_modes("v", [])[0][1], tmp_path / "s")
    assert (search.backend, search.dtype, search.temperature, search.n) == ("openvino", "bfloat16", 0.0, 1)
    plain = Pipeline(pipeline_config("smoke"), say=lambda m: None).rollout_config("some-model", tmp_path / "r")
    assert (plain.backend, plain.seeding) == ("auto", "step")  # the defaults when no section is given


def test_a_head_verifier_caches_features_where_the_config_says_else_in_the_run_folder(tmp_path):
    """The pipeline used to replace a `feature_cache` given in the run config by its own folder."""
    path = tmp_path / "run.yaml"
    path.write_text(f"verifier: {{finetune: head, feature_cache: {tmp_path / 'features'}}}\n")
    out = tmp_path / "run"
    given = Pipeline(pipeline_config("smoke", path, {"out": str(out)}), say=lambda m: None)
    assert given.verifier_config("mucode", 0, out / "v").feature_cache == str(tmp_path / "features")
    path.write_text("verifier: {finetune: head}\n")
    default = Pipeline(pipeline_config("smoke", path, {"out": str(out)}), say=lambda m: None)
    assert default.verifier_config("mucode", 0, out / "v").feature_cache == str(out / "verifier-features")


@pytest.mark.parametrize(("section", "error"), [
    ("rollout: {backnd: hf}", "rollout: unknown key 'backnd'; did you mean 'backend'?"),
    ("search: {n: 3}", "search: 'n' is set by the pipeline: the top-level 'eval_n'"),
    ("rollout: {backend: tpu}", "rollout: backend: got 'tpu'; choose one of auto, hf, openvino, openai, vllm"),
    ("search: openvino", "search: expected a mapping of SearchConfig fields"),
    ("search: {workers: two}", "search: workers: expected int"),
])  # fmt: skip
def test_bad_section_keys_fail_before_any_model_loads_naming_file_and_key(tmp_path, section, error):
    from mucode.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(f"model: no-such-model-anywhere\n{section}\n")
    with pytest.raises(ValueError) as caught:
        Pipeline(pipeline_config("smoke", path, {"out": str(tmp_path / "run")}), say=lambda m: None).preflight()
    assert error in str(caught.value) and "\n" not in str(caught.value)
    if "workers" not in section:  # loading the file already fails, naming it
        assert str(caught.value).startswith(f"{path}: ")
    assert not (tmp_path / "run").exists()
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run"), "--check"]) != 0


def test_a_config_yaml_from_before_the_sections_still_resumes(tmp_path, mbpp_dir, capsys):
    """A run folder whose config.yaml was written before `methods`, `rollout`, `search` and
    `eval_extra_selectors` existed resumes; throughput-only section keys do not block it."""
    import yaml

    from mucode.cli import main
    from mucode.config import config_to_dict

    out = tmp_path / "run"
    out.mkdir()
    old = config_to_dict(pipeline_config("smoke", overrides={"out": str(out), "problems_path": str(mbpp_dir)}))
    for key in ("methods", "rollout", "search", "eval_extra_selectors"):
        del old[key]
    (out / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    (out / "iter0/rollouts").mkdir(parents=True)
    (out / "iter0/rollouts/.done.json").write_text("{}")
    check = ["run", "--preset", "smoke", "--problems-path", str(mbpp_dir), "--out", str(out), "--check"]
    for flags in ([], ["--method", "mucode"], ["--backend", "hf"], ["--base-url", "http://127.0.0.1:1/v1"]):
        assert main(check + flags) == 0, capsys.readouterr().err
    listed = capsys.readouterr().out
    assert "  [done] iter0/rollouts\n  iter0/verifier\n  iter1/sft\n" in listed and "  report\n" in listed
    assert main(check + ["--method", "star"]) != 0 and "methods differ" in capsys.readouterr().err
    seeded = tmp_path / "seeded.yaml"
    seeded.write_text("rollout: {seeding: episode}\n")
    assert main(check + ["--config", str(seeded)]) != 0 and "rollout differ" in capsys.readouterr().err
    fresh = ["--out", str(tmp_path / "fresh"), "--check", "--method", "star", "--method", "mucode"]
    several = main(check[:-3] + fresh)
    assert several == 0 and "  iter1/star/sft\n" in capsys.readouterr().out and not (tmp_path / "fresh").exists()


def test_the_replication_runs_whole_table_rows_first(tmp_path):
    """examples/replication.yaml: every greedy row first, then Best-of-N pt+lv of base, then of µCode
    (both sets each), then the other methods, the extra selectors last; the report keeps its order."""
    config = pipeline_config(
        path=Path(__file__).parent.parent / "examples/replication.yaml", overrides={"out": str(tmp_path / "rep")}
    )
    evals = [name.removeprefix("eval/") for name in Pipeline(config).plan() if name.startswith("eval/")]
    generators = ["base", "mucode", "multi-star", "star"]
    greedy = [f"{s}.{g}.greedy" for s in ("mbpp-test", "humaneval") for g in generators]
    bon = [f"{s}.{g}.bon5-pt+lv" for g in generators for s in ("mbpp-test", "humaneval")]
    extra = [f"{s}.mucode.bon5-{x}" for s in ("mbpp-test", "humaneval") for x in ("pt", "lv", "random")]
    assert evals == greedy + bon + extra
