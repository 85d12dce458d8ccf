"""Command-line options generated from config dataclasses: `--config FILE` first, then one flag
per field (its help text comes from the field's metadata), flags overriding the file."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from mucode.config import load_config


T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _click_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args else annotation
    return {int: int, float: float, str: str, bool: bool}.get(base, str)


def config_options(cls: type) -> Callable[[F], F]:
    """Add `--config` and a `--field-name` option for every field of `cls` (default: unset)."""
    hints = typing.get_type_hints(cls)

    def decorate(command: F) -> F:
        for f in reversed(dataclasses.fields(cls)):
            flag = "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help", "")
            default = f.default if f.default is not dataclasses.MISSING else None
            if hints[f.name] is bool:
                command = click.option(
                    f"{flag}/--no-{f.name.replace('_', '-')}", f.name, default=None, help=help_text
                )(command)
            else:
                choices = f.metadata.get("choices")
                kind = click.Choice(choices) if choices else f.metadata.get("cli_type") or _click_type(hints[f.name])
                command = click.option(
                    flag, f.name, type=kind, default=None, help=f"{help_text}  [default: {default}]"
                )(command)
        return click.option(
            "--config",
            "config_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="YAML file of options (flags override it).",
        )(command)

    return decorate


def build_config(cls: type[T], config_file: Path | None, flags: dict[str, Any]) -> T:
    try:
        return load_config(cls, config_file, flags)
    except ValueError as err:
        raise click.ClickException(str(err)) from None


def say_trained(result: Any) -> None:
    """The last line of a training command (rank 0 of a launched run only)."""
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(
            f"saved {result.model_dir} after {result.global_step} updates "
            f"(loss {result.train_loss:.4f}, {result.seconds:.0f} s)"
        )


def preset_option(
    presets: typing.Iterable[str], help: str = "Start from a preset (file and flags override it)"
) -> Any:
    """`--preset NAME`, one of `presets`."""
    names = list(presets)
    return click.option("--preset", type=click.Choice(names), default=None, help=f"{help}: {', '.join(names)}.")
