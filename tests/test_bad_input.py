"""Bad input through the real CLI (a subprocess each): one `Error:` line that names the file, line
and field or the flag, exit code 2, before any model loads, and nothing left in the output folder
that blocks the corrected command, which then succeeds on the same --out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


PROBLEM = {
    "id": "add",
    "prompt": "Write add(a, b).",
    "public_tests": ["assert add(1, 2) == 3"],
    "private_tests": ["assert add(2, 2) == 4"],
}
TINY_ROLLOUT = ["--turns", "1", "--max-new-tokens", "4", "--workers", "1"]


def mucode(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mucode", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def assert_one_line_error(run: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2 and a stderr of exactly one line `Error: ...` holding every fragment; nothing
    on stderr shows that a model started loading (transformers' or mucode's loading lines)."""
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def problems_file(tmp_path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps(PROBLEM) + "\n")
    return path


def rollout(problems: Path, model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return mucode(
        "rollout", "--problems", str(problems), "--model", str(model), "--out", str(out), *TINY_ROLLOUT, *extra
    )


def test_out_of_range_flags_and_yaml_fail_before_the_model_loads_and_leave_nothing(
    tmp_path, problems_file, tiny_model_dir
):
    out = tmp_path / "run"
    bad_flags = [
        (["--temperature", "-1"], "--temperature: got -1.0; it must be >= 0"),
        (["--timeout-s", "-1"], "--timeout-s: got -1.0; it must be > 0"),
        (["--workers", "0"], "--workers: got 0; it must be >= 1"),
        (["--top-p", "1.5"], "--top-p: got 1.5; it must be > 0 and <= 1"),
        (["--max-live", "0"], "--max-live: got 0; it must be >= 1"),
        (["--first", "0"], "--first: got 0; it must be >= 1"),
    ]
    for flags, message in bad_flags:
        assert_one_line_error(rollout(problems_file, tiny_model_dir, out, *flags), message)
        assert not out.exists()
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("rollouts: 1\nturns: [1,\n")
    assert_one_line_error(
        rollout(problems_file, tiny_model_dir, out, "--config", str(broken_yaml)), f"{broken_yaml}:3:1: not valid YAML"
    )
    bad_value = tmp_path / "bad-value.yaml"
    bad_value.write_text("rollouts: 1\ntemperature: -0.5\n")
    assert_one_line_error(
        rollout(problems_file, tiny_model_dir, out, "--config", str(bad_value)),
        f"{bad_value}:2: temperature: got -0.5",
    )
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text("rollouts: 1\ntempreature: 0.5\n")
    assert_one_line_error(
        rollout(problems_file, tiny_model_dir, out, "--config", str(misspelt)),
        f"{misspelt}:2: unknown key 'tempreature'; did you mean 'temperature'",
    )
    assert not out.exists()
    fixed = rollout(problems_file, tiny_model_dir, out)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "1 trajectories over 1 problems" in fixed.stdout


def test_an_empty_problems_file_is_an_error_not_zero_trajectories(tmp_path, problems_file, tiny_model_dir):
    empty, out = tmp_path / "empty.jsonl", tmp_path / "run"
    empty.write_text("")
    assert_one_line_error(rollout(empty, tiny_model_dir, out), f"{empty}: holds no problems")
    assert not out.exists()
    assert rollout(problems_file, tiny_model_dir, out).returncode == 0


def test_a_mistyped_model_leaves_no_config_that_blocks_the_corrected_command(tmp_path, problems_file, tiny_model_dir):
    out = tmp_path / "run"
    assert_one_line_error(
        rollout(problems_file, Path("smollm2-135"), out), "unknown model 'smollm2-135'", "did you mean 'smollm2-135m'"
    )
    assert_one_line_error(
        rollout(problems_file, tmp_path / "no-such-folder", out), "is not a folder or .gguf file that exists"
    )
    assert not out.exists()
    fixed = rollout(problems_file, tiny_model_dir, out)
    assert fixed.returncode == 0, fixed.stderr[-2000:]


def test_truncated_weights_in_a_model_folder_are_named_before_loading(tmp_path, problems_file, tiny_model_dir):
    broken, out = tmp_path / "broken-model", tmp_path / "run"
    shutil.copytree(tiny_model_dir, broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert_one_line_error(rollout(problems_file, broken, out), f"{weights}: truncated weights")
    assert not out.exists()
    assert rollout(problems_file, tiny_model_dir, out).returncode == 0


def test_a_damaged_cached_preset_is_found_and_not_used(tmp_path, tiny_model_dir):
    """The cache is checked file by file against its manifest (sizes and sha256), not trusted on
    the manifest alone: a damaged copy is refused with the file named (and re-pulled when pulling
    is allowed: tests/test_models.py)."""
    from mucode.generation.models import PRESETS, cache_problem, file_records, populate_cache, preset_dir

    cache = tmp_path / "cache"

    def build(dest: Path) -> dict:
        shutil.copytree(tiny_model_dir, dest, dirs_exist_ok=True)
        return {"preset": "smollm2-135m", "sha256": PRESETS["smollm2-135m"].sha256, "files": file_records(dest)}

    folder = populate_cache(preset_dir("smollm2-135m", cache), build)
    assert cache_problem("smollm2-135m", cache) is None
    weights = next(folder.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte flipped
    weights.write_bytes(bytes(data))
    assert cache_problem("smollm2-135m", cache) == f"{weights} does not have the sha256 that was written"
    run = mucode("models", "list", env={"MUCODE_CACHE": str(cache), "MUCODE_PRESET_SOURCE": "registry"})
    assert run.returncode == 0


def test_a_cut_trajectory_line_names_file_and_line_for_verifier_train_and_relabel(
    tmp_path, problems_file, tiny_model_dir
):
    folder = tmp_path / "rollouts"
    assert rollout(problems_file, tiny_model_dir, folder, "--rollouts", "3").returncode == 0
    path = folder / "trajectories.jsonl"
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][: len(lines[1]) // 2] + "\n" + lines[2])
    out = tmp_path / "verifier"
    train = mucode(
        "verifier",
        "train",
        "--trajectories",
        str(folder),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
        "--preset",
        "cpu-head",
    )
    assert_one_line_error(train, f"{path}:2: not a JSON record")
    assert not out.exists()
    relabel = mucode(
        "generator",
        "relabel",
        "--trajectories",
        str(folder),
        "--method",
        "multi-star",
        "--out",
        str(tmp_path / "sft.jsonl"),
    )
    assert_one_line_error(relabel, f"{path}:2: not a JSON record")
    path.write_text(original)  # the repaired file
    fixed = mucode(
        "generator",
        "relabel",
        "--trajectories",
        str(folder),
        "--method",
        "multi-star",
        "--out",
        str(tmp_path / "sft.jsonl"),
    )
    assert fixed.returncode == 0, fixed.stderr[-2000:]


def test_backends_that_cannot_run_say_so_in_one_line(tmp_path, problems_file, tiny_model_dir):
    out = tmp_path / "run"
    dead = rollout(problems_file, tiny_model_dir, out, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(dead, "--base-url http://127.0.0.1:9/v1: no OpenAI-compatible server answers")
    if shutil.which("vllm") is None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            assert_one_line_error(
                rollout(problems_file, tiny_model_dir, out, "--backend", "vllm"),
                "--backend vllm needs the vllm package",
            )
    assert not out.exists()


def test_search_refuses_a_missing_verifier_before_loading(tmp_path, problems_file, tiny_model_dir):
    out = tmp_path / "search"
    run = mucode(
        "search",
        "--problems",
        str(problems_file),
        "--model",
        str(tiny_model_dir),
        "--verifier",
        str(tmp_path / "nope"),
        "--selector",
        "pt+lv",
        "--out",
        str(out),
        "--turns",
        "1",
        "--n",
        "1",
        "--temperature",
        "0",
    )
    assert_one_line_error(run, f"{tmp_path / 'nope'} holds no verifier")
    assert not out.exists()


def test_quiet_by_default_and_notices_with_verbose(tmp_path, problems_file, tiny_model_dir):
    quiet = rollout(problems_file, tiny_model_dir, tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    for noise in ("Warning", "Loading weights", "loaded ", "pad token"):
        assert noise not in quiet.stderr, (noise, quiet.stderr)
    verbose = mucode(
        "--verbose",
        "rollout",
        "--problems",
        str(problems_file),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "verbose"),
        *TINY_ROLLOUT,
    )
    assert verbose.returncode == 0 and f"loaded {tiny_model_dir}" in verbose.stderr
