"""A reward function for TRL's GRPOTrainer (or any RL stack) that runs completions in mucode's
sandbox through `mucode serve`'s /v1/execute. The dataset needs a `tests` column: a list of assert
statements per prompt. Reward = fraction of tests passed (1.0 = all).

    mucode serve --model smollm2-135m --port 8000 &      # any model: /v1/execute does not generate
    trainer = GRPOTrainer(model=..., reward_funcs=sandbox_reward, train_dataset=dataset, ...)
"""

from __future__ import annotations

import re

import httpx


MUCODE_URL = "http://127.0.0.1:8000"
FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.S)


def program_of(completion) -> str:
    """The code of a completion (conversational: a list of messages; standard: a string)."""
    text = completion[-1]["content"] if isinstance(completion, list) else completion
    match = FENCE.search(text)
    return match.group(1) if match else text


def sandbox_reward(completions, tests, **kwargs) -> list[float]:
    batch = [{"program": program_of(c), "tests": list(t)} for c, t in zip(completions, tests)]
    results = httpx.post(f"{MUCODE_URL}/v1/execute", json={"batch": batch}, timeout=600).json()["results"]
    return [sum(v["status"] == "passed" for v in r["verdicts"]) / len(r["verdicts"]) for r in results]
