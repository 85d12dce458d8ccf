"""`mucode run`: the whole µCode method as one resumable pipeline (METHOD.md §2-§3).

    iter0/rollouts   base generator on the training problems
    iter0/verifier   verifier trained (from the base model) on iter0's trajectories
    iterI/sft        training data of generator I (see `union`): by default (the paper's union) the data
                     of iteration I-1 (its rollouts relabeled by verifier I-1) added to iter{I-1}/sft's,
                     which stays as it was (D0 relabeled by V0 is never relabeled again)
    iterI/generator  generator fine-tuned from the base model on iterI/sft
    iterI/rollouts   that generator on the training problems
    iterI/verifier   verifier trained from the base model on the rollouts of iterations <= I
    eval/<set>.<generator>.<mode>   greedy multi-turn and multi-turn Best-of-N searches
    report/          report.md and plots over the eval runs

With several `methods`, iteration 0 is shared and every later stage of a method has its own folder,
iterI/<method>/{sft,generator,rollouts,verifier}; the base generator is evaluated once.

Every stage writes its outputs in its own folder and, when it finishes, a `.done.json` marker with
its timing; a re-run skips finished stages and resumes an interrupted one (rollouts, training and
searches resume by themselves). The run folder holds config.yaml, run.json (seeds, package versions)
and stages.json (per-stage timings).

    from mucode.pipeline import pipeline_config, run_pipeline
    result = run_pipeline(pipeline_config("demo", overrides={"out": "runs/demo"}))
"""

from __future__ import annotations

import dataclasses
import json
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from mucode import __version__
from mucode.config import config_to_dict, load_config, option, read_yaml_mapping, save_config
from mucode.engine import EpisodeOptions
from mucode.training.relabel import RelabelOptions


Say = Callable[[str], None]
DONE = ".done.json"
TINY_MODEL = "tiny-random"  # built locally by the smoke preset: no download
METHODS = ("mucode", "multi-star", "star")
UNIONS = ("paper", "relabel-all")
PART = "part.jsonl"  # iterI/sft/part.jsonl: the rollouts of iteration I-1 relabeled by verifier I-1
# Fields that may change when a run is resumed: they change speed, not results.
THROUGHPUT_ONLY = {"max_live", "workers"}
# Keys of the `rollout:` / `search:` sections that may change on resume (a stage already under way
# is checked again by the stage itself: rollouts.check_resumable).
SECTION_THROUGHPUT_ONLY = {
    "ray",
    "backend",
    "base_url",
    "max_live",
    "workers",
    "tensor_parallel_size",
    "routing",
    "ray_actors",
    "ray_gpus_per_actor",
}
RolloutRunner = Callable[..., Any]  # (RolloutConfig, progress=bool) -> RolloutStats
# Section keys the pipeline sets itself, and how to set them.
PIPELINE_SET = {
    "model": "the top-level 'model' and each iteration's generator",
    "out": "--out and the stage folders",
    "problems_path": "the top-level 'problems_path'",
    "seed": "the top-level 'seed'",
}
ROLLOUT_SET = {
    **PIPELINE_SET,
    "problems": "the top-level 'problems'",
    "limit": "the top-level 'limit'",
    "first": "the top-level 'limit'",
    "rollouts": "the top-level 'rollouts'",
}
SEARCH_SET = {
    **PIPELINE_SET,
    "problems": "the top-level 'eval_problems'",
    "limit": "the top-level 'eval_limit'",
    "first": "the top-level 'eval_limit'",
    "verifier": "each iteration's verifier",
    "n": "the top-level 'eval_n'",
    "selector": "the top-level 'eval_selectors'",
    "searches": "the top-level 'eval_searches'",
    "temperature": "the top-level 'eval_temperature' (greedy runs use 0)",
    "max_new_tokens": "the top-level 'eval_max_new_tokens'",
}


