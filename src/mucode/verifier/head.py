"""Head-only training (finetune="head") from cached backbone features: the CPU option.

With a frozen backbone the reward is score(h), h = the backbone's last hidden state at the last
token, so h is computed once per distinct sequence and the linear head is trained on those
vectors. TRL's RewardTrainer would run the backbone again for both sides of every pair in every
epoch; here each distinct turn costs one forward pass in total, epochs cost milliseconds, and
the features are reused by later runs (other seeds, the other loss) and by scoring.

    store = FeatureStore(folder, backbone_key("smollm2-135m", "float32"))
    features = extract_features(model, sequences, store, batch_size=8)   # (N, D), resumable
    weight, history = fit_head(features, config, pairs=index_pairs)       # (1, D)

Feature files: FOLDER/<backbone key>.pt, a dict {sha256 of the token ids: float32 tensor (D,)},
rewritten atomically every `save_every` new sequences, so an interrupted extraction resumes.
The key covers the model reference and dtype, not the weights behind a path: after changing a
model folder in place, use another folder for the features.
"""

from __future__ import annotations

import hashlib
import math
import os
from array import array
from pathlib import Path
from typing import Any, Callable, Sequence

from mucode.verifier.losses import bce_loss, bradley_terry_loss
from mucode.verifier.model import pad_right


def backbone_key(model: str, dtype: str) -> str:
    """Names the features of one backbone: a hash of its reference and dtype."""
    return hashlib.sha256(f"{model}|{dtype}".encode()).hexdigest()[:16]


def sequence_key(ids: Sequence[int]) -> str:
    """sha256 of a token sequence."""
    return hashlib.sha256(array("q", ids).tobytes()).hexdigest()


class FeatureStore:
    """Last-token hidden states of one backbone, keyed by `sequence_key`, saved under folder."""

    def __init__(self, folder: str | Path, key: str, save_every: int = 256) -> None:
        import torch

        self.path = Path(folder) / f"{key}.pt"
        self.save_every = save_every
        self.features: dict[str, Any] = torch.load(self.path, weights_only=True) if self.path.is_file() else {}
        self._unsaved = 0

    def __contains__(self, key: str) -> bool:
        return key in self.features

    def __len__(self) -> int:
        return len(self.features)

    def get(self, key: str) -> Any:
        return self.features[key]

    def add(self, key: str, feature: Any) -> None:
        self.features[key] = feature
        self._unsaved += 1
        if self._unsaved >= self.save_every:
            self.save()

    def save(self) -> None:
        import torch

        if not self._unsaved and self.path.is_file():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(f".tmp-{os.getpid()}")
        torch.save(self.features, partial)
        partial.replace(self.path)
        self._unsaved = 0


def last_hidden(model: Any, ids: Any, mask: Any) -> Any:
    """(B, D) hidden states at each row's last real token (rows padded on the right)."""
    import torch

    hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, L, D)
    return hidden[torch.arange(ids.shape[0], device=ids.device), mask.sum(-1) - 1]


def extract_features(
    model: Any,
    sequences: Sequence[Sequence[int]],
    store: FeatureStore,
    *,
    pad_id: int,
    batch_size: int = 8,
    progress: bool = True,
) -> Any:
    """(N, D) float32 features of `sequences` (input order): taken from `store`, the missing ones
    computed longest first in batches and added to it."""
    import torch

    keys = [sequence_key(s) for s in sequences]
    missing = sorted(
        {k: i for i, k in enumerate(keys) if k not in store}.values(), key=lambda i: len(sequences[i]), reverse=True
    )
    device = next(model.parameters()).device
    bar = _bar(len(missing), progress)
    model.eval()
    for start in range(0, len(missing), batch_size):
        index = missing[start : start + batch_size]
        ids, mask = pad_right([sequences[i] for i in index], pad_id)
        with torch.inference_mode():
            hidden = last_hidden(model, ids.to(device), mask.to(device)).float().cpu()
        for i, row in zip(index, hidden):
            store.add(keys[i], row.clone())
        if bar is not None:
            bar.update(len(index))
    store.save()
    if bar is not None:
        bar.close()
    return torch.stack([store.get(k) for k in keys]) if keys else torch.zeros(0, 0)


def _bar(total: int, progress: bool) -> Any:
    if not (progress and total):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="backbone features", unit="seq")


def fit_head(
    features: Any,
    config: Any,
    init: Any,
    *,
    pairs: Any = None,
    labels: Any = None,
    log: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> tuple[Any, list[dict[str, float]]]:
    """Train a linear head w (1, D), starting from `init`, on fixed features (N, D).

    Bradley-Terry when `pairs` (P, 2) long tensor of (chosen row, rejected row) is given, else
    BCE on `labels` (N,). `config` gives learning_rate, weight_decay, epochs, max_steps,
    batch_size (pairs or rows per update), lr_scheduler, warmup, l2_coefficient and seed.
    Returns the weight and one log entry per `config.logging_steps` updates.
    """
    import torch
    from transformers import get_scheduler

    n = len(pairs) if pairs is not None else len(labels)
    if n == 0:
        raise ValueError("nothing to train the head on")
    generator = torch.Generator().manual_seed(config.seed)
    weight = torch.nn.Parameter(init.detach().clone().float())  # (1, D)
    optimizer = torch.optim.AdamW([weight], lr=config.learning_rate, weight_decay=config.weight_decay)
    per_epoch = math.ceil(n / config.batch_size)
    total = config.max_steps if config.max_steps > 0 else math.ceil(per_epoch * config.epochs)
    warmup = int(config.warmup) if config.warmup >= 1 else math.ceil(config.warmup * total)
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    history: list[dict[str, float]] = []
    order = torch.randperm(n, generator=generator)
    bar = _steps_bar(total, progress)
    for step in range(1, total + 1):
        offset = ((step - 1) % per_epoch) * config.batch_size
        if offset == 0 and step > 1:
            order = torch.randperm(n, generator=generator)  # a new epoch
        batch = order[offset : offset + config.batch_size]
        logging = step % config.logging_steps == 0 or step == total
        loss, metrics = _head_loss(features, weight, config, batch, pairs, labels, logging)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if logging:
            entry = {
                "step": step,
                "epoch": step / per_epoch,
                "loss": loss.item(),
                "learning_rate": scheduler.get_last_lr()[0],
                **metrics,
            }
            history.append(entry)
            if log is not None:
                log(step, entry)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return weight.detach(), history


def _head_loss(
    features: Any, weight: Any, config: Any, batch: Any, pairs: Any, labels: Any, metrics: bool
) -> tuple[Any, dict[str, float]]:
    """The batch loss, and (when `metrics`) its accuracy (and BT margin)."""
    import torch

    if pairs is not None:
        chosen = (features[pairs[batch, 0]] @ weight.T).squeeze(-1)  # (b,)
        rejected = (features[pairs[batch, 1]] @ weight.T).squeeze(-1)
        loss = bradley_terry_loss(chosen, rejected, config.l2_coefficient)
        if not metrics:
            return loss, {}
        with torch.no_grad():
            return loss, {
                "accuracy": (chosen > rejected).float().mean().item(),
                "margin": (chosen - rejected).mean().item(),
            }
    logits = (features[batch] @ weight.T).squeeze(-1)  # (b,)
    loss = bce_loss(logits, labels[batch])
    if not metrics:
        return loss, {}
    with torch.no_grad():
        return loss, {"accuracy": ((logits > 0).float() == labels[batch]).float().mean().item()}


def _steps_bar(total: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="head", unit="update")
