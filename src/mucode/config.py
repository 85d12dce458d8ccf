"""Configs: typed dataclasses that load from YAML, take command-line overrides, and are saved next
to every output.

    @dataclass
    class RolloutConfig:
        rollouts: int = option(8, "Trajectories per problem.")

    config = load_config(RolloutConfig, "rollout.yaml", overrides={"temperature": 0.2})
    save_config(config, out_dir / "config.yaml")

Unknown keys are errors that name the key and suggest the closest valid one; values are checked
against the field types and against the ranges of `RANGES` (one table for every config: a field
name means the same thing wherever it appears), so a bad value fails before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar


T = TypeVar("T")

# Valid values by field name, for every config class: (lowest, highest, lowest allowed?, highest
# allowed?); None = unbounded. A field not listed has no range beyond its type.
_POSITIVE = (0, None, False, None)
_AT_LEAST_1 = (1, None, True, None)
_AT_LEAST_0 = (0, None, True, None)
RANGES: dict[str, tuple[float | None, float | None, bool | None, bool | None]] = {
    **dict.fromkeys(
        (
            "temperature",
            "eval_temperature",
            "weight_decay",
            "warmup",
            "lora_dropout",
            "l2_coefficient",
            "ray_gpus_per_actor",
            "iterations",
            "max_failures_shown",
        ),
        _AT_LEAST_0,
    ),
    **dict.fromkeys(("timeout_s", "learning_rate", "epochs"), _POSITIVE),
    **dict.fromkeys(
        (
            "workers",
            "rollouts",
            "turns",
            "n",
            "searches",
            "limit",
            "first",
            "max_live",
            "max_new_tokens",
            "eval_max_new_tokens",
            "eval_n",
            "eval_searches",
            "eval_limit",
            "top_m",
            "tensor_parallel_size",
            "batch_size",
            "micro_batch_size",
            "max_steps",
            "max_length",
            "save_steps",
            "save_total_limit",
            "logging_steps",
            "lora_r",
            "lora_alpha",
            "pairs_per_problem",
            "max_sft_examples",
            "ray_actors",
            "max_feedback_chars",
            "memory_mb",
        ),
        _AT_LEAST_1,
    ),
    "top_p": (0, 1, False, True),
    "holdout_fraction": (0, 1, True, False),
    "seed": (0, 2**63 - 1, True, True),
}


def report_targets(report_to: str) -> list[str]:
    """`--report-to tensorboard,wandb` as a list ([] for "none" or nothing): the trainers' switch,
    shared by the rollout, search and pipeline stages for their final metrics."""
    targets = [t.strip() for t in report_to.split(",") if t.strip()]
    return [] if targets in ([], ["none"]) else targets


def check_range(name: str, value: Any, where: str | None = None) -> None:
    """Raise ValueError `WHERE: got VALUE; it must be RULE` when `value` is outside `RANGES[name]`."""
    rule = RANGES.get(name)
    if rule is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high, low_ok, high_ok = rule
    too_low = low is not None and (value < low or (value == low and not low_ok))
    too_high = high is not None and (value > high or (value == high and not high_ok))
    if too_low or too_high:
        raise ValueError(f"{where or name}: got {value!r}; it must be {_describe(rule)}")


def _describe(rule: tuple[float | None, float | None, bool | None, bool | None]) -> str:
    low, high, low_ok, high_ok = rule
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_ok else '>'} {low}")
    if high is not None:
        parts.append(f"{'<=' if high_ok else '<'} {high}")
    return " and ".join(parts)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    choices: typing.Iterable[str] | None = None,
    factory: typing.Callable[[], Any] | None = None,
    cli_type: Any = None,
) -> Any:
    """A config field and its command-line help (`mucode.cli.options` makes the flag from it):
    `option(8, "Trajectories per problem.")`; `factory` for a mutable default, `choices` for the
    allowed strings, `cli_type` for a flag type other than the annotation's."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = list(choices)
    if cli_type is not None:
        metadata["cli_type"] = cli_type
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_ranges(config: Any) -> None:
    """Check every field of a config dataclass against `RANGES` (for configs built in code)."""
    for f in dataclasses.fields(config):
        check_range(f.name, getattr(config, f.name))


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check (and where lossless, convert) `value` against a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(name, value, option)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"{name}: bad value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ValueError(f"{name}: got {value!r}; choose one of {', '.join(map(repr, choices))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        return origin(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-6` (no dot) as a string
            return float(value)
        except ValueError:
            raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if annotation in (int, float, str, bool) and type(value) is not annotation:
        raise ValueError(f"{name}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def config_from_dict(
    cls: type[T], data: Mapping[str, Any], source: str = "config", where: Mapping[str, str] | None = None
) -> T:
    """Build `cls` from a mapping; unknown keys, wrong types and out-of-range values are errors
    naming the key. `where[key]` says where a key came from (`run.yaml:4`, `--temperature`)."""
    fields = _field_types(cls)
    values = {}
    for key, value in data.items():
        origin = (where or {}).get(key, source)
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ValueError(f"{origin}: unknown key {key!r}{hint}")
        place = origin if origin.startswith("--") else f"{origin}: {key}"
        values[key] = _coerce(place, value, fields[key])
        check_range(key, values[key], place)
    try:
        return cls(**values)
    except ValueError as err:
        raise ValueError(err if source == "config" else f"{source}: {err}") from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file, with errors that name the file and line."""
    return read_yaml_with_lines(path)[0]


def read_yaml_with_lines(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The top-level mapping of a YAML config file and the line of each top-level key; errors are
    one line naming the file, line and column."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
        loaded = yaml.safe_load(text) or {}
        node = yaml.compose(text)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        place = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None)
        raise ValueError(f"{place}: not valid YAML: {problem}{f' ({context})' if context else ''}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of keys to values at the top level")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}
    return loaded, lines


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Defaults, then `base` (e.g. a named preset), then the YAML file (if any), then `overrides`
    (e.g. command-line flags; None values are ignored)."""
    data: dict[str, Any] = dict(base or {})
    where: dict[str, str] = dict.fromkeys(data, "preset")
    if path is not None:
        from_file, lines = read_yaml_with_lines(path)
        data.update(from_file)
        where.update({key: f"{path}:{lines[key]}" if key in lines else str(path) for key in from_file})
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    data.update(flags)
    where.update({key: "--" + key.replace("_", "-") for key in flags})
    return config_from_dict(cls, data, source=str(path) if path else "config", where=where)


def config_to_dict(config: Any) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def save_config(config: Any, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