@dataclass
class PipelineConfig(RelabelOptions, EpisodeOptions):
    """One µCode run: iteration 0 (base rollouts -> verifier), `iterations` generator iterations,
    then evaluation. Defaults are the paper's schedule (METHOD.md §2) with the default model. The
    episode settings (`EpisodeOptions`: turns, temperature, max_new_tokens, preamble, feedback,
    timeouts, ...) go to every rollout and search stage; the expert settings (`RelabelOptions`:
    top_m, expert_rank, unsolved, dedupe) to every relabeling."""

    out: str = option("runs/mucode", "Run folder (re-run the same command to resume).")
    seed: int = option(0, "Base seed: problem subsets, sampling, verifier pairs, relabel ties, training.")
    model: str = option(
        "smollm2-135m",
        "Base generator (a preset, hub id, local folder or GGUF; `tiny-random` builds a tiny random model).",
    )
    problems: str = option("mbpp:train", "Training problems, SOURCE[:SPLIT].")
    iter0_rollouts: str | None = option(
        None,
        "A `mucode rollout` folder of the base generator to copy as iteration 0 instead of collecting rollouts (lets runs of several --method share one iteration 0).",
    )
    rollouts: int = option(15, "Trajectories per training problem and iteration.")
    iterations: int = option(2, "Generator iterations after iteration 0 (paper: 2).")
    last_rollouts: bool = option(
        True,
        "Run the last iteration's rollouts and verifier (paper); off: evaluate with the previous verifier (saves a rollout stage).",
    )
    method: str = option(
        "mucode",
        "Generator training data: mucode (relabeled by the verifier), multi-star (successful trajectories), star (correct first turns).",
        choices=METHODS,
    )
    methods: list[str] = option(
        help="Several methods from one iteration 0 in one run folder (iterI/<method>/...); empty: `method` alone.",
        factory=list,
    )
    rollout: dict[str, Any] = option(
        help="RolloutConfig fields of every rollout stage (backend, base_url, seeding, ...), over the top level.",
        factory=dict,
    )
    search: dict[str, Any] = option(
        help="SearchConfig fields of every evaluation (backend, base_url, seeding, ...), over the top level.",
        factory=dict,
    )
    verifier_preset: str = option("paper", "Verifier training preset (mucode.verifier.config.PRESETS).")
    verifier: dict[str, Any] = option(
        help="Overrides of the verifier training config (e.g. loss, finetune, learning_rate); its model defaults to the base generator.",
        factory=dict,
    )
    generator_preset: str = option("paper", "Generator SFT preset (mucode.training.config.PRESETS).")
    generator: dict[str, Any] = option(
        help="Overrides of the generator SFT config (e.g. finetune, learning_rate, max_steps).", factory=dict
    )
    union: str = option(
        "paper",
        "paper: D_{I-1} (rollouts of iteration I-1 relabeled by verifier I-1) joins the earlier iterations' data unchanged; relabel-all: every earlier iteration's rollouts relabeled again by the latest verifier, the expert chosen across iterations.",
        choices=UNIONS,
    )
    max_sft_examples: int | None = option(
        None, "Seeded subsample of the relabeled examples (a CPU budget); all if unset."
    )
    eval_problems: list[str] = option(help="Evaluation problem sets.", factory=lambda: ["mbpp:test", "humaneval"])
    eval_limit: int | None = option(None, "Seeded subset of this many problems per evaluation set.")
    eval_n: int = option(5, "Programs per turn in multi-turn Best-of-N.")
    eval_selectors: list[str] = option(help="Best-of-N selectors to evaluate.", factory=lambda: ["pt+lv"])
    eval_extra_selectors: dict[str, list[str]] = option(
        help="More Best-of-N selectors for some generators only, e.g. {mucode: [random, lv, pt]}.", factory=dict
    )
    eval_searches: int = option(1, "Independent Best-of-N searches per problem (paper: 10).")
    eval_temperature: float = option(0.7, "Best-of-N sampling temperature (greedy runs use 0).")
    eval_max_new_tokens: int | None = option(None, "Most tokens per reply in evaluation (default: max_new_tokens).")
    eval_base: bool = option(True, "Also evaluate the base generator (the baseline rows).")

    def __post_init__(self) -> None:
        super().__post_init__()
        for method in [self.method, *self.methods]:
            if method not in METHODS:
                raise ValueError(f"method: got {method!r}; choose one of {', '.join(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: {self.methods} names a method twice")
        from mucode.rollouts import RolloutConfig
        from mucode.search import SearchConfig

        check_section("rollout", self.rollout, RolloutConfig, ROLLOUT_SET)
        check_section("search", self.search, SearchConfig, SEARCH_SET)
        extra = self.eval_extra_selectors
        if not isinstance(extra, dict):
            raise ValueError(f"eval_extra_selectors: expected a mapping of generator to selectors, got {extra!r}")
        for name, selectors in extra.items():
            if name not in ("base", *self.method_list):
                evaluated = ", ".join(self.method_list)
                raise ValueError(f"eval_extra_selectors: {name!r} is not evaluated; use base or one of {evaluated}")
            if not isinstance(selectors, list):
                raise ValueError(f"eval_extra_selectors: {name}: expected a list of selectors, got {selectors!r}")
        if self.union not in UNIONS:
            raise ValueError(f"union: got {self.union!r}; choose one of {', '.join(UNIONS)}")
        for name in ("rollouts", "eval_n", "eval_searches", "top_m"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: got {getattr(self, name)}; it must be >= 1")
        if self.iterations < 0:
            raise ValueError(f"iterations: got {self.iterations}; it must be >= 0")
        if not self.eval_problems:
            raise ValueError("eval_problems is empty; give at least one evaluation problem set")

    @property
    def method_list(self) -> list[str]:
        """The methods this run trains: `methods`, else `method` alone."""
        return list(self.methods) or [self.method]


def check_section(name: str, section: Any, cls: type, set_by_pipeline: dict[str, str]) -> None:
    """A `rollout:` / `search:` section holds fields of `cls` that the pipeline does not set itself."""
    import dataclasses
    import difflib

    if not isinstance(section, dict):
        raise ValueError(f"{name}: expected a mapping of {cls.__name__} fields, got {section!r}")
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(cls)}
    fields = [name for name in choices if name not in set_by_pipeline]
    for key, value in section.items():
        if key in set_by_pipeline:
            raise ValueError(f"{name}: {key!r} is set by the pipeline: {set_by_pipeline[key]}")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ValueError(f"{name}: unknown key {key!r}{hint}")
        if choices[key] and value is not None and value not in choices[key]:
            raise ValueError(f"{name}: {key}: got {value!r}; choose one of {', '.join(map(str, choices[key]))}")


