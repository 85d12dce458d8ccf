"""mucode.problems and `mucode problems`: real MBPP/HumanEval data, JSONL schema, hf: datasets.
No network: the hub is replaced by local files through `datasets.load_dataset` itself."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mucode.cli.problems import problems as problems_cli
from mucode.problems import (
    ProblemDataError,
    ProblemSourceUnavailable,
    load_humaneval,
    load_jsonl,
    load_mbpp,
    load_mbpp_sanitized,
    load_problems,
    parse_spec,
    write_jsonl,
)
from mucode.problems.docstring_examples import docstring_examples
from mucode.problems.registry import Spec
from mucode.types import AssertTest, IOTest, Problem


MBPP_SHA256 = "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f"  # SOURCE.md
SANITIZED_SHA256 = "ca95deaa9a01ef0a6f439f88bcf0dd3db3563d22f22aad6cae04ebb9a8d8c8e9"


@pytest.fixture(scope="module")
def mbpp(mbpp_dir: Path):
    return load_mbpp(path=mbpp_dir)


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


@pytest.fixture(autouse=True)
def _no_mbpp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUCODE_MBPP_PATH", raising=False)


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`datasets.load_dataset` that never touches the network: hub ids fail like an offline
    machine; local files and folders still load (into a temporary cache)."""
    import datasets

    real = datasets.load_dataset
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")

    def load_dataset(path, *args, **kwargs):
        if path in ("json",) or Path(path).exists():
            kwargs.setdefault("cache_dir", str(tmp_path / "hf-cache"))
            return real(path, *args, **kwargs)
        raise ConnectionError(f"Couldn't reach {path!r} on the Hub (offline)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return load_dataset


def _tests(problem: Problem, which: str) -> list[str]:
    return [t.code for t in getattr(problem, which)]


# --- MBPP ------------------------------------------------------------------------------------


def test_mbpp_splits_have_the_paper_sizes(mbpp) -> None:
    assert len(mbpp) == 974
    assert mbpp.count_by_split() == {"train": 374, "test": 500, "validation": 90, "prompt": 10}
    assert mbpp.skipped == ()
    assert mbpp.sha256 == MBPP_SHA256
    for split, size in {"train": 374, "test": 500, "validation": 90, "prompt": 10}.items():
        assert len(mbpp.select(split)) == size
        assert all(mbpp.split_of[p.id] == split for p in mbpp.select(split))
    assert {p.metadata["task_id"] for p in mbpp.select("train")} == set(range(601, 975))


def test_mbpp_train_problem_has_all_tests_public_and_private(mbpp) -> None:
    problem = mbpp.get("mbpp/601")
    assert len(problem.public_tests) == 3
    assert problem.private_tests == problem.public_tests  # no challenge tests for 601
    assert problem.entry_point == "max_chain_length"
    assert problem.metadata == {"task_id": 601, "split": "train", "n_challenge_tests": 0}


@pytest.mark.parametrize("task_id", [1, 11, 511])  # prompt, test, validation
def test_mbpp_eval_problem_has_first_test_public_rest_private(mbpp, task_id: int) -> None:
    problem = mbpp.get(f"mbpp/{task_id}")
    assert len(problem.public_tests) == 1
    assert problem.public_tests[0] not in problem.private_tests
    assert len(problem.private_tests) == 2 + problem.metadata["n_challenge_tests"]


def test_mbpp_challenge_tests_are_separate_private_tests(mbpp) -> None:
    problem = mbpp.get("mbpp/11")
    assert _tests(problem, "public_tests") == ['assert remove_Occ("hello","l") == "heo"']
    assert _tests(problem, "private_tests") == [
        'assert remove_Occ("abcda","a") == "bcd"',
        'assert remove_Occ("PHP","P") == "H"',
        'assert remove_Occ("hellolloll","l") == "helollol"',  # challenge test 1
        'assert remove_Occ("","l") == ""',  # challenge test 2
    ]
    assert all(isinstance(t, AssertTest) for t in problem.private_tests)
    with_challenge = [p for p in mbpp if p.metadata["n_challenge_tests"]]
    assert len(with_challenge) == 11
    assert sum(p.metadata["n_challenge_tests"] for p in mbpp) == sum(len(p.private_tests) - 2 for p in with_challenge)


def test_mbpp_setup_code_reference_and_entry_point(mbpp) -> None:
    problem = mbpp.get("mbpp/367")
    assert problem.setup_code.startswith("root = Node(1)")
    assert "\r" not in problem.setup_code
    assert all("\r" not in p.reference_solution for p in mbpp)
    assert mbpp.get("mbpp/912").entry_point == "lobb_num"  # first call is the builtin int()
    assert mbpp.get("mbpp/126").entry_point == "sum"  # the task's function shadows a builtin
    assert mbpp.get("mbpp/2").prompt == "Write a function to find the similar elements from the given two tuple lists."


def test_mbpp_sanitized(mbpp_dir: Path) -> None:
    sanitized = load_mbpp_sanitized(path=mbpp_dir)
    assert len(sanitized) == 427
    assert sanitized.count_by_split() == {"train": 120, "test": 257, "validation": 43, "prompt": 7}
    assert sanitized.sha256 == SANITIZED_SHA256 and sanitized.skipped == ()
    problem = sanitized.get("mbpp-sanitized/82")
    assert problem.setup_code == "import math"  # test_imports
    assert problem.source == "mbpp-sanitized" and len(problem.public_tests) == 1
    assert all(len(p.public_tests) == len(p.private_tests) for p in sanitized.select("train"))


def test_mbpp_path_may_be_the_file_or_the_env_var(mbpp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(load_mbpp("prompt", path=mbpp_dir / "mbpp.jsonl")) == 10
    monkeypatch.setenv("MUCODE_MBPP_PATH", str(mbpp_dir))
    assert len(load_problems("mbpp:validation")) == 90
    assert len(load_problems("mbpp-sanitized:prompt")) == 7


def test_mbpp_env_var_pointing_nowhere_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUCODE_MBPP_PATH", str(tmp_path / "missing"))
    with pytest.raises(ProblemSourceUnavailable, match="MUCODE_MBPP_PATH"):
        load_mbpp()


def test_mbpp_none_reachable_names_all_three_ways(offline_hub) -> None:
    with pytest.raises(ProblemSourceUnavailable) as caught:
        load_problems("mbpp:test")
    message = str(caught.value)
    assert "(1) pass a path to mbpp.jsonl" in message
    assert "(2) set the environment variable MUCODE_MBPP_PATH" in message
    assert "(3) let datasets.load_dataset('google-research-datasets/mbpp', 'full')" in message
    assert "offline" in message  # the hub's own error is kept


def test_mbpp_from_the_hub_code_path(mbpp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub branch, fed by a local copy: datasets.load_dataset(HUB_ID, "full") -> DatasetDict."""
    import datasets

    rows = [json.loads(line) for line in (mbpp_dir / "mbpp.jsonl").read_text().splitlines()]
    features = datasets.Features(
        {  # the hub dataset's schema
            "task_id": datasets.Value("int32"),
            "text": datasets.Value("string"),
            "code": datasets.Value("string"),
            "test_list": datasets.Sequence(datasets.Value("string")),
            "test_setup_code": datasets.Value("string"),
            "challenge_test_list": datasets.Sequence(datasets.Value("string")),
        }
    )
    ranges = {"train": (601, 974), "test": (11, 510), "validation": (511, 600), "prompt": (1, 10)}
    hub_copy = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list([r for r in rows if low <= r["task_id"] <= high], features=features)
            for split, (low, high) in ranges.items()
        }
    )

    def hub(path, name=None, **kwargs):
        assert (path, name) == ("google-research-datasets/mbpp", "full")
        return hub_copy

    monkeypatch.setattr(datasets, "load_dataset", hub)
    from_hub = load_problems("mbpp")
    assert from_hub.origin == "hf:google-research-datasets/mbpp:full"
    assert from_hub.count_by_split() == {"train": 374, "test": 500, "validation": 90, "prompt": 10}
    assert from_hub.get("mbpp/11") == load_mbpp(path=mbpp_dir).get("mbpp/11")


def _write_mbpp_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _mbpp_row(task_id: int, tests: list[str]) -> dict:
    return {
        "task_id": task_id,
        "text": "Add.",
        "code": "def add(a, b):\r\n    return a + b",
        "test_list": tests,
        "test_setup_code": "",
        "challenge_test_list": [],
    }


def test_mbpp_row_with_unparseable_test_is_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = _write_mbpp_rows(
        tmp_path / "mbpp.jsonl",
        [
            _mbpp_row(11, ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]),
            _mbpp_row(12, ["assert add(1, 2 == 3", "assert add(2, 2) == 4"]),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="mucode.problems"):
        problem_set = load_mbpp(path=file)
    assert [p.id for p in problem_set] == ["mbpp/11"]
    assert [(s.id, s.split) for s in problem_set.skipped] == [("mbpp/12", "test")]
    assert "test_list[0] is not valid Python" in problem_set.skipped[0].reason
    assert "skipping problem mbpp/12" in caplog.text
    assert problem_set.get("mbpp/11").reference_solution == "def add(a, b):\n    return a + b"


def test_mbpp_row_missing_a_column_names_file_line_and_field(tmp_path: Path) -> None:
    row = _mbpp_row(11, ["assert add(1, 2) == 3"])
    del row["test_list"]
    file = _write_mbpp_rows(tmp_path / "mbpp.jsonl", [_mbpp_row(12, ["assert add(1, 2) == 3"]), row])
    with pytest.raises(ProblemDataError, match=r"mbpp.jsonl, line 2, field 'test_list': .*missing"):
        load_mbpp(path=file)


# --- HumanEval -------------------------------------------------------------------------------


def test_humaneval_has_164_problems_with_one_public_and_one_private_test(humaneval) -> None:
    assert len(humaneval) == 164 and humaneval.skipped == ()
    assert humaneval.count_by_split() == {"test": 164}
    for problem in humaneval:
        assert len(problem.public_tests) == 1 and len(problem.private_tests) == 1
        assert problem.private_tests[0].code.rstrip().endswith(f"check({problem.entry_point})")
        assert problem.public_tests[0].code.count(problem.entry_point) >= 1
        assert problem.reference_solution.startswith(problem.prompt)


def test_humaneval_public_test_origins(humaneval) -> None:
    origins = Counter(p.metadata["public_test_origin"] for p in humaneval)
    assert origins == {
        "docstring:doctest": 68,
        "docstring:call": 72,
        "docstring:input-output": 7,
        "docstring:for-output": 6,
        "check": 11,
    }
    from_docstring = sum(n for origin, n in origins.items() if origin.startswith("docstring:"))
    assert from_docstring == 153


@pytest.mark.parametrize(
    ("task_id", "public_test"),
    [
        ("HumanEval/0", "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False"),  # doctest
        ("HumanEval/51", "assert remove_vowels('') == ''"),  # doctest with "\n" in the docstring
        ("HumanEval/72", "assert will_it_fly([1, 2], 5) == False"),  # ➞
        ("HumanEval/76", "assert is_simple_power(1, 4) == True"),  # => true
        ("HumanEval/67", "assert fruit_distribution('5 apples and 6 oranges', 19) == 8"),  # ->19 - 5 - 6 = 8
        ("HumanEval/95", "assert check_dict_case({'a': 'apple', 'b': 'banana'}) == True"),  # should return True.
        ("HumanEval/79", "assert decimal_to_binary(15) == 'db1111db'"),  # # returns
        ("HumanEval/78", "assert hex_key('AB') == 1"),  # For num = "AB" the output should be 1.
        ("HumanEval/112", "assert reverse_delete('abcde', 'ae') == ('bcd', False)"),  # the result should be
        ("HumanEval/68", "assert pluck([4, 2, 3]) == [2, 1]"),  # Input: / Output:
        ("HumanEval/120", "assert maximum([-3, -4, 5], 3) == [-4, -3, 5]"),  # Input: arr = ..., k = 3
        ("HumanEval/130", "assert tri(3) == [1, 3, 2, 8]"),  # recurrence lines rejected
        ("HumanEval/41", "assert car_race_collision(2) == 4"),  # no example: first assert of check
        ("HumanEval/116", "assert sort_array([1, 5, 2, 3, 4]) == [1, 2, 4, 3, 5]"),  # wrong docstring
    ],
)
def test_humaneval_public_test(humaneval, task_id: str, public_test: str) -> None:
    assert humaneval.get(task_id).public_tests[0].code == public_test


def test_humaneval_fallback_keeps_the_set_up_of_a_loop(humaneval) -> None:
    problem = humaneval.get("HumanEval/38")
    assert problem.metadata["public_test_origin"] == "check"
    code = problem.public_tests[0].code
    assert "from random import randint, choice" in code
    assert "assert decode_cyclic(encoded_str) == str" in code and "candidate" not in code


@pytest.mark.parametrize(
    ("docstring", "expected"),
    [
        (">>> f(1)\n    2", "assert f(1) == 2"),
        ("f(1) ==> 2", "assert f(1) == 2"),
        ("* f([1, 2]) => [2, 1]", "assert f([1, 2]) == [2, 1]"),
        ("f('a') should return 'b'.", "assert f('a') == 'b'"),
        ("f(3) returns 9 # because 3 * 3", "assert f(3) == 9"),
        ("For x = 3 the output should be 9", "assert f(3) == 9"),
        ("Input: x = 3\n    Output: 9", "assert f(3) == 9"),
        ("f(2) -> true", "assert f(2) == True"),
    ],
)
def test_docstring_example_styles(docstring: str, expected: str) -> None:
    prompt = f'def f(x):\n    """Do it.\n    {docstring}\n    """\n'
    examples = docstring_examples(prompt, "f")
    assert [e.to_assert() for e in examples][:1] == [expected]


@pytest.mark.parametrize("docstring", ["f(a) => False", "g(1) == 2", "f(1) is 2", "f(1) == some words"])
def test_docstring_examples_that_do_not_validate_are_rejected(docstring: str) -> None:
    prompt = f'def f(x):\n    """Do it.\n    {docstring}\n    """\n'
    assert docstring_examples(prompt, "f") == []


# --- JSONL -----------------------------------------------------------------------------------


def _sample_problems() -> list[Problem]:
    return [
        Problem(
            id="add-1",
            source="mine",
            prompt="Write add(a, b).",
            public_tests=(AssertTest("assert add(1, 2) == 3"),),
            private_tests=(AssertTest("assert add(-1, 1) == 0"), AssertTest("assert add(0, 0) == 0")),
            entry_point="add",
            setup_code="import math",
            reference_solution="def add(a, b):\n    return a + b\n",
            metadata={"difficulty": "easy", "tags": ["math"]},
        ),
        Problem(
            id="echo",
            source="mine",
            prompt="Print the input twice.",
            public_tests=(),
            private_tests=(IOTest(stdin="hi\n", expected_stdout="hi\nhi\n"),),
        ),
    ]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    problems = _sample_problems()
    path = write_jsonl(tmp_path / "test.jsonl", problems)
    loaded = load_jsonl(path)
    assert list(loaded.problems) == problems
    assert loaded.split_of == {"add-1": "test", "echo": "test"}
    assert load_problems(f"{path}:test").problems == loaded.problems


def test_jsonl_accepts_every_test_form_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    row = {
        "id": 7,
        "prompt": "p",
        "public_tests": ["assert f() == 1"],
        "private_tests": [
            {"kind": "assert", "code": "assert f() == 1"},
            {"stdin": "", "expected_stdout": "1"},
            {"kind": "io", "stdin": "x", "expected_stdout": "y"},
        ],
    }
    path.write_text(json.dumps(row) + "\n\n")
    (problem,) = load_jsonl(path).problems
    assert problem.id == "7" and problem.source == f"jsonl:{path}"
    assert problem.private_tests == (AssertTest("assert f() == 1"), IOTest("", "1"), IOTest("x", "y"))
    assert problem.entry_point is None and problem.setup_code == "" and problem.metadata == {}


def test_jsonl_folder_holds_one_file_per_split(tmp_path: Path) -> None:
    problems = _sample_problems()
    write_jsonl(tmp_path / "train.jsonl", problems[:1])
    write_jsonl(tmp_path / "test.jsonl", problems[1:])
    every = load_problems(str(tmp_path))
    assert every.count_by_split() == {"train": 1, "test": 1}
    assert [p.id for p in load_problems(f"{tmp_path}:test")] == ["echo"]
    with pytest.raises(ValueError, match="no split 'dev'; choose one of: test, train"):
        load_problems(f"{tmp_path}:dev")


GOOD = {"id": "a", "prompt": "p", "public_tests": [], "private_tests": ["assert True"]}


@pytest.mark.parametrize(
    ("bad_line", "line", "field", "message"),
    [
        (
            {"id": "b", "public_tests": [], "private_tests": ["assert True"]},
            2,
            "prompt",
            "required field 'prompt' is missing",
        ),
        ('{"id": "b", "prompt": "p",', 2, None, "not valid JSON"),
        ({**GOOD, "id": "b", "public_tests": "assert True"}, 2, "public_tests", "must be a list of tests, got str"),
        ({**GOOD, "id": "b", "private_tests": ["assert True", 3]}, 2, "private_tests[1]", "got int"),
        ({**GOOD, "id": ["b"]}, 2, "id", "must be a string or an integer, got list"),
        ({**GOOD, "id": "b", "private_tests": ["assert (("]}, 2, "private_tests[0]", "not valid Python"),
        ({**GOOD, "id": "b", "private_tests": [{"stdin": "1"}]}, 2, "private_tests[0].expected_stdout", "missing"),
        ({**GOOD, "id": "b", "private_tests": []}, 2, "private_tests", "at least one private test"),
        ({**GOOD, "id": "b", "tests": []}, 2, "tests", "unknown field(s) ['tests']"),
        ({**GOOD, "id": "b", "metadata": [1]}, 2, "metadata", "must be an object or null, got list"),
        (GOOD, 2, "id", "duplicate id 'a' (first seen at"),
    ],
)
def test_jsonl_errors_name_file_line_and_field(
    tmp_path: Path, bad_line, line: int, field: str | None, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    text = bad_line if isinstance(bad_line, str) else json.dumps(bad_line)
    path.write_text(json.dumps(GOOD) + "\n" + text + "\n")
    with pytest.raises(ProblemDataError) as caught:
        load_jsonl(path)
    error = caught.value
    assert (error.where, error.line, error.field) == (str(path), line, field)
    assert str(error).startswith(f"{path}, line {line}")
    if field is not None:
        assert f"field {field!r}" in str(error)
    assert message in str(error)


def test_duplicate_ids_across_the_files_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "train.jsonl").write_text("\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(
        ProblemDataError,
        match=r"train.jsonl, line 2, field 'id': duplicate id 'a' \(first seen at .*test.jsonl, line 1\)",
    ):
        load_jsonl(tmp_path)


# --- hf: and source specs --------------------------------------------------------------------


def _hf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    for split, ids in {"train": [1, 2], "test": [3]}.items():
        rows = [
            {
                "id": i,
                "prompt": f"problem {i}",
                "public_tests": [f"assert f({i}) == {i}"],
                "private_tests": [f"assert f(-{i}) == -{i}"],
            }
            for i in ids
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_hf_local_dataset_through_the_jsonl_schema(offline_hub, tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path)
    problem_set = load_problems(f"hf:{folder}")
    assert problem_set.name == f"hf:{folder}"
    assert problem_set.count_by_split() == {"train": 2, "test": 1}
    assert problem_set.get("3").private_tests == (AssertTest("assert f(-3) == -3"),)
    assert [p.id for p in load_problems(f"hf:{folder}::test")] == ["3"]


def test_hf_saved_dataset_folder(offline_hub, tmp_path: Path) -> None:
    import datasets

    saved = tmp_path / "saved"
    datasets.load_dataset(str(_hf_folder(tmp_path))).save_to_disk(str(saved))
    assert load_problems(f"hf:{saved}").count_by_split() == {"train": 2, "test": 1}


def test_hf_dataset_with_mbpp_columns_uses_the_mbpp_mapper(offline_hub, mbpp_dir: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (mbpp_dir / "mbpp.jsonl").read_text().splitlines()][:20]
    folder = tmp_path / "mbpp_like"
    folder.mkdir()
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    problem_set = load_problems(f"hf:{folder}")
    assert problem_set.count_by_split() == {"prompt": 10, "test": 10}  # task-id splits, not the file's
    assert problem_set.get("mbpp/11") == load_mbpp(path=mbpp_dir).get("mbpp/11")


def test_hf_bad_rows_name_the_split_and_row(offline_hub, tmp_path: Path) -> None:
    folder = _hf_folder(tmp_path)
    (folder / "test.jsonl").write_text(
        json.dumps({"id": 3, "prompt": "", "public_tests": [], "private_tests": ["assert 1"]}) + "\n"
    )
    with pytest.raises(ProblemDataError, match=r"\(split test\), row 1, field 'prompt'"):
        load_problems(f"hf:{folder}")


def test_hf_unreachable_dataset(offline_hub) -> None:
    with pytest.raises(ProblemSourceUnavailable, match="could not load the Hugging Face dataset 'someone/nothing'"):
        load_problems("hf:someone/nothing:cfg")


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("mbpp", Spec("named", "mbpp")),
        ("mbpp:train", Spec("named", "mbpp", "train")),
        ("humaneval:test", Spec("named", "humaneval", "test")),
        ("hf:google-research-datasets/mbpp", Spec("hf", "google-research-datasets/mbpp")),
        ("hf:google-research-datasets/mbpp:full:test", Spec("hf", "google-research-datasets/mbpp", "test", "full")),
        ("hf:org/data::train", Spec("hf", "org/data", "train")),
    ],
)
def test_parse_spec(spec: str, parsed: Spec) -> None:
    assert parse_spec(spec) == parsed


def test_parse_spec_paths_and_errors(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "dev.jsonl", _sample_problems())
    assert parse_spec(str(file)) == Spec("path", str(file))
    assert parse_spec(f"{file}:dev") == Spec("path", str(file), "dev")
    with pytest.raises(ValueError, match="unknown problem source 'nope.jsonl'"):
        parse_spec("nope.jsonl")
    with pytest.raises(ValueError, match="path= only applies to"):
        load_problems(str(file), path=tmp_path)


def test_importing_the_package_is_cheap() -> None:
    code = "import sys, mucode.problems; print(sorted(m for m in ('datasets', 'doctest') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- CLI -------------------------------------------------------------------------------------


def test_cli_list(mbpp_dir: Path) -> None:
    result = CliRunner().invoke(problems_cli, ["list", "mbpp", "--path", str(mbpp_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("mbpp: 974 problems from") and MBPP_SHA256[:16] in lines[0]
    assert lines[1].split() == ["split", "problems", "public", "private", "skipped"]
    table = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert table["train"] == ["374", "1122", "1122", "0"]
    assert table["test"][:2] == ["500", "500"]
    assert table["total"][0] == "974"


def test_cli_list_json_one_split(mbpp_dir: Path) -> None:
    result = CliRunner().invoke(problems_cli, ["list", "mbpp:validation", "--path", str(mbpp_dir), "--json"])
    data = json.loads(result.output)
    assert data["split"] == "validation"
    assert data["splits"]["validation"] == {"problems": 90, "public_tests": 90, "private_tests": 180, "skipped": 0}


def test_cli_show_one_problem(mbpp_dir: Path) -> None:
    result = CliRunner().invoke(problems_cli, ["show", "mbpp:test", "11", "--path", str(mbpp_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("=== mbpp/11  (split test, entry point remove_Occ)")
    assert '--- public tests (1)\nassert remove_Occ("hello","l") == "heo"' in result.output
    assert "--- private tests (4)" in result.output and 'assert remove_Occ("","l") == ""' in result.output


def test_cli_show_json_is_the_jsonl_schema(tmp_path: Path) -> None:
    result = CliRunner().invoke(problems_cli, ["show", "humaneval", "--json", "--limit", "3"])
    assert result.exit_code == 0, result.output
    (tmp_path / "he.jsonl").write_text(result.output)
    loaded = load_jsonl(tmp_path / "he.jsonl")
    assert [p.id for p in loaded] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert loaded.get("HumanEval/0") == load_humaneval().get("HumanEval/0")


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(problems_cli, ["show", "humaneval", "HumanEval/999"])
    assert missing.exit_code == 1 and "no problem 'HumanEval/999' in humaneval" in missing.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    broken = runner.invoke(problems_cli, ["list", str(bad)])
    assert broken.exit_code == 1
    assert f"Error: {bad}, line 1, field 'prompt'" in broken.output


def test_humaneval_path_that_is_not_a_file_is_a_clear_error(tmp_path):
    from mucode.problems import load_problems

    with pytest.raises(FileNotFoundError, match="is not a file; give a HumanEval-format"):
        load_problems("humaneval", path=tmp_path)


def test_the_mbpp_path_goes_only_to_mbpp_sources():
    from mucode.problems import mbpp_data_path

    assert mbpp_data_path("mbpp:test", "/data/mbpp") == "/data/mbpp"
    assert mbpp_data_path("mbpp-sanitized:test", "/data/mbpp") == "/data/mbpp"
    assert mbpp_data_path("humaneval", "/data/mbpp") is None  # a HumanEval run must not read the MBPP folder
    assert mbpp_data_path("mbpp-like.jsonl", "/data/mbpp") is None
