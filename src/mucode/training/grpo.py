"""The online-RL baseline: TRL's `GRPOTrainer` on the training problems, rewarded by the sandbox.

    mucode generator grpo --model qwen2.5-coder-0.5b --problems mbpp:train --limit 64 --lora --out runs/grpo

Each prompt is a problem's first message (the rollouts' prompt, `mucode.prompts`); TRL samples
`num_generations` completions of it, and each completion's program (its ```python block, run
with the problem's preamble) is run by the real sandbox against the problem's **public** tests:
reward 1.0 when every public test passes, else 0.0. The private tests never reach training; a
second reward function with weight 0, `correct` (public and private tests: the paper's rule), is
only logged (TRL logs every reward function's mean). Evaluate the result like any generator:
`mucode search --model OUT/model`.

Single turn only. TRL 1.16's multi-turn path (`environment_factory`) runs tool-calling
environments: the model must call the environment's methods as tools, while mucode's feedback
turns are plain user messages; a multi-turn GRPO baseline would need TRL's `rollout_func` hook
and is not built.

A generation budget (`max_generated_tokens`, or `budget_from` a rollout folder: its
summary's `completion_tokens`, e.g. one µCode iteration's rollouts) stops training after the
update in which the completions generated so far reach it, so that GRPO and the offline methods
can be compared at the same number of sampled tokens; the count is kept in every checkpoint
(trainer_state.json) and a resumed run goes on from it. The learning-rate schedule still follows
`max_steps`/`epochs`, which bound the run as well: leave room for the budget.

The output layout is `mucode generator train`'s (OUT/config.yaml, run.json, checkpoint-N,
runs/, model/ — LoRA merged — and adapter/), and rerunning the same command resumes from the
last checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from mucode.config import option
from mucode.episode import split_result
from mucode.execution import Executor, Limits
from mucode.extraction import extract_code
from mucode.finetune import (
    RESUMABLE_CHANGES,
    FinetuneConfig,
    Say,
    TrainResult,
    logged_losses,
    lora_config,
    start_run,
    train_resuming,
    training_arguments,
)
from mucode.problems.prelude import DEFAULT_PREAMBLE, PREAMBLES, program_to_run
from mucode.prompts import PromptConfig, initial_messages
from mucode.store import load_selected_problems
from mucode.training.sft import load_generator, save_final
from mucode.types import Problem


LOSS_TYPES = ["grpo", "dr_grpo", "dapo", "bnpo"]


@dataclass
class GRPOTrainConfig(FinetuneConfig):
    """Parameters of `mucode generator grpo` (saved as OUT/config.yaml); the shared ones are
    described in `FinetuneConfig`. `batch_size` counts completions per update (a multiple of
    `num_generations`: each prompt's group is one advantage baseline)."""

    out: str = option("runs/grpo", "Output folder: checkpoints, final model (OUT/model, LoRA merged), logs.")
    learning_rate: float = option(1e-6, "Peak learning rate (AdamW; TRL's GRPO default).")
    epochs: float = option(1.0, "Passes over the training problems.")
    problems: str = option("mbpp:train", "Training problems, SOURCE[:SPLIT].")
    problems_path: str | None = option(None, "MBPP data file or folder (else $MUCODE_MBPP_PATH, then the hub).")
    limit: int | None = option(None, "A seeded subset of this many training problems (all if unset).")
    num_generations: int = option(8, "Completions sampled per prompt (the GRPO group).")
    max_new_tokens: int = option(512, "Most tokens per completion.")
    temperature: float = option(0.7, "Sampling temperature of the completions.")
    beta: float = option(0.0, "KL coefficient against the base model (0: no reference model).")
    loss_type: str = option("dapo", "TRL's loss formulation (its default: dapo).", choices=LOSS_TYPES)
    timeout_s: float = option(3.0, "Sandbox wall-clock limit per test, in seconds.")
    workers: int | None = option(None, "Sandbox workers (default: one per core).")
    preamble: str = option(
        DEFAULT_PREAMBLE, "What runs before each program: none, problem, reference.", choices=PREAMBLES
    )
    max_generated_tokens: int | None = option(
        None, "Stop after the update in which the completions generated so far reach this many tokens."
    )
    budget_from: str | None = option(
        None, "A rollout folder whose completion_tokens (summary.json) is the generation budget."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_generated_tokens is not None and self.budget_from is not None:
            raise ValueError("give max_generated_tokens or budget_from, not both")
        if self.max_generated_tokens is not None and self.max_generated_tokens < 1:
            raise ValueError(f"got max_generated_tokens={self.max_generated_tokens}; it must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError(f"got max_new_tokens={self.max_new_tokens}; it must be >= 1")
        if self.num_generations < 2:
            raise ValueError(
                f"got num_generations={self.num_generations}; GRPO compares the completions of one prompt: use >= 2"
            )
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"got batch_size={self.batch_size} and num_generations={self.num_generations}; batch_size counts "
                "completions per update and must be a multiple of num_generations"
            )


def generation_budget(config: GRPOTrainConfig) -> int | None:
    """The budget in completion tokens: max_generated_tokens, or the rollout folder's count."""
    if config.budget_from is None:
        return config.max_generated_tokens
    import json
    from pathlib import Path

    summary = Path(config.budget_from) / "summary.json"
    if not summary.is_file():
        raise FileNotFoundError(f"budget_from: {summary} does not exist (a finished `mucode rollout` folder has one)")
    tokens = json.loads(summary.read_text()).get("completion_tokens")
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"{summary}: field completion_tokens is {tokens!r}; expected a positive token count")
    return tokens


class SandboxReward:
    """The reward functions of one run: `public` (1.0 iff the program passes the problem's public
    tests) and `correct` (public and private: logged only). Both read one sandbox run per
    completion against every test, kept for the call that comes next with the same completions."""

    def __init__(self, problems: Sequence[Problem], executor: Executor, preamble: str, budget: Any = None) -> None:
        self.problems = {p.id: p for p in problems}
        self.budget = budget  # a budget.GenerationBudget: counts each generated batch's tokens (in `public`)
        self.executor = executor
        self.preamble = preamble
        self._last: tuple[tuple[tuple[str, str], ...], list[tuple[bool, bool]]] | None = None

    def public(
        self, completions: list[Any], problem_id: list[str], completion_ids: Any = None, **_: Any
    ) -> list[float]:
        if self.budget is not None and completion_ids is not None:
            self.budget.count(completion_ids)
        return [float(public) for public, _ in self.verdicts(completions, problem_id)]

    def correct(self, completions: list[Any], problem_id: list[str], **_: Any) -> list[float]:
        return [float(public and private) for public, private in self.verdicts(completions, problem_id)]

    def verdicts(self, completions: list[Any], problem_ids: list[str]) -> list[tuple[bool, bool]]:
        """(passes the public tests, passes the private tests) of each completion."""
        programs = [extract_code(_text(c)) for c in completions]
        key = tuple(zip(problem_ids, programs))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        problems = [self.problems[i] for i in problem_ids]
        jobs = [
            (program_to_run(program, p, self.preamble), p.public_tests + p.private_tests, p.setup_code)
            for program, p in zip(programs, problems)
        ]
        verdicts = []
        for p, result in zip(problems, self.executor.run_many(jobs)):
            public, private = split_result(result, len(p.public_tests))
            verdicts.append((public.passed, private.passed))
        self._last = (key, verdicts)
        return verdicts


def _text(completion: Any) -> str:
    """A completion's text: conversational ([{"role": "assistant", "content": ...}]) or plain."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if m.get("role") == "assistant")
    return str(completion)


def prompt_dataset(problems: Sequence[Problem]) -> Any:
    """A datasets.Dataset of conversational prompts (the first message of every episode) and ids."""
    from datasets import Dataset

    config = PromptConfig()
    return Dataset.from_list([{"prompt": initial_messages(p, config), "problem_id": p.id} for p in problems])


def grpo_arguments(config: GRPOTrainConfig, processes: int, progress: bool = True) -> Any:
    sampling = {"max_completion_length": config.max_new_tokens, "temperature": config.temperature}
    return training_arguments(
        "GRPOConfig",
        config,
        processes,
        progress,
        **sampling,
        num_generations=config.num_generations,
        beta=config.beta,
        loss_type=config.loss_type,
        reward_weights=[1.0, 0.0],  # `public` trains; `correct` is logged only
        shuffle_dataset=True,
    )


def train_grpo(
    config: GRPOTrainConfig, *, overwrite: bool = False, progress: bool = True, say: Say | None = None
) -> TrainResult:
    """GRPO of `config.model` on the selected problems; saves OUT/model and resumes if OUT has
    checkpoints of the same config (see the module docstring)."""
    from trl import GRPOTrainer

    from mucode.training.budget import GenerationBudget

    _, problems = load_selected_problems(config.problems, config.problems_path, config.limit, config.seed)
    budget = GenerationBudget(generation_budget(config))
    run = start_run(
        config,
        lambda processes: grpo_arguments(config, processes, progress),
        kind="GRPO generator",
        overwrite=overwrite,
        say=say,
        resumable=RESUMABLE_CHANGES | {"max_generated_tokens", "budget_from"},
    )
    run.save_config(config)
    model, tokenizer = load_generator(config.model, dtype=config.dtype)
    with Executor(workers=config.workers, limits=Limits(timeout_s=config.timeout_s)) as executor:
        reward = SandboxReward(problems, executor, config.preamble, budget)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[reward.public, reward.correct],
            args=run.args,
            train_dataset=prompt_dataset(problems),
            processing_class=tokenizer,
            peft_config=lora_config(config, "CAUSAL_LM") if config.finetune == "lora" else None,
            callbacks=[budget],
        )
        completions = len(problems) * config.num_generations
        what = f"{len(problems)} problems x {config.num_generations} completions"
        run.say_setup(config, config.model, trainer, completions, what)
        spent = budget.spent_in(run.out)
        if spent is not None:
            trainer.args.max_steps = spent  # the budget was reached there: resume that state, train no further
        output, last = train_resuming(trainer, run)
    model_dir = save_final(
        trainer, run.out, run.state, finetune=config.finetune, base=config.model, dtype=config.dtype
    )
    losses = logged_losses(trainer)
    result = TrainResult(
        model_dir, output.global_step, float(output.training_loss), run.seconds(), last, len(problems), losses
    )
    problem_ids = [p.id for p in problems]
    details = {
        "problems": problem_ids, "rewards": _reward_history(trainer), "losses": losses,
        "generated_tokens": budget.generated, "max_generated_tokens": budget.budget, "budget_reached": budget.reached,
    }  # fmt: skip
    if budget.budget is not None and not budget.reached:
        run.say(
            f"the generation budget was not reached: {budget.generated:,} of {budget.budget:,} tokens when "
            "max_steps/epochs ended the run"
        )
    return run.finish(config, result, base_model=config.model, finetune=config.finetune, **details)


def _reward_history(trainer: Any) -> list[dict[str, float]]:
    """Every logged step's mean rewards (public tests, all tests)."""
    names = {"rewards/public/mean": "public", "rewards/correct/mean": "correct"}
    return [
        {"step": entry["step"], **{short: float(entry[name]) for name, short in names.items() if name in entry}}
        for entry in trainer.state.log_history
        if any(name in entry for name in names)
    ]


__all__ = ["GRPOTrainConfig", "SandboxReward", "generation_budget", "prompt_dataset", "train_grpo"]
