"""A remote verifier: `mucode serve --verifier DIR` on a loopback port scores for `mucode search
--verifier URL` and relabeling exactly as the folder does in-process (RemoteScorer, POST /v1/score
with the conversation state and the reply)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from serving import start_server, stop_server


pytest.importorskip("fastapi")

from mucode.cli import app  # noqa: E402
from mucode.verifier.remote import RemoteScorer, load_scorer  # noqa: E402
from mucode.verifier.scoring import VerifierScorer  # noqa: E402


PROBLEM = [{"role": "user", "content": "Write f(x) that returns x.\nassert f(1) == 1"}]
REPLIES = ["```python\ndef f(x):\n    return x\n```", "```python\ndef f(x):\n    return 0\n```", "no code at all"]


@pytest.fixture(scope="module")
def verifier_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny backbone with a seeded random head, saved as a verifier (its scores differ per input)."""
    from mucode.verifier.model import VerifierSpec, load_backbone

    model, tokenizer = load_backbone(str(tiny_model_dir), seed=3)
    folder = tmp_path_factory.mktemp("verifier") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    VerifierSpec(reply_view="program", context="history", max_length=256).save(folder)
    return folder


@pytest.fixture(scope="module")
def servers(tiny_model_dir, verifier_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("serve")
    model = ["--model", str(tiny_model_dir), "--workers", "1", "--max-new-tokens", "8"]
    with_verifier = start_server([*model, "--verifier", str(verifier_dir)], logs / "verifier.log")
    without = start_server(model, logs / "plain.log")
    yield with_verifier[1], without[1]
    for process, _ in (with_verifier, without):
        stop_server(process)


def test_remote_scores_equal_the_folders_in_process_scores(servers, verifier_dir):
    url, _ = servers
    history = [*PROBLEM, {"role": "assistant", "content": REPLIES[1]}, {"role": "user", "content": "Failed."}]
    prompts = [PROBLEM, PROBLEM, history, "Write f(x)."]
    replies = [REPLIES[0], REPLIES[1], REPLIES[0], REPLIES[2]]
    local = VerifierScorer.load(str(verifier_dir), device="cpu").score(prompts, replies)
    remote = RemoteScorer(url, batch_size=2)  # two requests
    assert remote.score(prompts, replies) == pytest.approx(local, abs=1e-5)
    assert len(set(local)) > 1
    assert isinstance(load_scorer(url), RemoteScorer)


def test_a_server_without_a_verifier_or_none_at_all_is_a_clear_error(servers):
    _, plain = servers
    with pytest.raises(ValueError, match="has no verifier"):
        load_scorer(plain)
    with pytest.raises(ConnectionError, match="no mucode server answers"):
        RemoteScorer("http://127.0.0.1:9").check()


def test_a_search_scores_through_the_remote_verifier_as_through_the_folder(
    servers, verifier_dir, tiny_model_dir, tmp_path
):
    url, plain = servers
    problems = tmp_path / "problems.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"Return {i}.", "public_tests": [f"assert f() == {i}"],
             "private_tests": [f"assert f() + 1 == {i + 1}"]} for i in range(2)]  # fmt: skip
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def search(verifier: str, out: Path):
        args = ["search", "--model", str(tiny_model_dir), "--problems", str(problems), "--n", "2", "--turns", "2",
                "--selector", "pt+lv", "--verifier", verifier, "--max-new-tokens", "8", "--backend", "hf",
                "--out", str(out)]  # fmt: skip
        return CliRunner().invoke(app, args, standalone_mode=False)

    for verifier, out in ((str(verifier_dir), tmp_path / "local"), (url, tmp_path / "remote")):
        result = search(verifier, out)
        assert result.exception is None, result.output
    local, remote = (
        [json.loads(line) for line in (tmp_path / name / "searches.jsonl").read_text().splitlines()]
        for name in ("local", "remote")
    )
    scores = [[[c["score"] for c in t["candidates"]] for t in r["turns"]] for r in local]
    assert all(isinstance(x, float) for rec in scores for turn in rec for x in turn)
    assert [[[c["score"] for c in t["candidates"]] for t in r["turns"]] for r in remote] == [
        [pytest.approx(turn, abs=1e-5) for turn in rec] for rec in scores
    ]
    failed = search(plain, tmp_path / "refused")
    assert failed.exception is not None and "has no verifier" in str(failed.exception)
    assert not (tmp_path / "refused" / "searches.jsonl").exists()  # refused before anything ran
