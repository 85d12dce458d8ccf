"""A generation budget for TRL's online trainers: `GenerationBudget` counts the completion tokens
generated and stops training after the update in which they reach the budget; the count is kept in
every checkpoint (trainer_state.json's stateful_callbacks) and read back when a run resumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint


class GenerationBudget(TrainerCallback, ExportableState):
    """Counts the completion tokens generated (all processes) and stops training after the
    update in which they reach `budget` (None: counts only). The count is saved in checkpoints'
    stateful_callbacks and read back when a run resumes."""

    def __init__(self, budget: int | None = None, generated: int = 0) -> None:
        self.budget = budget
        self.generated = generated

    def count(self, completion_ids: Sequence[Sequence[int]]) -> None:
        local = sum(len(ids) for ids in completion_ids)
        if PartialState().num_processes > 1:
            local = sum(gather_object([local]))
        self.generated += local

    @property
    def reached(self) -> bool:
        return self.budget is not None and self.generated >= self.budget

    def state(self) -> dict[str, Any]:
        return {"args": {"budget": self.budget}, "attributes": {"generated": self.generated}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        saved = state.stateful_callbacks.setdefault(type(self).__name__, self.state())  # older checkpoints lack it
        if isinstance(saved, dict):
            self.generated = int(saved.get("attributes", {}).get("generated", 0))

    def spent_in(self, out: Path) -> int | None:
        """The global step of OUT's last checkpoint if the count saved there reached the budget
        (then a rerun must train no further: pass it as max_steps), else None."""
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None or self.budget is None:
            return None
        state = json.loads((Path(last) / "trainer_state.json").read_text())
        saved = state.get("stateful_callbacks", {}).get(type(self).__name__, {})
        generated = int(saved.get("attributes", {}).get("generated", 0)) if isinstance(saved, dict) else 0
        return int(state["global_step"]) if generated >= self.budget else None

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.reached:
            control.should_training_stop = True
            control.should_save = True  # the last update is kept, as at max_steps
