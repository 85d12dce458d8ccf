"""Evaluate a trained verifier on stored trajectories, by default on the problems its training
held out (split by problem, never by row).

    mucode verifier eval --verifier runs/v0                     # held-out problems of its own data
    mucode verifier eval --verifier runs/v0 --split all --trajectories runs/mbpp-test

Report (VERIFIER/eval-SPLIT.json; per-candidate scores in eval-SPLIT-scores.jsonl):
- pairwise_accuracy over (positive, negative) pairs built as in training (k per problem, seeded);
- roc_auc over every labeled turn (positives vs negatives, all problems pooled);
- calibration of sigmoid(score): ECE, Brier score, reliability bins (a probability only for a
  BCE head; for a BT head the numbers are reported but flagged);
- best_of_n for n = 1..R over each problem's first turns (R i.i.d. samples from the initial state:
  BoN at turn 1) and over its trajectories' final programs (what relabeling ranks, METHOD.md §2):
  exact expected accuracy of the verifier's pick, of a random pick, and of the oracle.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from mucode.verifier.config import VerifierEvalConfig
from mucode.verifier.data import Candidate, build_pairs, group_by_problem, labeled, load_candidates, restrict


Say = Callable[[str], None]


def evaluate_verifier(config: VerifierEvalConfig, scorer: Any = None, say: Say | None = None) -> dict[str, Any]:
    """Score the chosen problems' turns with the verifier and compute the report (see module
    docstring); writes the report and the scores next to the verifier unless `config.out`."""
    from mucode.verifier.scoring import VerifierScorer

    say = say or (lambda message: None)
    started = time.perf_counter()
    root = Path(config.verifier)
    folders = config.trajectories or _trained_on(root)
    scorer = scorer or VerifierScorer.load(
        str(root), batch_size=config.batch_size, device=config.device, progress=True
    )
    candidates = load_candidates(folders, reply_view=scorer.spec.reply_view, context=scorer.spec.context)
    candidates = restrict(candidates, problems_of_split(root, config.split, candidates))
    scores = score_candidates(scorer, _to_score(candidates))
    say(f"scored {len(scores)} turns of {len({c.problem_id for c in candidates})} problems")
    report = report_from_scores(
        candidates, scores, pairs_per_problem=config.pairs_per_problem, seed=config.seed, bins=config.bins
    )
    report.update(
        verifier=str(root),
        split=config.split,
        trajectories=list(folders),
        spec=asdict(scorer.spec),
        seconds=round(time.perf_counter() - started, 1),
    )
    report["calibration"]["is_probability"] = scorer.spec.loss == "bce"
    _write(config, root, report, candidates, scores)
    return report


def report_from_scores(
    candidates: Sequence[Candidate],
    scores: dict[tuple, float],
    *,
    pairs_per_problem: int = 32,
    seed: int = 0,
    bins: int = 10,
) -> dict[str, Any]:
    """Every metric of the report from candidates and their scores (keyed by `Candidate.ref`)."""
    from mucode.verifier.metrics import best_of_n_curve, calibration, pairwise_accuracy, roc_auc, sigmoid

    rows = labeled(candidates)
    pairs, stats = build_pairs(candidates, pairs_per_problem, seed)
    row_scores = [scores[c.ref] for c in rows]
    row_labels = [bool(c.label) for c in rows]
    return {
        "data": stats.to_dict(),
        "pairwise_accuracy": pairwise_accuracy(
            [scores[p.chosen.ref] for p in pairs], [scores[p.rejected.ref] for p in pairs]
        ),
        "roc_auc": roc_auc(row_scores, row_labels),
        "calibration": calibration(sigmoid(row_scores), row_labels, bins).to_dict(),
        "best_of_n": {
            "first_turn": [asdict(p) for p in best_of_n_curve(bon_groups(candidates, "first", scores))],
            "final_turn": [asdict(p) for p in best_of_n_curve(bon_groups(candidates, "final", scores))],
        },
    }


def bon_groups(
    candidates: Sequence[Candidate], which: str, scores: dict[tuple, float]
) -> list[tuple[list[float], list[bool]]]:
    """Per (folder, problem): (scores, correct) of each trajectory's first or final turn."""
    groups = []
    for group in group_by_problem(candidates).values():
        chosen = [c for c in group if (c.turn == 0 if which == "first" else c.final) and c.correct is not None]
        if chosen:
            groups.append(([scores[c.ref] for c in chosen], [bool(c.correct) for c in chosen]))
    return groups