# Starting points, not tuned results. `paper` is METHOD.md §2-§3 (GPUs); `demo` is the README's main
# job (the embedded default model, the whole method on 2 CPU cores); `smoke` checks the plumbing in CI.
PRESETS: dict[str, dict[str, Any]] = {
    # `paper` also takes the reference code's settings (docs/pipeline.md, "paper / reference code /
    # mucode default"): its import block and prelude, its feedback text, unsolved problems kept
    # with the verifier's best program, no dedupe, pairs drawn with replacement, 10 s per suite, the
    # paper's lengths.
    "paper": {
        "model": "meta-llama/Llama-3.2-1B-Instruct",
        "dtype": "bfloat16",
        "rollouts": 15,
        "iterations": 2,
        "verifier_preset": "paper",
        "generator_preset": "paper",
        "eval_searches": 10,
        "eval_n": 5,
        "eval_selectors": ["random", "lv", "pt", "pt+lv"],
        "union": "paper",
        "preamble": "reference",
        "feedback": "reference",
        "unsolved": "keep",
        "dedupe": False,
        "timeout_s": 10.0,
        "timeout_scope": "suite",
        "generator": {"max_length": 8192},
        "verifier": {"max_length": 2048, "pairs_with_replacement": True},
    },
    "demo": {
        "model": "smollm2-135m",
        # float32: at bf16 these 40 seeded rollouts hold no correct program, and no generator is trained
        "dtype": "float32",
        "limit": 10,
        "rollouts": 4,
        "turns": 2,
        "max_new_tokens": 128,
        "max_live": 40,
        "iterations": 1,
        "last_rollouts": False,
        "verifier_preset": "cpu-head",
        "verifier": {"loss": "bce"},
        "generator_preset": "cpu",
        "generator": {
            "finetune": "lora",
            "learning_rate": 2e-4,
            "max_length": 640,
            "batch_size": 8,
            "micro_batch_size": 4,
        },
        "max_sft_examples": 24,
        "eval_problems": ["humaneval"],
        "eval_limit": 8,
        "eval_n": 3,
        "eval_max_new_tokens": 128,
    },
    "smoke": {
        "model": TINY_MODEL,
        "limit": 3,
        "rollouts": 2,
        "turns": 2,
        "max_new_tokens": 16,
        "iterations": 1,
        "verifier_preset": "cpu-head",
        "verifier": {"loss": "bce", "epochs": 2.0, "batch_size": 4, "micro_batch_size": 4},
        "generator_preset": "cpu",
        "generator": {"max_steps": 2, "batch_size": 2, "micro_batch_size": 2, "save_steps": 1, "report_to": "none"},
        "unsolved": "keep",
        "eval_problems": ["mbpp:test"],
        "eval_limit": 2,
        "eval_n": 2,
        "eval_selectors": ["pt+lv"],
    },
}


