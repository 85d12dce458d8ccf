"""Episodes, prompts/feedback and the Gymnasium adapter, run on the real sandboxed Executor.

Generators are scripted: callables returning fixed replies (the model is not under test here).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mucode.episode import Episode, Turn, advance, run_episode, run_episodes
from mucode.execution import Executor, Limits
from mucode.prompts import PromptConfig, feedback_message, initial_messages, render_feedback, truncate_middle
from mucode.types import AssertTest, ExecResult, IOTest, Problem, Status, Verdict


ADD = Problem(
    id="add",
    source="test",
    prompt="Write a function add(a, b) that returns the sum of a and b.",
    public_tests=(AssertTest("assert add(1, 2) == 3"),),
    private_tests=(AssertTest("assert add(-1, 1) == 0"), AssertTest("assert add(10, 5) == 15")),
)
TWO_PUBLIC = Problem(
    id="sq",
    source="test",
    prompt="Write square(x).",
    public_tests=(AssertTest("assert square(2) == 4"), AssertTest("assert square(3) == 9")),
    private_tests=(AssertTest("assert square(5) == 25"),),
)
NO_PRIVATE = Problem(
    id="neg",
    source="test",
    prompt="Write neg(x).",
    public_tests=(AssertTest("assert neg(1) == -1"),),
    private_tests=(),
)
WITH_SETUP = Problem(
    id="setup",
    source="test",
    prompt="Write total(xs).",
    public_tests=(AssertTest("assert total(DATA) == 6"),),
    private_tests=(AssertTest("assert total([]) == 0"),),
    setup_code="DATA = [1, 2, 3]",
)
DOUBLE_IO = Problem(
    id="double",
    source="test",
    prompt="Read an integer and print twice its value.",
    public_tests=(IOTest("3\n", "6\n"),),
    private_tests=(IOTest("10\n", "20\n"),),
)


def fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\nIt should work."


RIGHT = fenced("def add(a, b):\n    return a + b")
WRONG = fenced("def add(a, b):\n    return a - b")
OVERFIT = fenced("def add(a, b):\n    return 3")  # passes the public test only
BOOM = fenced("def add(a, b):\n    return a / 0")


class Scripted:
    """A generator that returns `replies` in order and keeps the chats it was given."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict[str, str]]] = []

    def __call__(self, messages: list[dict[str, str]]) -> str:
        self.seen.append(messages)
        return self.replies[len(self.seen) - 1]


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2, limits=Limits(timeout_s=1.0)) as ex:
        yield ex


# ----------------------------------------------------------------------------------- prompts


def test_initial_message_holds_problem_public_tests_and_instruction():
    (message,) = initial_messages(ADD)
    assert message["role"] == "user"
    assert ADD.prompt in message["content"]
    assert "assert add(1, 2) == 3" in message["content"]
    assert "```python" in message["content"]
    assert "add(-1, 1)" not in message["content"]  # private tests are never shown


def test_system_prompt_is_optional():
    messages = initial_messages(ADD, PromptConfig(system_prompt="You are a coder."))
    assert [m["role"] for m in messages] == ["system", "user"]


def test_io_problem_prompt_shows_input_and_expected_output():
    content = initial_messages(DOUBLE_IO)[0]["content"]
    assert "standard input" in content
    assert "Input:\n```\n3\n```" in content and "Expected output:\n```\n6\n```" in content
    assert "20" not in content


def test_prompt_config_validates():
    with pytest.raises(ValueError, match="max_failures_shown"):
        PromptConfig(max_failures_shown=0)
    with pytest.raises(ValueError, match="max_feedback_chars"):
        PromptConfig(max_feedback_chars=10)


def _result(*verdicts: Verdict) -> ExecResult:
    return ExecResult(verdicts=verdicts)


def test_feedback_passed():
    text = render_feedback(_result(Verdict(Status.PASSED)), ADD.public_tests)
    assert text == "Feedback:\nCode passed all public tests."


def test_feedback_shows_expected_and_actual():
    verdict = Verdict(Status.FAILED, "assert add(1, 2) == 3", expected="3", actual="-1")
    text = render_feedback(_result(verdict), ADD.public_tests)
    assert text == "Feedback:\nFailed test:\nassert add(1, 2) == 3\nExpected: 3\nActual: -1"


def test_feedback_shows_error_message():
    verdict = Verdict(Status.ERROR, "ZeroDivisionError: division by zero")
    text = render_feedback(_result(verdict), ADD.public_tests)
    assert text == "Feedback:\nError on test:\nassert add(1, 2) == 3\nZeroDivisionError: division by zero"


