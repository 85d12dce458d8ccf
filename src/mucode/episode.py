"""Multi-turn episodes: the model writes a program, it runs on the public tests, the feedback goes
back as the next user message; stop at the first turn whose program passes the public tests or
after `max_turns` turns (METHOD.md §3-§4: the public-pass rule, never a private one).

One episode, any `generate(messages) -> str` callable:

    with Executor() as ex:
        ep = run_episode(problem, generate, ex, max_turns=3)
    ep.correct, ep.turns[-1].program, ep.messages

Many episodes advanced together (one generation batch and one executor batch per turn):

    episodes = [Episode(p, max_turns=3) for p in problems]
    while active := [ep for ep in episodes if not ep.done]:
        replies = llm.generate([ep.pending_messages() for ep in active])
        advance(active, replies, executor)                # or ep.record(reply, public, private)

`CodeEnv` (Gymnasium-style reset/step over the same logic) is defined at the end of this file.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping, Protocol, Sequence

from mucode.extraction import extract_code
from mucode.generation.base import Message
from mucode.problems.prelude import DEFAULT_PREAMBLE, PREAMBLES, program_to_run
from mucode.prompts import PromptConfig, initial_messages, render_feedback
from mucode.types import ExecResult, Problem, Test


RunPrivate = Literal["every_turn", "final"]
RUN_PRIVATE_CHOICES = ("every_turn", "final")
Reward = Literal["public", "private", "fraction"]
REWARD_CHOICES = ("public", "private", "fraction")

Generate = Callable[[list[Message]], str]  # chat so far -> the model's reply
GenerateBatch = Callable[[list[list[Message]]], list[str]]  # one reply per chat, same order


class ExecutorLike(Protocol):
    """What episodes need from an executor (`mucode.execution.Executor` or any other backend):
    run each (program, tests, setup_code) job and return one ExecResult per job, in order."""

    def run_many(
        self, jobs: Iterable[tuple[str, Sequence[Test], str]], progress: bool = False
    ) -> list[ExecResult]: ...


# ------------------------------------------------------------------------------------- records


@dataclass
class Turn:
    """One attempt: what the model said, what ran, and how it did.

    `feedback` is the user message that follows this turn (rendered from `public` only).
    `correct` is whether `program` passes ALL the problem's tests, public and private (the paper's
    rule); None when the private tests were not run on this turn.
    Token counts and `generate_s` are filled by engines that know them, else None.
    """

    reply: str
    program: str
    public: ExecResult
    private: ExecResult | None = None
    feedback: str | None = None
    correct: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    generate_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("public", "private")}
        data["public"] = self.public.to_dict()
        data["private"] = self.private.to_dict() if self.private is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Turn:
        fields = dict(data)
        fields["public"] = ExecResult.from_dict(data["public"])
        fields["private"] = ExecResult.from_dict(data["private"]) if data.get("private") is not None else None
        if fields.get("correct") is not None:  # records written before the all-tests rule stored private-only
            fields["correct"] = bool(fields["correct"]) and fields["public"].passed
        return cls(**fields)


@dataclass
class Episode:
    """The state of one multi-turn attempt at `problem`.

    `prompt` holds the first messages ([system?] + user), rendered from the problem and
    `prompt_config` unless given. `turns` grows through `record` (or `advance`). `preamble`
    says what runs before each program (`mucode.problems.prelude`: none, the problem's prelude,
    or the reference code's imports and the prelude).
    """

    problem: Problem
    max_turns: int = 3
    prompt_config: PromptConfig = field(default_factory=PromptConfig)
    turns: list[Turn] = field(default_factory=list)
    prompt: list[Message] = field(default_factory=list)
    preamble: str = DEFAULT_PREAMBLE

    def __post_init__(self) -> None:
        _check_choice("preamble", self.preamble, PREAMBLES)
        if self.max_turns < 1:
            raise ValueError(f"got max_turns={self.max_turns}; it must be >= 1 (use max_turns=1 for single-turn)")
        if not self.problem.public_tests:
            raise ValueError(
                f"problem {self.problem.id!r} has no public tests; episodes need at least one to give feedback and to stop"
            )
        if not self.prompt:
            self.prompt = initial_messages(self.problem, self.prompt_config)

    # -- state

    @property
    def done(self) -> bool:
        """The last turn passed the public tests, or every turn is used."""
        return self.solved_public or len(self.turns) >= self.max_turns

    @property
    def solved_public(self) -> bool:
        return bool(self.turns) and self.turns[-1].public.passed

    @property
    def correct(self) -> bool:
        """Whether the answer so far (the last turn's program) passes all tests, public and private."""
        if not self.turns:
            raise ValueError(f"episode of problem {self.problem.id!r} has no turns yet")
        return self.correct_at(len(self.turns))

    @property
    def infra_error(self) -> bool:
        """Some test hit a harness failure: this episode's outcome is not trustworthy; re-run it."""
        return any(t.public.infra_error or (t.private is not None and t.private.infra_error) for t in self.turns)

    def correct_at(self, t: int) -> bool:
        """Whether the answer at turn t (1-based) is correct: the program of the last turn <= t.
        For a finished episode any t >= 1 is allowed (its answer no longer changes)."""
        if t < 1:
            raise ValueError(f"got t={t}; turns are numbered from 1")
        if t > len(self.turns) and not self.done:
            raise ValueError(
                f"episode of problem {self.problem.id!r} has {len(self.turns)} turns and is not done; turn {t} is unknown"
            )
        s = min(t, len(self.turns))
        correct = self.turns[s - 1].correct
        if correct is None:
            raise ValueError(
                f"private tests were not run on turn {s} of problem {self.problem.id!r}; run episodes with run_private='every_turn' to score every turn"
            )
        return correct

    def state(self, i: int) -> list[Message]:
        """The chat the model saw before turn i (0-based): prompt, then reply/feedback pairs."""
        if not 0 <= i <= len(self.turns):
            raise ValueError(f"got i={i}; this episode has states 0..{len(self.turns)}")
        messages = [dict(m) for m in self.prompt]
        for turn in self.turns[:i]:
            messages.append({"role": "assistant", "content": turn.reply})
            messages.append({"role": "user", "content": turn.feedback or ""})
        return messages

    def job(self, program: str, tests: Sequence[Test]) -> tuple[str, Sequence[Test], str]:
        """The sandbox job that runs `program` (with this episode's preamble) against `tests`."""
        return program_to_run(program, self.problem, self.preamble), tests, self.problem.setup_code

    @property
    def messages(self) -> list[Message]:
        """The whole chat so far, ending with the last feedback (a fresh copy)."""
        return self.state(len(self.turns))

    def pending_messages(self) -> list[Message]:
        """The chat to generate the next turn from."""
        if self.done:
            raise RuntimeError(f"episode of problem {self.problem.id!r} is done; it has no next turn")
        return self.messages

    # -- transitions

    def ends_with(self, public: ExecResult) -> bool:
        """Whether a next turn with this public result would be the last one."""
        return public.passed or len(self.turns) + 1 >= self.max_turns

    def record(
        self,
        reply: str,
        public: ExecResult,
        private: ExecResult | None = None,
        *,
        program: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        generate_s: float | None = None,
    ) -> Turn:
        """Append the turn for `reply`, whose program (`extract_code(reply)` unless given) got
        `public` on the public tests and `private` (or None: not run) on the private tests.
        The last turn of an episode must come with its private result, so `correct` is known."""
        if self.done:
            raise RuntimeError(f"episode of problem {self.problem.id!r} is done; start a new Episode")
        self._check_result(public, self.problem.public_tests, "public")
        if private is not None:
            self._check_result(private, self.problem.private_tests, "private")
        elif self.problem.private_tests and self.ends_with(public):
            raise ValueError(
                f"turn {len(self.turns) + 1} ends the episode of problem {self.problem.id!r}; pass its private result"
            )
        turn = Turn(
            reply=reply,
            program=extract_code(reply) if program is None else program,
            public=public,
            private=private,
            feedback=render_feedback(public, self.problem.public_tests, self.prompt_config),
            correct=self._correct(public, private),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            generate_s=generate_s,
        )
        self.turns.append(turn)
        return turn

    def _correct(self, public: ExecResult, private: ExecResult | None) -> bool | None:
        if not self.problem.private_tests:
            return public.passed
        return public.passed and private.passed if private is not None else None

    def _check_result(self, result: ExecResult, tests: Sequence[Test], which: str) -> None:
        if len(result.verdicts) != len(tests):
            raise ValueError(
                f"{which} result has {len(result.verdicts)} verdicts but problem {self.problem.id!r} has {len(tests)} {which} tests"
            )

    # -- storage

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record. The problem is stored by id plus what rebuilds the chat (no private
        tests, no reference solution): pass the loaded problem to `from_dict` to continue it."""
        problem = self.problem.to_dict()
        for hidden in ("private_tests", "reference_solution"):
            problem.pop(hidden)
        return {
            "problem_id": self.problem.id,
            "problem": problem,
            "max_turns": self.max_turns,
            "prompt_config": asdict(self.prompt_config),
            "preamble": self.preamble,
            "prompt": [dict(m) for m in self.prompt],
            "turns": [t.to_dict() for t in self.turns],
            "done": self.done,
            "solved_public": self.solved_public,
            "correct": self.turns[-1].correct if self.turns else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], problem: Problem | None = None) -> Episode:
        """Inverse of `to_dict`. Without `problem` the stored copy is used (no private tests)."""
        if problem is not None and problem.id != data["problem_id"]:
            raise ValueError(f"stored episode is for problem {data['problem_id']!r}, got problem {problem.id!r}")
        return cls(
            problem=problem if problem is not None else Problem.from_dict(data["problem"]),
            max_turns=data["max_turns"],
            prompt_config=PromptConfig(**data.get("prompt_config", {})),
            turns=[Turn.from_dict(t) for t in data["turns"]],
            prompt=[dict(m) for m in data["prompt"]],
            preamble=data.get("preamble", "none"),  # episodes stored before preambles ran without one
        )


# -------------------------------------------------------------------------------------- drivers


def advance(
    episodes: Sequence[Episode],
    replies: Sequence[str],
    executor: ExecutorLike,
    *,
    run_private: RunPrivate = "every_turn",
    progress: bool = False,
) -> list[Turn]:
    """Record one turn for each (episode, reply): extract the programs, run them in one executor
    batch (public tests, plus private tests every turn or only on each episode's last turn), and
    append the turns. Returns the new turns, in order."""
    _check_choice("run_private", run_private, RUN_PRIVATE_CHOICES)
    if len(episodes) != len(replies):
        raise ValueError(f"got {len(replies)} replies for {len(episodes)} episodes")
    if any(ep.done for ep in episodes):
        raise RuntimeError("advance() got a finished episode; pass only episodes with `not ep.done`")
    programs = [extract_code(r) for r in replies]
    if run_private == "every_turn":
        public, private = _run_public_and_private(episodes, programs, executor, progress)
    else:
        jobs = [ep.job(p, ep.problem.public_tests) for ep, p in zip(episodes, programs)]
        public = executor.run_many(jobs, progress=progress)
        private = _run_private_where_final(episodes, programs, public, executor, progress)
    return [
        ep.record(reply, pub, priv, program=program)
        for ep, reply, program, pub, priv in zip(episodes, replies, programs, public, private)
    ]


def split_result(result: ExecResult, n_first: int) -> tuple[ExecResult, ExecResult]:
    """Split the result of one run against `first + second` tests into the two results (the
    program's output goes with the first)."""
    first = replace(result, verdicts=result.verdicts[:n_first])
    second = replace(result, verdicts=result.verdicts[n_first:], stdout="", stderr="", output_truncated=False)
    return first, second


def _run_public_and_private(
    episodes: Sequence[Episode], programs: Sequence[str], executor: ExecutorLike, progress: bool
) -> tuple[list[ExecResult], list[ExecResult | None]]:
    """One sandboxed run per program against public + private tests, split afterwards."""
    jobs = [ep.job(p, ep.problem.public_tests + ep.problem.private_tests) for ep, p in zip(episodes, programs)]
    public, private = [], []
    for ep, result in zip(episodes, executor.run_many(jobs, progress=progress)):
        pub, priv = split_result(result, len(ep.problem.public_tests))
        public.append(pub)
        private.append(priv if ep.problem.private_tests else None)
    return public, private


def _run_private_where_final(
    episodes: Sequence[Episode],
    programs: Sequence[str],
    public: Sequence[ExecResult],
    executor: ExecutorLike,
    progress: bool,
) -> list[ExecResult | None]:
    """Private results for the turns that end their episode (None elsewhere)."""
    wanted = [bool(ep.problem.private_tests) and ep.ends_with(pub) for ep, pub in zip(episodes, public)]
    jobs = [ep.job(p, ep.problem.private_tests) for ep, p, w in zip(episodes, programs, wanted) if w]
    results = iter(executor.run_many(jobs, progress=progress) if jobs else [])
    return [next(results) if w else None for w in wanted]


def run_episodes(
    problems: Sequence[Problem],
    generate: GenerateBatch,
    executor: ExecutorLike,
    max_turns: int = 3,
    prompt_config: PromptConfig | None = None,
    *,
    run_private: RunPrivate = "every_turn",
    preamble: str = DEFAULT_PREAMBLE,
) -> list[Episode]:
    """Run one episode per problem, advancing all unfinished ones together each turn:
    `generate` gets the chats of the unfinished episodes and returns one reply per chat."""
    config = prompt_config or PromptConfig()
    episodes = [Episode(p, max_turns=max_turns, prompt_config=config, preamble=preamble) for p in problems]
    while active := [ep for ep in episodes if not ep.done]:
        replies = generate([ep.pending_messages() for ep in active])
        if len(replies) != len(active):
            raise ValueError(f"generate returned {len(replies)} replies for {len(active)} chats")
        advance(active, replies, executor, run_private=run_private)
    return episodes


def run_episode(
    problem: Problem,
    generate: Generate,
    executor: ExecutorLike,
    max_turns: int = 3,
    prompt_config: PromptConfig | None = None,
    *,
    run_private: RunPrivate = "every_turn",
    preamble: str = DEFAULT_PREAMBLE,
) -> Episode:
    """One episode of `problem` with `generate(messages) -> reply`."""
    batch = lambda chats: [generate(chat) for chat in chats]  # noqa: E731
    episodes = run_episodes(
        [problem], batch, executor, max_turns, prompt_config, run_private=run_private, preamble=preamble
    )
    return episodes[0]


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"got {name}={value!r}; choose one of {', '.join(map(repr, choices))}")


# ---------------------------------------------------------------------------- Gymnasium adapter


class _CodeEnv:
    """Gymnasium-style environment over `Episode` (a `gymnasium.Env` when gymnasium is installed).

    reset(seed=None, options=None) -> (observation, info)
    step(action) -> (observation, reward, terminated, truncated, info)

    observation: the chat so far, a list of {"role", "content"} dicts (prompt, then each reply and
        its feedback). action: the model's reply (a str; the program is extracted from it).
    reward per step, chosen by `reward`:
        "public": 1.0 if the turn's program passes every public test, else 0.0 (default);
        "private": 1.0 if it passes the private tests (forces run_private="every_turn"; the model
            still never sees private results, but the learner does: this is an oracle reward);
        "fraction": fraction of the public tests it passes.
    terminated: the program passed the public tests. truncated: `max_turns` turns used without that.
    info: problem_id, turn (1-based number), program, public_passed, correct (None if unknown),
        record (the Turn).

    Problems: `reset` takes options={"problem": Problem} or {"index": int}; else it draws one from
    `problems` with its own random.Random (seeded with 0, reseeded by reset(seed=...)).
    Spaces (with gymnasium): `action_space` holds any str, `observation_space` any list of chat
    messages; they check membership but cannot `sample()` (there is no useful random text).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        problems: Problem | Sequence[Problem],
        executor: ExecutorLike,
        *,
        max_turns: int = 3,
        prompt_config: PromptConfig | None = None,
        reward: Reward = "public",
        run_private: RunPrivate = "every_turn",
    ) -> None:
        _check_choice("reward", reward, REWARD_CHOICES)
        _check_choice("run_private", run_private, RUN_PRIVATE_CHOICES)
        if reward == "private" and run_private != "every_turn":
            raise ValueError("reward='private' needs the private result of every turn; use run_private='every_turn'")
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        if not self.problems:
            raise ValueError("CodeEnv needs at least one problem")
        self.executor = executor
        self.max_turns = max_turns
        self.prompt_config = prompt_config or PromptConfig()
        self.reward = reward
        self.run_private = run_private
        self.episode: Episode | None = None
        self._rng = random.Random(0)

    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        parent_reset = getattr(super(), "reset", None)
        if parent_reset is not None:
            parent_reset(seed=seed)  # gymnasium.Env: seeds self.np_random
        if seed is not None:
            self._rng = random.Random(seed)
        problem = self._pick_problem(options or {})
        self.episode = Episode(problem, max_turns=self.max_turns, prompt_config=self.prompt_config)
        return self.episode.messages, {"problem_id": problem.id}

    def _pick_problem(self, options: Mapping[str, Any]) -> Problem:
        if "problem" in options:
            return options["problem"]
        if "index" in options:
            return self.problems[options["index"]]
        return self.problems[self._rng.randrange(len(self.problems))]

    def step(self, action: str) -> tuple[list[Message], float, bool, bool, dict[str, Any]]:
        if self.episode is None or self.episode.done:
            raise RuntimeError("the episode is over (or was never started); call reset() first")
        (turn,) = advance([self.episode], [action], self.executor, run_private=self.run_private)
        terminated = turn.public.passed
        truncated = self.episode.done and not terminated
        info = {
            "problem_id": self.episode.problem.id,
            "turn": len(self.episode.turns),
            "program": turn.program,
            "public_passed": turn.public.passed,
            "correct": turn.correct,
            "record": turn,
        }
        return self.episode.messages, self._reward(turn), terminated, truncated, info

    def _reward(self, turn: Turn) -> float:
        if self.reward == "private":
            return float(bool(turn.correct))
        if self.reward == "fraction":
            return turn.public.n_passed / len(turn.public.verdicts)
        return float(turn.public.passed)


def _make_code_env() -> type:
    """CodeEnv = _CodeEnv + gymnasium.Env when gymnasium is installed, else _CodeEnv alone."""
    try:
        import gymnasium
    except ImportError:
        return type("CodeEnv", (_CodeEnv,), {"__module__": __name__, "__doc__": _CodeEnv.__doc__})

    class _AnyText(gymnasium.spaces.Space):
        def contains(self, x: Any) -> bool:
            return isinstance(x, str)

        def sample(self, *args: Any, **kwargs: Any) -> str:
            raise NotImplementedError("CodeEnv's action space holds any text; there is nothing useful to sample")

    class _Chat(gymnasium.spaces.Space):
        def contains(self, x: Any) -> bool:
            return isinstance(x, list) and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in x
            )

        def sample(self, *args: Any, **kwargs: Any) -> list:
            raise NotImplementedError("CodeEnv's observation space holds any chat; there is nothing useful to sample")

    attrs = {
        "__module__": __name__,
        "__doc__": _CodeEnv.__doc__,
        "action_space": _AnyText(),
        "observation_space": _Chat(),
    }
    return type("CodeEnv", (_CodeEnv, gymnasium.Env), attrs)


def __getattr__(name: str) -> Any:
    # CodeEnv is built on first use so that importing this module never imports gymnasium
    # (~250 ms and numpy); it is an optional extra (`pip install mucode[rl]`).
    if name == "CodeEnv":
        cls = _make_code_env()
        globals()["CodeEnv"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    CodeEnv = _CodeEnv