def pipeline_config(
    preset: str | None = None, path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """Defaults, then the preset, then the YAML file, then `overrides` (None values skipped)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return load_config(PipelineConfig, path, overrides, base=PRESETS[preset] if preset else None)


# ------------------------------------------------------------------------------------------ stages


@dataclass
class PipelineResult:
    out: Path
    report: Path | None
    stages: dict[str, dict[str, Any]]  # name -> {"seconds", "finished_at", "skipped", ...}
    table: list[dict[str, Any]]  # one row per evaluation run


class Pipeline:
    """Runs the stages of one run folder in order, skipping finished ones."""

    def __init__(
        self,
        config: PipelineConfig,
        say: Say | None = None,
        progress: bool = True,
        run_rollouts: RolloutRunner | None = None,
    ) -> None:
        """`run_rollouts`: what collects a rollout stage whose section sets `ray` (the caller
        chooses, e.g. `mucode.scaling.ray_rollouts.run_rollouts_on_ray`; the pipeline imports no Ray)."""
        self.config = config
        self.run_rollouts = run_rollouts
        self.out = Path(config.out)
        self.say = say or print
        self.progress = progress
        self.stages: dict[str, dict[str, Any]] = {}
        self.base_model = config.model

    # -- bookkeeping

    def stage(self, name: str, work: Callable[[Path], dict[str, Any] | None]) -> dict[str, Any]:
        """Run `work(folder)` unless the stage's marker says it finished; record its timing."""
        from mucode.store import machine_facts

        folder = self.out / name
        marker = folder / DONE
        if marker.exists():
            info = json.loads(marker.read_text())
            self.stages[name] = {**info, "skipped": True}
            self.say(f"[done] {name} ({info.get('seconds', 0):.0f} s earlier)")
            return info
        self.say(f"[run]  {name}")
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        info = dict(work(folder) or {})
        # a stage resumed across machines ran on several; its marker names the one it finished on
        info.update(seconds=round(time.perf_counter() - started, 2), finished_at=_now(), finished_on=machine_facts())
        _write_json(marker, info)
        self.stages[name] = {**info, "skipped": False}
        _write_json(self.out / "stages.json", self.stages)
        self.say(f"[ok]   {name} in {info['seconds']:.0f} s")
        return info

    def prepare(self) -> None:
        from mucode.store import RUN_PACKAGES, machine_facts, package_versions

        if not self.progress:  # also the weight-loading bars of transformers
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        self.out.mkdir(parents=True, exist_ok=True)
        _check_same_config(self.config, self.out / "config.yaml")
        save_config(self.config, self.out / "config.yaml")
        _write_json(
            self.out / "run.json",
            {
                "mucode": __version__,
                "python": platform.python_version(),
                "seed": self.config.seed,
                "started_at": _now(),
                "package_versions": package_versions(
                    ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "numpy", *RUN_PACKAGES)
                ),
                "machine": machine_facts(),
            },
        )
        if self.config.model == TINY_MODEL:
            self.base_model = str(self.stage("models/tiny-random", _build_tiny)["path"])

    # -- the method

    def run(self) -> PipelineResult:
        from mucode.store import check_not_in_use, folder_lock

        check_not_in_use(self.out, "`mucode run`")
        self.preflight()
        with folder_lock(self.out, "`mucode run`"):
            return self._run()

    def _run(self) -> PipelineResult:
        self.prepare()
        if self.config.iter0_rollouts:
            self.stage("iter0/rollouts", self.import_rollouts)
        else:
            self.stage("iter0/rollouts", lambda d: self.rollouts(self.base_model, d))
        self.stage("iter0/verifier", partial(self.train_verifier, "", 0))
        finals = {method: self.run_method(method) for method in self.config.method_list}
        runs = self.evaluate(finals)
        report = self.report(runs)
        _write_json(self.out / "stages.json", self.stages)
        return PipelineResult(self.out, report, self.stages, evaluation_table(runs))

    def run_method(self, method: str) -> tuple[str, str]:
        """Iterations 1..K of one method; returns its final generator and the verifier that evaluates it."""
        from mucode.training.sft import restore_model

        k = self.config.iterations
        generator = self.base_model
        for i in range(1, k + 1):
            info = self.stage(self.folder(method, i, "sft"), partial(self.relabel, method, i))
            if info.get("examples", 0) == 0:
                self.say(
                    f"{method} iteration {i}: no training examples (no correct program to imitate); "
                    "the generator stays as it was"
                )
            else:
                trained = self.stage(self.folder(method, i, "generator"), partial(self.train_generator, method, i))
                generator = str(
                    restore_model(Path(trained["model"]).parent)
                )  # a kept folder may hold the adapter only
            if i < k or self.config.last_rollouts:
                self.stage(self.folder(method, i, "rollouts"), partial(self.rollouts, generator))
                self.stage(self.folder(method, i, "verifier"), partial(self.train_verifier, method, i))
        return generator, str(self.out / self.folder(method, self.final_iteration(), "verifier"))

    def plan(self) -> list[str]:
        """The stage folders a run goes through, in order, then report/ (at run time a generator stage,
        and its evaluations, are left out when relabeling yields no example)."""
        c = self.config
        names = (["models/tiny-random"] if c.model == TINY_MODEL else []) + ["iter0/rollouts", "iter0/verifier"]
        for method in c.method_list:
            for i in range(1, c.iterations + 1):
                more = i < c.iterations or c.last_rollouts
                kinds = ["sft", "generator"] + (["rollouts", "verifier"] if more else [])
                names += [self.folder(method, i, kind) for kind in kinds]
        finals = {m: (f"<{m} generator>", str(self.out / self.folder(m, self.final_iteration(), "verifier")))
                  for m in c.method_list}  # fmt: skip
        evaluations = self.evaluations(finals)
        return names + [name for name, *_ in sorted(evaluations, key=self.run_order(evaluations))]

    # -- folders

    @property
    def several(self) -> bool:
        return len(self.config.method_list) > 1

    def folder(self, method: str, iteration: int, kind: str) -> str:
        """iterI/KIND, or iterI/METHOD/KIND for I >= 1 when the run trains several methods."""
        if iteration == 0 or not self.several:
            return f"iter{iteration}/{kind}"
        return f"iter{iteration}/{method}/{kind}"

    def final_iteration(self) -> int:
        """The iteration whose verifier evaluates the final generator."""
        k = self.config.iterations
        return k if self.config.last_rollouts else max(k - 1, 0)

    # -- stage configs

    def rollout_config(self, model: str, folder: Path) -> Any:
        from mucode.rollouts import RolloutConfig

        c = self.config
        own = {
            **c.episode_options(),
            "model": model,
            "problems": c.problems,
            "rollouts": c.rollouts,
            "out": str(folder),
        }
        return stage_config(RolloutConfig, own, c.rollout, "rollout")

    def search_config(self, model: str, problems: str, mode: dict[str, Any], folder: Path) -> Any:
        from mucode.search import SearchConfig

        c = self.config
        own = {
            **c.episode_options(),
            "model": model, "problems": problems, "limit": c.eval_limit, "out": str(folder),
            "max_new_tokens": c.eval_max_new_tokens or c.max_new_tokens, "temperature": c.eval_temperature, **mode,
        }  # fmt: skip
        return stage_config(SearchConfig, own, c.search, "search")

    def verifier_config(self, method: str, iteration: int, folder: Path) -> Any:
        from mucode.verifier import train_config

        c = self.config
        overrides = {"model": self.base_model, **c.verifier}  # paper: the verifier starts from the base LLM
        trajectories = [str(self.out / self.folder(method, i, "rollouts")) for i in range(iteration + 1)]
        overrides.update(trajectories=trajectories, out=str(folder), seed=c.seed)
        config = train_config(c.verifier_preset, overrides=overrides)
        if config.finetune == "head" and not config.feature_cache:  # each stored turn encoded once per run
            config = replace(config, feature_cache=str(self.out / "verifier-features"))
        return config

    def generator_config(self, method: str, iteration: int, folder: Path) -> Any:
        from mucode.training.config import generator_config

        c = self.config
        data = [str(self.out / self.folder(method, iteration, "sft") / "sft.jsonl")]
        overrides = {**c.generator, "model": self.base_model, "data": data}
        overrides.update(out=str(folder), seed=c.seed)  # paper: from the base model each iteration
        return generator_config(c.generator_preset, overrides=overrides)

    def preflight(self) -> None:
        """Every check that bad input fails, before the run folder is written or a model loads:
        the stage configs (presets, overrides, `rollout:` / `search:` sections), the problem sets,
        the base model."""
        from mucode.generation.checks import check_generator
        from mucode.store import TRAJECTORIES, load_selected_problems, read_jsonl

        c = self.config
        _check_same_config(c, self.out / "config.yaml")
        method = c.method_list[0]
        for name, build in (("verifier", self.verifier_config), ("generator", self.generator_config)):
            try:
                build(method, 1, self.out / "preflight")
            except ValueError as err:
                raise ValueError(
                    f"{name} settings ({name}_preset {getattr(c, name + '_preset')!r} with {name}: overrides): {err}"
                ) from None
        rollout = self.rollout_config(c.model, self.out / "preflight")
        for name, _, problems, search in self.evaluations({m: (f"<{m}>", "verifier") for m in c.method_list}):
            self.search_config(c.model, problems, search, self.out / name)
        if c.iter0_rollouts is None:
            load_selected_problems(c.problems, c.problems_path, c.limit, c.seed)
        elif not (Path(c.iter0_rollouts) / TRAJECTORIES).is_file():
            raise FileNotFoundError(
                f"iter0_rollouts: {Path(c.iter0_rollouts) / TRAJECTORIES} not found; give a folder written by `mucode rollout`"
            )
        elif not (self.out / "iter0/rollouts" / DONE).is_file():
            source = Path(c.iter0_rollouts)
            check_rollouts_finished(source, read_jsonl(source / TRAJECTORIES, complete_only=True))
        for problems in c.eval_problems:
            load_selected_problems(problems, c.problems_path, c.eval_limit, c.seed)
        if c.model != TINY_MODEL:
            search = self.search_config(c.model, "humaneval", {}, self.out)
            engines = {(x.backend, x.base_url) for x in (rollout, search)}
            for backend, base_url in sorted(engines, key=str):
                check_generator(backend, c.model, base_url=base_url)

    # -- stages

    def rollouts(self, model: str, folder: Path) -> dict[str, Any]:
        from mucode.rollouts import run_rollouts, write_summary

        config = self.rollout_config(model, folder)
        if config.ray and self.run_rollouts is None:
            raise ValueError(
                "rollout: ray is set, but this pipeline has no Ray runner: run it with `mucode run --ray ADDRESS` "
                "(or pass run_rollouts=run_rollouts_on_ray)"
            )
        runner = self.run_rollouts if config.ray else run_rollouts
        stats = runner(config, progress=self.progress)
        summary = write_summary(config)
        return {
            "model": model,
            "trajectories": summary["trajectories"],
            "correct": summary.get("correct"),
            "completion_tokens": stats.completion_tokens,
            "tokens_per_s": round(stats.tokens_per_s, 1),
        }

    def import_rollouts(self, folder: Path) -> dict[str, Any]:
        """Copy the complete trajectories of `iter0_rollouts` (a folder another process may still be
        writing: only whole lines are taken) into `folder`."""
        from mucode.metrics import summarize_trajectories as summarize
        from mucode.store import TRAJECTORIES, complete_lines, read_jsonl

        source = Path(self.config.iter0_rollouts)
        if not (source / TRAJECTORIES).is_file():
            raise FileNotFoundError(
                f"iter0_rollouts: {source / TRAJECTORIES} not found; give a folder written by `mucode rollout`"
            )
        complete = complete_lines(source / TRAJECTORIES)
        records = read_jsonl(source / TRAJECTORIES, complete_only=True)
        if not records:
            raise ValueError(f"iter0_rollouts: {source} holds no complete trajectory yet")
        check_rollouts_finished(source, records)
        models = sorted({r.get("model") for r in records} - {None})
        if self.config.model != TINY_MODEL and models and models != [self.config.model]:
            raise ValueError(
                f"iter0_rollouts: {source} holds rollouts of {', '.join(models)}, not of the base generator {self.config.model!r}"
            )
        (folder / TRAJECTORIES).write_text(complete, encoding="utf-8")
        if (source / "config.yaml").is_file():
            (folder / "source-config.yaml").write_text((source / "config.yaml").read_text())
        summary = summarize(records)
        _write_json(folder / "summary.json", summary)
        return {
            "model": self.config.model,
            "source": str(source.resolve()),
            "trajectories": summary["trajectories"],
            "correct": summary.get("correct"),
        }

    def train_verifier(self, method: str, iteration: int, folder: Path) -> dict[str, Any]:
        from mucode.verifier import train_verifier

        config = self.verifier_config(method, iteration, folder)
        result = train_verifier(config, progress=self.progress, say=self.say)
        return {"model": str(result.model_dir), "seconds_training": round(result.seconds, 1)}

    def relabel(self, method: str, iteration: int, folder: Path) -> dict[str, Any]:
        """iterI/sft/all.jsonl (see `union`), then its seeded subsample sft.jsonl."""
        from mucode.training.relabel import build_sft_data

        c = self.config
        verifier = self.out / self.folder(method, iteration - 1, "verifier")
        scorer = None
        if method == "mucode":
            from mucode.verifier import VerifierScorer

            scorer = VerifierScorer.load(str(verifier), progress=self.progress, keep_features=True)
        options = RelabelOptions(**{f.name: getattr(c, f.name) for f in dataclasses.fields(RelabelOptions)})
        if c.union == "relabel-all":
            rollouts = [self.out / self.folder(method, i, "rollouts") for i in range(iteration)]
            stats = build_sft_data(
                method, rollouts, folder / "all.jsonl", scorer=scorer, options=options, progress=self.progress
            )
            parts: list[str] = []
        else:
            rollouts = [self.out / self.folder(method, iteration - 1, "rollouts")]
            stats = build_sft_data(
                method, rollouts, folder / PART, scorer=scorer, options=options, progress=self.progress
            )
            parts = [str(self.out / self.folder(method, i, "sft") / PART) for i in range(1, iteration + 1)]
            concatenate_jsonl([Path(p) for p in parts], folder / "all.jsonl")
        kept = subsample_jsonl(folder / "all.jsonl", folder / "sft.jsonl", c.max_sft_examples, c.seed + iteration)
        return {
            "method": method, "examples": kept, "max_sft_examples": c.max_sft_examples, "relabeled": stats.to_dict(),
            "union": c.union, "parts": parts, "rollouts": [str(r) for r in rollouts],
            "relabeled_by": str(verifier) if scorer else None,
        }  # fmt: skip

    def train_generator(self, method: str, iteration: int, folder: Path) -> dict[str, Any]:
        from mucode.training.sft import train_generator

        config = self.generator_config(method, iteration, folder)
        result = train_generator(config, progress=self.progress, say=self.say)
        return {
            "method": method, "model": str(result.model_dir), "train_loss": result.train_loss,
            "examples": result.examples,
            "steps": result.global_step, "epochs": config.epochs, "max_steps": config.max_steps,
        }  # fmt: skip

    def evaluations(self, finals: dict[str, tuple[str, str]]) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(folder, generator, problem set, search mode) of every evaluation run; `finals` maps each
        method to its final generator and verifier. One method: the base generator is evaluated
        with that method's verifier; several: with iteration 0's (shared by all)."""
        c = self.config
        generators = {method: final for method, final in finals.items() if final[0] != self.base_model}
        base_verifier = str(self.out / "iter0/verifier") if self.several else next(iter(finals.values()))[1]
        if c.eval_base or not generators:
            generators = {"base": (self.base_model, base_verifier), **generators}
        found = {}  # the main table first (greedy, eval_selectors), then eval_extra_selectors
        for extra in (False, True):
            for problems in c.eval_problems:
                for name, (model, verifier) in generators.items():
                    selectors = c.eval_extra_selectors.get(name, []) if extra else c.eval_selectors
                    for mode, search in self.search_modes(verifier, selectors, greedy=not extra):
                        found.setdefault(f"eval/{_slug(problems)}.{name}.{mode}", (model, problems, search))
        return [(name, *evaluation) for name, evaluation in found.items()]

    def evaluate(self, finals: dict[str, tuple[str, str]]) -> list[Path]:
        """Greedy multi-turn and multi-turn Best-of-N of the final generators (and the base one)."""
        for method in [m for m, (model, _) in finals.items() if model == self.base_model and self.several]:
            self.say(f"{method}: no generator was trained; the base rows stand for it")
        evaluations = self.evaluations(finals)
        for name, model, problems, search in sorted(evaluations, key=self.run_order(evaluations)):
            self.stage(name, lambda d, m=model, p=problems, s=search: self.search(m, p, s, d))
        return [self.out / name for name, *_ in evaluations]

    def run_order(self, evaluations: list[tuple[str, str, str, dict[str, Any]]]) -> Callable[[tuple], tuple[int, int]]:
        """Sort key of the evaluations' run order: every greedy row first (cheap), then each
        generator's Best-of-N with the main selectors over all sets (base and the first method
        finish before the next method starts), then eval_extra_selectors. A long run stopped early
        thus leaves whole rows of the table, not a part of each."""
        position = {name: i for i, (name, *_) in enumerate(evaluations)}
        generators = list(dict.fromkeys(name.rsplit(".", 2)[1] for name, *_ in evaluations))
        main = {f"bon{self.config.eval_n}-{selector}" for selector in self.config.eval_selectors}

        def key(evaluation: tuple) -> tuple[int, int]:
            _, generator, mode = evaluation[0].split("/", 1)[1].rsplit(".", 2)
            rank = 0 if mode == "greedy" else 1 + generators.index(generator) if mode in main else 1 + len(generators)
            return rank, position[evaluation[0]]

        return key

    def search_modes(
        self, verifier: str, selectors: list[str], greedy: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        """(folder suffix, SearchConfig fields) of greedy (unless `greedy` is off) and Best-of-N with each selector."""
        c = self.config
        modes = [("greedy", {"n": 1, "temperature": 0.0, "selector": "pt", "searches": 1, "verifier": None})][:greedy]
        for selector in selectors:
            modes.append(
                (
                    f"bon{c.eval_n}-{selector}",
                    {
                        "n": c.eval_n,
                        "temperature": c.eval_temperature,
                        "selector": selector,
                        "searches": c.eval_searches,
                        "verifier": verifier,
                    },
                )
            )
        return modes

    def search(self, model: str, problems: str, mode: dict[str, Any], folder: Path) -> dict[str, Any]:
        from mucode.search import run_search

        summary = run_search(self.search_config(model, problems, mode, folder), progress=self.progress)
        return {
            key: summary.metrics.get(key)
            for key in ("accuracy", "accuracy_by_turn", "public_pass_rate", "completion_tokens", "tokens_saved")
        }

    def report(self, runs: list[Path]) -> Path | None:
        from mucode.reports import write_report

        names = [run.name for run in runs]
        path = write_report([str(r) for r in runs], self.out / "report", names=names)
        budgets = self.budget_table()
        if budgets:
            path.write_text(path.read_text(encoding="utf-8") + budgets, encoding="utf-8")
        return path

    def budget_table(self) -> str:
        """report.md's section on each method's SFT budget, from the stage markers."""
        rows = []
        for method in self.config.method_list:
            for i in range(1, self.config.iterations + 1):
                sft = _read_marker(self.out / self.folder(method, i, "sft"))
                trained = _read_marker(self.out / self.folder(method, i, "generator"))
                if sft is not None:
                    cap = sft.get("max_sft_examples")
                    rows.append(
                        f"| {method} | {i} | {sft.get('examples')} | {'all' if cap is None else cap} | "
                        f"{trained.get('steps', '-') if trained else '-'} |"
                    )
        if not rows:
            return ""
        head = "\n## SFT budget per method\n\n| method | iteration | SFT examples | cap | optimizer steps |\n"
        head += "|---|---|---|---|---|\n"
        return head + "\n".join(rows) + "\n"


def run_pipeline(
    config: PipelineConfig, say: Say | None = None, progress: bool = True, run_rollouts: RolloutRunner | None = None
) -> PipelineResult:
    """Run (or resume) the whole method in `config.out`; see the module docstring for the stages."""
    return Pipeline(config, say=say, progress=progress, run_rollouts=run_rollouts).run()


# ------------------------------------------------------------------------------------------ helpers


def evaluation_table(runs: list[Path]) -> list[dict[str, Any]]:
    """One row per evaluation run, from its summary.json."""
    rows = []
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())
        by_turn = summary.get("accuracy_by_turn") or [None]
        rows.append(
            {
                "run": run.name,
                "accuracy": summary.get("accuracy"),
                "turn1": by_turn[0],
                "public_pass_rate": summary.get("public_pass_rate"),
                "tokens": summary.get("completion_tokens"),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The evaluation rows as a small fixed-width table for the terminal."""
    width = max([len(r["run"]) for r in rows] + [3])
    lines = [f"{'run':<{width}}  accuracy  turn 1  public pass  tokens"]
    for r in rows:
        lines.append(
            f"{r['run']:<{width}}  {_pct(r['accuracy']):>8}  {_pct(r['turn1']):>6}  {_pct(r['public_pass_rate']):>11}  {r['tokens'] or 0:>6}"
        )
    return "\n".join(lines)