def test_feedback_timeout():
    text = render_feedback(_result(Verdict(Status.TIMEOUT, "the test took longer than 1 s")), ADD.public_tests)
    assert text.startswith("Feedback:\nTimed out on test:\nassert add(1, 2) == 3")


def test_feedback_counts_failures_and_shows_first_by_default():
    verdicts = (Verdict(Status.FAILED, expected="4", actual="5"), Verdict(Status.FAILED, expected="9", actual="10"))
    text = render_feedback(_result(*verdicts), TWO_PUBLIC.public_tests)
    assert "2 of 2 public tests failed." in text
    assert "square(2)" in text and "square(3)" not in text
    both = render_feedback(_result(*verdicts), TWO_PUBLIC.public_tests, PromptConfig(max_failures_shown=2))
    assert "square(2)" in both and "square(3)" in both


def test_feedback_infra_error_does_not_blame_the_program():
    text = render_feedback(_result(Verdict(Status.INFRA_ERROR, "worker died")), ADD.public_tests)
    assert "harness" in text and "worker died" not in text


def test_feedback_retry_instruction_and_prefix_are_configurable():
    config = PromptConfig(feedback_prefix="Execution result:", retry_instruction="Fix it.")
    message = feedback_message(_result(Verdict(Status.ERROR, "NameError")), ADD.public_tests, config)
    assert message["role"] == "user"
    assert message["content"].startswith("Execution result:\n") and message["content"].endswith("Fix it.")


def test_feedback_is_truncated_deterministically():
    verdict = Verdict(Status.ERROR, "E" * 50 + "x" * 5000 + "TAIL")
    config = PromptConfig(max_feedback_chars=300)
    text = render_feedback(_result(verdict), ADD.public_tests, config)
    body = text.removeprefix("Feedback:\n")
    assert len(body) <= 300
    assert body.startswith("Error on test:") and body.endswith("TAIL") and "characters cut" in body
    assert text == render_feedback(_result(verdict), ADD.public_tests, config)


def test_feedback_needs_matching_tests():
    with pytest.raises(ValueError, match="1 verdicts for 2 tests"):
        render_feedback(_result(Verdict(Status.PASSED)), TWO_PUBLIC.public_tests)


@pytest.mark.parametrize("n", [0, 5, 99, 100, 101, 1000])
def test_truncate_middle_bounds(n):
    text = "".join(chr(97 + i % 26) for i in range(n))
    out = truncate_middle(text, 100)
    assert len(out) <= 100
    if n <= 100:
        assert out == text
    else:
        assert out[:30] == text[:30] and out[-30:] == text[-30:] and "characters cut" in out


# ----------------------------------------------------------------------------------- episodes


def test_solved_at_first_turn(executor):
    episode = run_episode(ADD, Scripted(RIGHT), executor, max_turns=3)
    assert len(episode.turns) == 1
    assert episode.done and episode.solved_public and episode.correct
    turn = episode.turns[0]
    assert turn.program == "def add(a, b):\n    return a + b"
    assert turn.public.passed and turn.private.passed and turn.correct
    assert turn.feedback == "Feedback:\nCode passed all public tests."


def test_feedback_reaches_the_next_turn(executor):
    generate = Scripted(WRONG, RIGHT)
    episode = run_episode(ADD, generate, executor, max_turns=3)
    assert len(episode.turns) == 2 and episode.correct
    second_chat = generate.seen[1]
    assert [m["role"] for m in second_chat] == ["user", "assistant", "user"]
    assert second_chat[1]["content"] == WRONG
    assert second_chat[2]["content"] == "Feedback:\nFailed test:\nassert add(1, 2) == 3\nExpected: 3\nActual: -1"
    assert [episode.correct_at(t) for t in (1, 2, 3, 7)] == [False, True, True, True]


def test_error_traceback_in_feedback(executor):
    episode = run_episode(ADD, Scripted(BOOM, RIGHT), executor)
    assert "ZeroDivisionError: division by zero" in episode.turns[0].feedback


def test_timeout_in_feedback(executor):
    spin = fenced("def add(a, b):\n    while True:\n        pass")
    episode = run_episode(ADD, Scripted(spin, RIGHT), executor)
    assert episode.turns[0].public.verdicts[0].status is Status.TIMEOUT
    assert "Timed out on test:" in episode.turns[0].feedback