def score_candidates(scorer: Any, candidates: Sequence[Candidate]) -> dict[tuple, float]:
    """Scores keyed by `Candidate.ref` (candidates are already in the verifier's view)."""
    values = scorer.score_messages([c.messages() for c in candidates])
    return {c.ref: v for c, v in zip(candidates, values)}


def _to_score(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Labeled turns, first turns and final turns (each once)."""
    return [c for c in candidates if c.label is not None or (c.correct is not None and (c.turn == 0 or c.final))]


def problems_of_split(root: Path, split: str, candidates: Sequence[Candidate]) -> list[str]:
    """Problem ids of `split`: all of the candidates', or a side of the verifier's split.json."""
    ids = sorted({c.problem_id for c in candidates})
    if split == "all":
        return ids
    path = next((p for p in (root / "split.json", root.parent / "split.json") if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"{root} has no split.json (it is not a `mucode verifier train` output folder); "
            "evaluate with --split all on trajectories of problems it was not trained on"
        )
    chosen = set(json.loads(path.read_text())[split])
    if not chosen:
        raise ValueError(
            f"{path} holds no {split} problems; train with --holdout-fraction > 0, or evaluate with --split all"
        )
    missing = chosen - set(ids)
    if missing == chosen:
        raise ValueError(
            f"none of the {len(chosen)} {split} problems of {path} is in the trajectories given; pass the folders the verifier was trained on"
        )
    return sorted(chosen & set(ids))


def _trained_on(root: Path) -> list[str]:
    import yaml

    for path in (root / "config.yaml", root.parent / "config.yaml"):
        if path.is_file():
            folders = (yaml.safe_load(path.read_text()) or {}).get("trajectories") or []
            if folders:
                return list(folders)
    raise ValueError(f"{root} does not say which trajectories it was trained on; pass --trajectories DIR[,DIR...]")


def _write(
    config: VerifierEvalConfig,
    root: Path,
    report: dict[str, Any],
    candidates: Sequence[Candidate],
    scores: dict[tuple, float],
) -> None:
    from mucode.verifier.scoring import score_record

    out = Path(config.out) if config.out else root / f"eval-{config.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(json_safe(report), indent=2))
    with open(out.with_name(out.stem + "-scores.jsonl"), "w", encoding="utf-8") as handle:
        for c in candidates:
            if c.ref in scores:
                handle.write(json.dumps({"source": c.source, **score_record(c, scores[c.ref])}) + "\n")
    report["written"] = str(out)


def json_safe(value: Any) -> Any:
    """NaN (a metric undefined on this data, e.g. ROC-AUC with one class) -> None, for strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def format_report(report: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    cal = report["calibration"]
    note = "" if cal.get("is_probability", True) else " (BT head: sigmoid(score) is no probability)"
    data = report["data"]
    lines = [
        f"{data['problems']} problems ({data['both']} with both classes), {data['positives']} positive / {data['negatives']} negative turns, {data['pairs']} pairs",
        f"pairwise accuracy {report['pairwise_accuracy']:.3f}   ROC-AUC {report['roc_auc']:.3f}   ECE {cal['ece']:.3f}   Brier {cal['brier']:.3f}{note}",
    ]
    for name, curve in report["best_of_n"].items():
        lines.append(
            f"Best-of-N over {name.replace('_', ' ')}s (verifier / random / oracle, ± s.e. of the margin over problems):"
        )
        lines += [
            f"  n={p['n']:<3d} {p['verifier']:.3f} / {p['random']:.3f} / {p['oracle']:.3f}  ±{p['margin_se']:.3f}  ({p['problems']} problems)"
            for p in curve
        ]
    return "\n".join(lines)
