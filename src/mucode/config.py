"""Configs: typed dataclasses that load from YAML, take command-line overrides, and are saved next
to every output.

    config = load_config(RolloutConfig, "rollout.yaml", overrides={"temperature": 0.2})
    save_config(config, out_dir / "config.yaml")

Unknown keys are errors that name the key and suggest the closest valid one; values are checked
against the field types.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


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
    if annotation in (int, float, str, bool) and not (type(value) is annotation):
        raise ValueError(f"{name}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build `cls` from a mapping; unknown keys and wrong types are errors naming the key."""
    fields = _field_types(cls)
    values = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ValueError(f"{source}: unknown key {key!r}{hint}")
        values[key] = _coerce(f"{source}: {key}", value, fields[key])
    return cls(**values)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file, with errors that name the file."""
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of keys to values at the top level")
    return loaded


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Defaults, then `base` (e.g. a named preset), then the YAML file (if any), then `overrides`
    (e.g. command-line flags; None values are ignored)."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data.update(read_yaml_mapping(path))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(cls, data, source=str(path) if path else "config")


def config_to_dict(config: Any) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def save_config(config: Any, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