def concatenate_jsonl(sources: list[Path], dest: Path) -> int:
    """dest = the lines of `sources` in order; returns the number of lines."""
    lines = [line for source in sources for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    dest.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def subsample_jsonl(source: Path, dest: Path, limit: int | None, seed: int) -> int:
    """Copy `source` to `dest`, keeping a seeded random `limit` of its lines (order kept)."""
    lines = [line for line in source.read_text().splitlines() if line.strip()]
    if limit is not None and len(lines) > limit:
        keep = sorted(random.Random(seed).sample(range(len(lines)), limit))
        lines = [lines[i] for i in keep]
    dest.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def _build_tiny(folder: Path) -> dict[str, Any]:
    from mucode.generation.tiny import build_tiny_chat_model

    return {"path": str(build_tiny_chat_model(folder / "model"))}


def check_rollouts_finished(source: Path, records: list[dict[str, Any]]) -> None:
    """Refuse a `mucode rollout` folder that still misses trajectories (its run.json lists the problems,
    its config.yaml the rollouts per problem): iteration 0 would be frozen with part of them."""
    if not ((source / "run.json").is_file() and (source / "config.yaml").is_file()):
        return
    problems = json.loads((source / "run.json").read_text()).get("problem_ids") or []
    expected = len(problems) * int(read_yaml_mapping(source / "config.yaml").get("rollouts") or 1)
    found = len({(r.get("problem_id"), r.get("rollout")) for r in records})
    if found < expected:
        raise ValueError(
            f"iter0_rollouts: {source} holds {found} of its {expected} trajectories; "
            "let its `mucode rollout` finish (re-run it to resume) before `mucode run`"
        )


def stage_config(cls: type, own: dict[str, Any], section: dict[str, Any], name: str) -> Any:
    """`cls` (RolloutConfig, SearchConfig) from the pipeline's own values, the `name:` section over them."""
    from mucode.config import config_from_dict

    where = dict.fromkeys(section, name)
    return config_from_dict(cls, {**own, **section}, source=f"{name} settings", where=where)


def _check_same_config(config: PipelineConfig, path: Path) -> None:
    if not path.exists():
        return
    previous = _resume_view(read_yaml_mapping(path))
    current = _resume_view(config_to_dict(config))
    changed = sorted(k for k in current.keys() | previous.keys() if previous.get(k) != current.get(k))
    if changed:
        raise ValueError(
            f"{path.parent} holds a run with a different config ({', '.join(changed)} differ); resume with the same settings or choose another --out"
        )


def _resume_view(saved: dict[str, Any]) -> dict[str, Any]:
    """The settings that must match on resume: defaults filled in for keys a config.yaml written by an
    older mucode lacks, `method`/`methods` as the list of methods trained, throughput-only keys left out."""
    import dataclasses

    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                for f in dataclasses.fields(PipelineConfig)}  # fmt: skip
    view = {**defaults, **saved}
    view["methods"] = list(view["methods"] or [view["method"]])
    del view["method"]
    for section in ("rollout", "search"):
        view[section] = {k: v for k, v in (view[section] or {}).items() if k not in SECTION_THROUGHPUT_ONLY}
    return {k: v for k, v in view.items() if k not in THROUGHPUT_ONLY}


def _read_marker(folder: Path) -> dict[str, Any] | None:
    marker = folder / DONE
    return json.loads(marker.read_text()) if marker.is_file() else None


def _slug(problems: str) -> str:
    return problems.replace(":", "-").replace("/", "-")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
