"""`mucode solve`: one problem from the command line, searched with the real tiny model in the real
sandbox; the turns are streamed to stderr, the final program goes to stdout, the exit code is the
public verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mucode.cli import main
from mucode.prompts import initial_messages


STATEMENT = "Write f(x) that returns x."
IDENTITY = "def f(x):\n    return x"


@pytest.fixture
def tests_file(tmp_path) -> Path:
    path = tmp_path / "tests.py"
    path.write_text("assert f(1) == 1\nassert f(5) == 5\n")
    return path


@pytest.fixture(scope="module")
def identity_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model trained to answer the first message of STATEMENT + tests with IDENTITY."""
    from test_search import train_to_reply

    from mucode.cli.search import _cli_problem

    folder = tmp_path_factory.mktemp("solve-tests")
    tests = folder / "tests.py"
    tests.write_text("assert f(1) == 1\nassert f(5) == 5\n")
    problem = _cli_problem(STATEMENT, tests, None)
    return train_to_reply(
        tiny_model_dir, tmp_path_factory.mktemp("solve-identity"), IDENTITY, [initial_messages(problem)]
    )


def test_an_unsolved_problem_streams_every_turn_and_exits_1(tiny_model_dir, tests_file, capsys):
    code = main(
        [
            "solve",
            STATEMENT,
            "--tests",
            str(tests_file),
            "--model",
            str(tiny_model_dir),
            "--turns",
            "2",
            "--max-new-tokens",
            "8",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "--- turn 1/2: kept candidate 1 of 1 (pt); 0/2 public tests passed" in captured.err
    assert "--- turn 2/2" in captured.err and "--- turn 3" not in captured.err
    assert "Feedback:" in captured.err and "not solved" in captured.err
    assert captured.out == ""  # no program on stdout when none passes the public tests
    assert "correctness is not known" in captured.err  # no hidden tests: never called correct


def test_print_unsolved_prints_the_last_kept_program(tiny_model_dir, tests_file, tmp_path, capsys):
    code = main(
        [
            "solve",
            STATEMENT,
            "--tests",
            str(tests_file),
            "--model",
            str(tiny_model_dir),
            "--turns",
            "1",
            "--max-new-tokens",
            "8",
            "--print-unsolved",
            "--out",
            str(tmp_path / "unsolved"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and captured.out == (tmp_path / "unsolved" / "solution.py").read_text() + "\n"


def test_solve_out_saves_problem_search_and_solution_that_report_reads(
    identity_model_dir, tests_file, tmp_path, capsys
):
    out = tmp_path / "solved"
    code = main(
        [
            "solve",
            STATEMENT,
            "--tests",
            str(tests_file),
            "--model",
            str(identity_model_dir),
            "--turns",
            "3",
            "--max-new-tokens",
            "16",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and f"saved to {out}" in capsys.readouterr().err
    assert (out / "solution.py").read_text() == IDENTITY
    record = json.loads((out / "searches.jsonl").read_text())
    assert record["solved_public"] and record["turns"][0]["candidates"][0]["program"] == IDENTITY
    assert json.loads((out / "problem.jsonl").read_text())["prompt"] == STATEMENT
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0


def test_a_passing_program_stops_the_search_goes_to_stdout_and_exits_0(identity_model_dir, tests_file, capsys):
    code = main(
        [
            "solve",
            STATEMENT,
            "--tests",
            str(tests_file),
            "--model",
            str(identity_model_dir),
            "--turns",
            "3",
            "--max-new-tokens",
            "16",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == IDENTITY + "\n"
    assert (
        "--- turn 1/3" in captured.err
        and "2/2 public tests passed" in captured.err
        and "--- turn 2" not in captured.err
    )
    assert "passes the public tests (turn 1 of 3)" in captured.err


def test_a_problem_file_with_private_tests_reports_them(tiny_model_dir, tmp_path, capsys):
    problem = {
        "id": "add",
        "prompt": "Write add(a, b).",
        "public_tests": ["assert add(1, 2) == 3"],
        "private_tests": ["assert add(0, 0) == 0"],
    }
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(problem, indent=2))  # pretty JSON, not one line
    code = main(
        [
            "solve",
            "--problem",
            str(path),
            "--model",
            str(tiny_model_dir),
            "--turns",
            "1",
            "--n",
            "2",
            "--max-new-tokens",
            "8",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and "kept candidate" in captured.err and "of 2 (pt)" in captured.err
    assert "hidden tests: fail: not correct" in captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give either a problem STATEMENT"),
        ([STATEMENT], "needs --tests FILE"),
        (["--n", "3", "--temperature", "0", STATEMENT, "--tests", "TESTS"], "greedy decoding gives one program"),
        (["--selector", "lv", STATEMENT, "--tests", "TESTS"], "pass --verifier"),
        (["--problem", "TWO"], "holds 2 problems"),
        (["--problem", "BAD"], "field 'prompt'"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message, tests_file, tmp_path, capsys):
    two = tmp_path / "two.jsonl"
    row = {"id": 1, "prompt": "p", "public_tests": ["assert True"], "private_tests": []}
    two.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": 2}) + "\n")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": 1, "prompt": 3, "public_tests": ["assert True"]}))
    paths = {"TESTS": str(tests_file), "TWO": str(two), "BAD": str(bad)}
    code = main(["solve", *[paths.get(a, a) for a in args]])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err


def test_preamble_and_feedback_reach_the_search(tiny_model_dir, tests_file, tmp_path, capsys):
    import yaml

    out = tmp_path / "reference"
    args = ["solve", STATEMENT, "--tests", str(tests_file), "--model", str(tiny_model_dir), "--turns", "2",
            "--max-new-tokens", "8"]  # fmt: skip
    assert main([*args, "--preamble", "none", "--feedback", "reference", "--out", str(out)]) == 1
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["preamble"], saved["feedback"]) == ("none", "reference")
    [record] = [json.loads(line) for line in (out / "searches.jsonl").read_text().splitlines()]
    assert record["turns"][0]["feedback"].startswith("Feedback: ")  # the reference code's wording, on one line
    assert main([*args, "--out", str(tmp_path / "rich")]) == 1
    rich = json.loads((tmp_path / "rich" / "searches.jsonl").read_text())
    assert rich["turns"][0]["feedback"].startswith("Feedback:\n")