def test_stops_after_max_turns(executor):
    generate = Scripted(WRONG, WRONG, WRONG, RIGHT)
    episode = run_episode(ADD, generate, executor, max_turns=3)
    assert len(generate.seen) == 3 and len(episode.turns) == 3
    assert episode.done and not episode.solved_public and not episode.correct
    with pytest.raises(RuntimeError, match="done"):
        episode.pending_messages()


def test_public_pass_stops_even_when_private_fails(executor):
    """METHOD.md §4: stop on public pass; private results never steer the episode."""
    episode = run_episode(ADD, Scripted(OVERFIT, RIGHT), executor)
    assert len(episode.turns) == 1
    assert episode.solved_public and not episode.correct
    assert "Code passed all public tests." in episode.turns[0].feedback


def test_private_only_on_final_turn(executor):
    episode = run_episode(ADD, Scripted(WRONG, RIGHT), executor, run_private="final")
    assert episode.turns[0].private is None and episode.turns[0].correct is None
    assert episode.turns[1].private is not None and episode.correct
    with pytest.raises(ValueError, match="run_private='every_turn'"):
        episode.correct_at(1)


def test_private_tests_run_every_turn_by_default(executor):
    episode = run_episode(ADD, Scripted(WRONG, WRONG), executor, max_turns=2)
    assert all(t.private is not None and len(t.private.verdicts) == 2 for t in episode.turns)


def test_problem_without_private_tests_is_judged_on_public(executor):
    episode = run_episode(NO_PRIVATE, Scripted(fenced("def neg(x):\n    return -x")), executor)
    assert episode.turns[0].private is None and episode.correct


def test_setup_code_runs_before_tests(executor):
    episode = run_episode(WITH_SETUP, Scripted(fenced("def total(xs):\n    return sum(xs)")), executor)
    assert episode.correct


def test_io_problem(executor):
    generate = Scripted(fenced("print(int(input()) * 3)"), fenced("print(int(input()) * 2)"))
    episode = run_episode(DOUBLE_IO, generate, executor)
    assert len(episode.turns) == 2 and episode.correct
    assert "Expected: 6" in episode.turns[0].feedback and "Actual: 9" in episode.turns[0].feedback


def test_unfenced_and_unterminated_replies(executor):
    episode = run_episode(ADD, Scripted("def add(a, b):\n    return a + b\n"), executor)
    assert episode.correct
    episode = run_episode(ADD, Scripted("Sure!\n```python\ndef add(a, b):\n    return a + b\n"), executor)
    assert episode.correct


