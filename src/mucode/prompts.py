"""Every text the model sees: the first user message and the feedback after each attempt.

Chat messages are plain `{"role": ..., "content": ...}` dicts, ready for a HF chat template or
the OpenAI API. Defaults follow METHOD.md §4 and the reference code's wording:

    messages = initial_messages(problem)                 # [system?] + user: problem, tests, instruction
    messages += [{"role": "assistant", "content": reply},
                 feedback_message(public_result, problem.public_tests)]

Feedback is built from the public tests' verdicts only (private results are never shown), is
deterministic (no timings, no paths) and is cut to `PromptConfig.max_feedback_chars`. Two
wordings (`PromptConfig.feedback`): "rich" (default: the failed test, expected and actual values)
and "reference", the reference code's text: "Feedback: " then "Code passed all tests", the raw
error (for a failed assert: the assert line and `AssertionError`) or "Code execution timed out".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mucode.config import option
from mucode.generation.base import Message
from mucode.types import AssertTest, ExecResult, IOTest, Problem, Status, Test, Verdict


_TRUNCATION_MARK = "\n[... {n} characters cut ...]\n"
FEEDBACK_STYLES = ("rich", "reference")
REFERENCE_PASSED = "Code passed all tests"
REFERENCE_TIMEOUT = "Code execution timed out"
_HEADLINES = {Status.TIMEOUT: "Timed out on test:", Status.CRASHED: "Crashed on test:", Status.ERROR: "Error on test:"}


@dataclass
class PromptConfig:
    """Wording and limits of the prompt and the feedback.

    Parameters that control the first message:
        system_prompt: optional system message (None = no system message, as in the reference).
        function_intro / program_intro: first line for problems tested by asserts / by stdin-stdout.
        tests_header: line before the public tests.
        instruction: the closing request for a ```python block.
    Parameters that control the feedback message:
        feedback_prefix: first line of every feedback message.
        passed_text / infra_error_text: the body when every public test passed / the harness failed.
        retry_instruction: appended after a failure ("" = nothing, as in the reference).
        max_failures_shown: how many failing public tests are described (the reference shows one).
        max_feedback_chars: the body is cut in the middle, keeping head and tail, beyond this.
    """

    system_prompt: str | None = option(None, "System message; None for none.")
    function_intro: str = option(
        "Write a Python function implementation for the following prompt:",
        "First line for problems whose tests are asserts.",
    )
    program_intro: str = option(
        "Write a Python program for the following prompt. It reads from standard input and writes to standard output:",
        "First line for problems whose tests are stdin/stdout pairs.",
    )
    tests_header: str = option("Your code should satisfy these tests:", "Line before the public tests.")
    instruction: str = option(
        "Return only the implementation code, no tests or explanations. "
        "Be sure to include the relevant import statements:\n```python\ncode\n```",
        "Request closing the first message.",
    )
    feedback_prefix: str = option("Feedback:", "First line of every feedback message.")
    passed_text: str = option("Code passed all public tests.", "Body when every public test passed.")
    infra_error_text: str = option(
        "The test harness failed (not a problem with your code).", "Body when the harness itself failed on a test."
    )
    retry_instruction: str = option("", "Appended after a failure; '' for nothing.")
    max_failures_shown: int = option(1, "Failing public tests described in the feedback (>= 1).")
    max_feedback_chars: int = option(2000, "Feedback body longer than this is cut in the middle (>= 100).")
    feedback: str = option(
        "rich", "Feedback wording: rich or reference (the reference code's text).", choices=FEEDBACK_STYLES
    )

    def __post_init__(self) -> None:
        if self.feedback not in FEEDBACK_STYLES:
            raise ValueError(f"got feedback={self.feedback!r}; choose one of {', '.join(FEEDBACK_STYLES)}")
        if self.max_failures_shown < 1:
            raise ValueError(f"got max_failures_shown={self.max_failures_shown}; it must be >= 1")
        if self.max_feedback_chars < 100:
            raise ValueError(f"got max_feedback_chars={self.max_feedback_chars}; it must be >= 100 to fit one failure")


# ---------------------------------------------------------------------------------------- prompt


def initial_messages(problem: Problem, config: PromptConfig | None = None) -> list[Message]:
    """[system?] + the first user message: intro, problem text, public tests, instruction."""
    config = config or PromptConfig()
    intro = config.program_intro if _is_io(problem.public_tests or problem.private_tests) else config.function_intro
    parts = [
        intro,
        problem.prompt.strip(),
        config.tests_header,
        render_tests(problem.public_tests),
        config.instruction,
    ]
    messages = [{"role": "system", "content": config.system_prompt}] if config.system_prompt is not None else []
    return messages + [{"role": "user", "content": "\n\n".join(p for p in parts if p)}]


def render_tests(tests: Sequence[Test]) -> str:
    """Asserts one per line (as the reference pastes them); IO tests as input/expected-output blocks."""
    sep = "\n" if all(isinstance(t, AssertTest) for t in tests) else "\n\n"
    return sep.join(_render_test(t) for t in tests)


def _render_test(test: Test) -> str:
    if isinstance(test, IOTest):
        return f"Input:\n{_block(test.stdin)}\nExpected output:\n{_block(test.expected_stdout)}"
    return test.code.strip()


def _block(text: str) -> str:
    return f"```\n{text.rstrip(chr(10))}\n```"


def _is_io(tests: Sequence[Test]) -> bool:
    return bool(tests) and all(isinstance(t, IOTest) for t in tests)


# -------------------------------------------------------------------------------------- feedback


def feedback_message(result: ExecResult, tests: Sequence[Test], config: PromptConfig | None = None) -> Message:
    """The user message that follows an attempt, from its public-test result."""
    return {"role": "user", "content": render_feedback(result, tests, config)}


def render_feedback(result: ExecResult, tests: Sequence[Test], config: PromptConfig | None = None) -> str:
    """`feedback_prefix` then: all passed / the first failing test(s) / timed out, cut to length.

    `tests` are the public tests `result` was computed on, in the same order.
    """
    config = config or PromptConfig()
    if len(result.verdicts) != len(tests):
        raise ValueError(
            f"got {len(result.verdicts)} verdicts for {len(tests)} tests; pass the tests the result was run on"
        )
    if config.feedback == "reference":
        return f"{config.feedback_prefix} {truncate_middle(_reference_body(result, tests), config.max_feedback_chars)}"
    body = _feedback_body(result, tests, config)
    return f"{config.feedback_prefix}\n{truncate_middle(body, config.max_feedback_chars)}"


def _reference_body(result: ExecResult, tests: Sequence[Test]) -> str:
    """The reference code's feedback: its success text, its timeout text, or the first error."""
    if result.passed:
        return REFERENCE_PASSED
    failing = [(t, v) for t, v in zip(tests, result.verdicts) if not v.passed]
    if not failing:
        return "No public tests were run."
    test, verdict = failing[0]
    if verdict.status is Status.TIMEOUT:
        return REFERENCE_TIMEOUT
    if verdict.status is Status.FAILED and isinstance(test, AssertTest):
        return f"{test.code.strip()}\nAssertionError"
    return verdict.message.strip()


def _feedback_body(result: ExecResult, tests: Sequence[Test], config: PromptConfig) -> str:
    if result.passed:
        return config.passed_text
    failing = [(t, v) for t, v in zip(tests, result.verdicts) if not v.passed]
    if not failing:  # no tests at all: nothing passed, nothing to describe
        return "No public tests were run."
    if any(v.status is Status.INFRA_ERROR for _, v in failing):
        return config.infra_error_text
    shown = [_describe_failure(t, v) for t, v in failing[: config.max_failures_shown]]
    header = f"{len(failing)} of {len(tests)} public tests failed." if len(tests) > 1 else ""
    parts = [header, *shown, config.retry_instruction]
    return "\n\n".join(p for p in parts if p)


def _describe_failure(test: Test, verdict: Verdict) -> str:
    """Headline (what went wrong), the test, then expected/actual or the error message."""
    lines = [_HEADLINES.get(verdict.status, "Failed test:"), _render_test_short(test)]
    compared = verdict.expected is not None or verdict.actual is not None
    if compared:
        lines.append(f"Expected: {_or_unknown(verdict.expected)}")
        lines.append(f"Actual: {_or_unknown(verdict.actual)}")
    if not (verdict.status is Status.FAILED and compared):  # else expected/actual already say it
        lines.append(verdict.message.strip())
    return "\n".join(line for line in lines if line)


def _render_test_short(test: Test) -> str:
    if isinstance(test, AssertTest):
        return test.code.strip()
    return f"Input:\n{_block(clip_input(test.stdin))}"


def clip_input(text: str, max_chars: int = 600) -> str:
    """A test input for feedback: whole if short, else its head and a count of what was cut
    (contest inputs run to megabytes; the expected and actual output need the room)."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n[... {len(text) - max_chars} more characters of input]"


def _or_unknown(value: str | None) -> str:
    return value if value is not None else "(unknown)"


def truncate_middle(text: str, max_chars: int) -> str:
    """`text` if short enough, else its head and tail around a marker; at most `max_chars` long."""
    if len(text) <= max_chars:
        return text
    keep = max_chars - len(_TRUNCATION_MARK.format(n=len(text)))  # room left once the marker is in
    if keep <= 0:
        return text[:max_chars]
    head, tail = keep - keep // 2, keep // 2
    return text[:head] + _TRUNCATION_MARK.format(n=len(text) - keep) + text[len(text) - tail :]
