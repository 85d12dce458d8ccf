"""One writer per output folder (mucode.store): a second rollout / search / run is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mucode.store import FolderInUse, folder_lock


HOLD = "import sys, time; from mucode.store import folder_lock\nwith folder_lock(sys.argv[1], 'test'):\n    print('held', flush=True); time.sleep(60)"


@pytest.fixture
def held(tmp_path):
    """A folder whose lock another live process holds."""
    folder = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield folder, holder
    if holder.poll() is None:
        holder.kill()
    holder.wait()


def test_a_second_writer_is_refused_with_the_holder_named_and_a_killed_holder_frees_the_folder(held):
    folder, holder = held
    with pytest.raises(FolderInUse, match=f"in use by another `mucode rollout` \\(pid {holder.pid}\\)"):
        with folder_lock(folder, "`mucode rollout`"):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with folder_lock(folder, "`mucode rollout`"):
        assert (folder / ".lock").read_text() == f"pid {os.getpid()}\n"


def test_one_process_may_lock_nested_folders_and_relock_after_release(tmp_path):
    with folder_lock(tmp_path / "run", "`mucode run`"):
        with folder_lock(tmp_path / "run/iter0/rollouts", "`mucode rollout`"):
            pass
    with folder_lock(tmp_path / "run", "`mucode run`"):
        pass


@pytest.mark.parametrize("command", ["rollout", "search", "run"])
def test_the_commands_refuse_a_folder_in_use_with_a_one_line_error(held, command):
    folder, holder = held
    extra = ["--preset", "smoke"] if command == "run" else ["--model", "tiny-random-not-needed"]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mucode", command, *extra, "--out", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"is in use by another `mucode {command}` (pid {holder.pid})" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60  # refused at once, no model loaded


def test_run_check_lists_the_stages_of_a_folder_in_use_and_says_it_is(held, mbpp_dir):
    """`mucode run --check` is how one follows a running run: it lists the stages and says that the
    folder is in use (by whom), where a second run would be refused."""
    folder, holder = held
    result = subprocess.run(
        [sys.executable, "-m", "mucode", "run", "--preset", "smoke", "--problems-path", str(mbpp_dir)]
        + ["--out", str(folder), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "iter0/rollouts" in result.stdout
    assert f"note: {folder} is in use by another `mucode run` (pid {holder.pid})" in result.stdout