def test_batched_advance_and_run_episodes(executor):
    script = {
        "add": [WRONG, RIGHT],
        "sq": [fenced("def square(x):\n    return x * x")],
        "neg": ["nope", "nope", "nope"],
    }
    batch_sizes = []

    def generate(chats):
        batch_sizes.append(len(chats))
        replies = []
        for chat in chats:
            problem_id = next(pid for pid, p in PROBLEMS.items() if p.prompt in chat[0]["content"])
            replies.append(script[problem_id][(len(chat) - 1) // 2])
        return replies

    PROBLEMS = {"add": ADD, "sq": TWO_PUBLIC, "neg": NO_PRIVATE}
    episodes = run_episodes(list(PROBLEMS.values()), generate, executor, max_turns=3)
    assert batch_sizes == [3, 2, 1]
    assert [len(ep.turns) for ep in episodes] == [2, 1, 3]
    assert [ep.correct for ep in episodes] == [True, True, False]


def test_advance_rejects_bad_input(executor):
    episode = Episode(ADD)
    with pytest.raises(ValueError, match="2 replies for 1 episodes"):
        advance([episode], [RIGHT, RIGHT], executor)
    with pytest.raises(ValueError, match="run_private"):
        advance([episode], [RIGHT], executor, run_private="sometimes")
    advance([episode], [RIGHT], executor)
    with pytest.raises(RuntimeError, match="finished"):
        advance([episode], [RIGHT], executor)


def test_record_by_hand_with_executor_results(executor):
    """The step API a rollout engine uses: generate elsewhere, execute, then record."""
    episode = Episode(ADD, max_turns=2)
    program = "def add(a, b):\n    return a - b"
    public, private = executor.run_many([(program, ADD.public_tests, ""), (program, ADD.private_tests, "")])
    turn = episode.record(WRONG, public, private, prompt_tokens=12, completion_tokens=34, generate_s=0.5)
    assert turn.program == program and turn.completion_tokens == 34
    assert not episode.done and len(episode.pending_messages()) == 3


def test_record_validates(executor):
    episode = Episode(ADD, max_turns=1)
    program = "def add(a, b):\n    return a + b"
    public, private = executor.run_many([(program, ADD.public_tests, ""), (program, ADD.private_tests, "")])
    with pytest.raises(ValueError, match="pass its private result"):
        episode.record(RIGHT, public)  # the last turn must say whether it is correct
    with pytest.raises(ValueError, match="public result has 2 verdicts"):
        episode.record(RIGHT, private, private)
    episode.record(RIGHT, public, private)
    with pytest.raises(RuntimeError, match="done"):
        episode.record(RIGHT, public, private)


def test_episode_validates():
    with pytest.raises(ValueError, match="max_turns=0"):
        Episode(ADD, max_turns=0)
    with pytest.raises(ValueError, match="no public tests"):
        Episode(Problem(id="x", source="t", prompt="p", public_tests=(), private_tests=()))


def test_messages_are_copies(executor):
    episode = run_episode(ADD, Scripted(WRONG, RIGHT), executor)
    chat = episode.messages
    chat[0]["content"] = "changed"
    chat.append({"role": "user", "content": "more"})
    assert episode.messages[0]["content"] != "changed" and len(episode.messages) == 5
    assert episode.state(1) == episode.messages[:3]


def test_to_dict_round_trip(executor):
    episode = run_episode(ADD, Scripted(WRONG, RIGHT), executor)
    data = json.loads(json.dumps(episode.to_dict()))
    assert data["problem_id"] == "add" and data["correct"] is True
    assert "private_tests" not in data["problem"]
    restored = Episode.from_dict(data, problem=ADD)
    assert restored.messages == episode.messages
    assert restored.turns == episode.turns
    assert Episode.from_dict(data).messages == episode.messages  # without the live problem too
    with pytest.raises(ValueError, match="problem 'add'"):
        Episode.from_dict(data, problem=NO_PRIVATE)


# ---------------------------------------------------------------------------------- CodeEnv


def test_code_env_is_a_gymnasium_env(executor):
    import gymnasium

    from mucode.episode import CodeEnv

    env = CodeEnv(ADD, executor)
    assert isinstance(env, gymnasium.Env)
    obs, info = env.reset(seed=0)
    assert info == {"problem_id": "add"} and obs == initial_messages(ADD)
    assert env.observation_space.contains(obs) and env.action_space.contains(WRONG)
    assert not env.action_space.contains(3)

    obs, reward, terminated, truncated, info = env.step(WRONG)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs[-1]["content"].startswith("Feedback:") and info["turn"] == 1 and info["correct"] is False
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["program"] == "def add(a, b):\n    return a + b" and len(obs) == 5
    with pytest.raises(RuntimeError, match="reset"):
        env.step(RIGHT)


def test_code_env_truncates_after_max_turns(executor):
    from mucode.episode import CodeEnv

    env = CodeEnv(ADD, executor, max_turns=2)
    env.reset()
    assert env.step(WRONG)[2:4] == (False, False)
    assert env.step(WRONG)[2:4] == (False, True)


def test_code_env_rewards(executor):
    from mucode.episode import CodeEnv

    half = fenced("def square(x):\n    return 4")
    env = CodeEnv(TWO_PUBLIC, executor, reward="fraction")
    env.reset()
    assert env.step(half)[1] == 0.5

    env = CodeEnv(ADD, executor, reward="private")
    env.reset()
    _, reward, terminated, _, _ = env.step(OVERFIT)
    assert terminated and reward == 0.0

    with pytest.raises(ValueError, match="run_private='every_turn'"):
        CodeEnv(ADD, executor, reward="private", run_private="final")
    with pytest.raises(ValueError, match="reward='pass'"):
        CodeEnv(ADD, executor, reward="pass")


def test_code_env_problem_choice(executor):
    from mucode.episode import CodeEnv

    problems = [ADD, TWO_PUBLIC, NO_PRIVATE, WITH_SETUP]
    env = CodeEnv(problems, executor)
    draws = [env.reset(seed=7)[1]["problem_id"]] + [env.reset()[1]["problem_id"] for _ in range(5)]
    assert draws == [env.reset(seed=7)[1]["problem_id"]] + [env.reset()[1]["problem_id"] for _ in range(5)]
    assert env.reset(options={"index": 2})[1]["problem_id"] == "neg"
    assert env.reset(options={"problem": DOUBLE_IO})[1]["problem_id"] == "double"


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_episode_import_does_not_import_gymnasium():
    assert _python("import sys, mucode.episode; print('gymnasium' in sys.modules)") == "False"


def test_code_env_without_gymnasium():
    code = (
        "import sys; sys.modules['gymnasium'] = None\n"  # makes `import gymnasium` fail
        "from mucode.episode import CodeEnv\n"
        "print(CodeEnv.__mro__[1].__name__, hasattr(CodeEnv, 'action_space'))"
    )
    assert _python(code) == "_CodeEnv False"


# ------------------------------------------------------------ correctness rule, preludes, wording

# add(1, 2) == 3 is ADD's public test; this program fails it and passes every private test of a
# problem whose public test is wrong for it (the paper's rule: correct = passes ALL tests)
PRIVATE_ONLY = Problem("private-only", "test", ADD.prompt, (AssertTest("assert add(1, 2) == 4"),), ADD.private_tests)


def test_an_answer_that_fails_the_public_test_is_incorrect_even_if_it_passes_the_private_ones(executor):
    episode = run_episode(PRIVATE_ONLY, Scripted(RIGHT), executor, max_turns=1)
    turn = episode.turns[0]
    assert not turn.public.passed and turn.private.passed
    assert turn.correct is False and not episode.correct


def test_a_stored_private_only_verdict_is_read_as_all_tests():
    data = {
        "reply": "r",
        "program": "p",
        "public": {"verdicts": [{"status": "failed"}]},
        "private": None,
        "correct": True,
    }
    assert Turn.from_dict(data).correct is False  # written under the old rule: private pass only


def _entry_point_only(problem: Problem) -> str:
    """The reference solution without the prompt's prelude: only the entry point's def."""
    solution = problem.reference_solution or ""
    return fenced(solution[solution.index(f"def {problem.entry_point}(") :])


@pytest.mark.parametrize("task_id", ["HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/50"])
def test_humaneval_helpers_come_from_the_problem_prelude(executor, task_id):
    from mucode.problems import load_problems

    problem = load_problems("humaneval").get(task_id)
    reply = _entry_point_only(problem)
    bare = run_episode(problem, Scripted(reply), executor, max_turns=1, preamble="none")
    assert (
        not bare.correct
        and "NameError" in bare.turns[0].public.verdicts[0].message + bare.turns[0].private.verdicts[0].message
    )
    assert run_episode(problem, Scripted(reply), executor, max_turns=1, preamble="problem").correct


MATH = Problem(
    "sqrt", "test", "Write root(x).", (AssertTest("assert root(4) == 2"),), (AssertTest("assert root(9) == 3"),)
)
NO_IMPORT = fenced("def root(x):\n    return int(math.sqrt(x))")


def test_the_reference_preamble_supplies_the_common_imports(executor):
    assert not run_episode(MATH, Scripted(NO_IMPORT), executor, max_turns=1, preamble="problem").correct
    episode = run_episode(MATH, Scripted(NO_IMPORT), executor, max_turns=1, preamble="reference")
    assert (
        episode.correct and episode.turns[0].program == "def root(x):\n    return int(math.sqrt(x))"
    )  # stored as written
    assert Episode.from_dict(episode.to_dict(), MATH).preamble == "reference"


def test_preamble_is_validated():
    with pytest.raises(ValueError, match="preamble"):
        Episode(ADD, preamble="all")


def test_reference_feedback_uses_the_reference_wording(executor):
    reference = PromptConfig(feedback="reference")
    passed = run_episode(ADD, Scripted(RIGHT), executor, prompt_config=reference)
    assert passed.turns[0].feedback == "Feedback: Code passed all tests"
    failed = run_episode(ADD, Scripted(WRONG, RIGHT), executor, prompt_config=reference)
    assert failed.turns[0].feedback == f"Feedback: {ADD.public_tests[0].code.strip()}\nAssertionError"
    boom = run_episode(ADD, Scripted(BOOM, RIGHT), executor, prompt_config=reference)
    assert boom.turns[0].feedback.startswith("Feedback: ZeroDivisionError")
    slow = fenced("def add(a, b):\n    while True:\n        pass")
    timed_out = run_episode(ADD, Scripted(slow, RIGHT), executor, prompt_config=reference)
    assert timed_out.turns[0].feedback == "Feedback: Code execution timed out"
    with pytest.raises(ValueError, match="feedback"):
        PromptConfig(feedback="short")
