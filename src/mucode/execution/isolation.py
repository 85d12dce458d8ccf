"""Linux isolation primitives (namespaces, mounts, privileges, resource limits) through libc.

Which isolation is available depends on the platform and on who runs mucode:
- `root`: each worker's sandbox lives in its own mount, network and IPC namespaces, every program
  in its own PID namespace and runs as a dedicated unprivileged uid (one per worker).
- `userns`: an unprivileged user with user namespaces gets the same namespaces, but programs keep
  the caller's uid (mapped to root inside a namespace that owns nothing on the host).
- `none`: no namespaces (not Linux, or namespaces refused): only resource limits, a session of its
  own and process-group kill. Network and file-system isolation are then missing; a warning says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys
from typing import Iterable

from mucode.execution.limits import Limits

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38

# World-writable places a program could otherwise leave files in; each worker gets private tmpfs here.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
# Pseudo file systems that must stay as they are (remounting them read-only is refused or harmful).
_KEEP_WRITABLE_FSTYPES = {"proc", "sysfs", "devtmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "tmpfs", "autofs", "binfmt_misc", "debugfs", "tracefs", "securityfs", "pstore", "bpf", "fusectl", "configfs", "hugetlbfs", "nsfs"}

_libc = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.unshare.argtypes = [ctypes.c_int]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_lib().unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_lib().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def prctl(option: int, value: int) -> None:
    _check(_lib().prctl(option, value, 0, 0, 0), f"prctl({option})")


def die_with_parent() -> None:
    """Get SIGKILL when the parent exits, so no process outlives the one supervising it."""
    if sys.platform.startswith("linux"):
        prctl(PR_SET_PDEATHSIG, 9)


def detect_mode() -> str:
    """The strongest isolation this process can set up: 'root', 'userns' or 'none'."""
    if not sys.platform.startswith("linux"):
        return "none"
    wanted = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID
    for mode, flags in (("root", wanted), ("userns", CLONE_NEWUSER | wanted)):
        if mode == "root" and os.geteuid() != 0:
            continue
        pid = os.fork()
        if pid == 0:
            code = 0 if _lib().unshare(flags) == 0 else 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            return mode
    return "none"


def enter_worker_namespaces(mode: str, scratch_mb: int, readable: Iterable[str] = ()) -> None:
    """Called once by a worker's sandbox parent: private mounts, no network, private IPC.

    Afterwards the file system is read-only except for fresh tmpfs on SCRATCH_DIRS, and the only
    network interface is a loopback that is down, so connect() fails with ENETUNREACH. In root mode
    the folders in `readable` (the Python installation, `sys.path`) are made reachable by the
    sandbox uid even when they sit under a private folder such as /root: that folder is covered by
    an empty tmpfs and only the needed folders are bound back, so the rest of it stays hidden.
    """
    if mode == "none":
        return
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC
    if mode == "userns":
        unshare(CLONE_NEWUSER | flags)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    else:
        unshare(flags)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if mode == "root":
        _expose_to_others(readable)
    _make_read_only(_mount_points())
    for directory in SCRATCH_DIRS:
        if os.path.isdir(directory):
            mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_mb}m,mode=1777")


def _blocking_ancestor(path: str) -> str | None:
    """The topmost folder on the way to `path` that other users cannot enter, if any."""
    current = "/"
    for part in [p for p in os.path.normpath(path).split("/") if p]:
        current = os.path.join(current, part)
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return None
        if not mode & 0o001:
            return current
    return None


def _expose_to_others(paths: Iterable[str]) -> None:
    wanted = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})
    outermost = [p for p in wanted if not any(p != q and p.startswith(q + "/") for q in wanted)]
    by_ancestor: dict[str, list[str]] = {}
    for path in outermost:
        ancestor = _blocking_ancestor(path)
        if ancestor is not None and ancestor != path:
            by_ancestor.setdefault(ancestor, []).append(path)
    for ancestor, inner in by_ancestor.items():
        fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in inner]
        mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for path, fd in zip(inner, fds):
            os.makedirs(path, mode=0o755, exist_ok=True)
            for parent in _parents_between(ancestor, path):
                os.chmod(parent, 0o755)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
        mount(None, ancestor, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _parents_between(top: str, path: str) -> list[str]:
    parents = []
    current = path
    while current != top and current != "/":
        parents.append(current)
        current = os.path.dirname(current)
    return parents


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _mount_points() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount visible to this process, parents before children."""
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            points.append((fields[4].replace("\\040", " "), fields[sep + 1]))
    return points


def _make_read_only(points: Iterable[tuple[str, str]]) -> None:
    for target, fstype in points:
        if fstype in _KEEP_WRITABLE_FSTYPES:
            continue
        try:
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        except OSError:
            # Some mounts refuse (e.g. locked flags in a user namespace); their files remain
            # protected by ownership only.
            pass


def set_resource_limits(limits: Limits) -> None:
    """RLIMITs of a sandboxed process (inherited by everything it starts)."""
    mib = 1024 * 1024
    for name, value in (
        ("RLIMIT_AS", limits.memory_mb * mib),
        ("RLIMIT_NPROC", limits.max_processes),
        ("RLIMIT_NOFILE", limits.max_open_files),
        ("RLIMIT_FSIZE", limits.max_file_size_mb * mib),
        ("RLIMIT_CPU", limits.cpu_time_s),
        ("RLIMIT_CORE", 0),
    ):
        if hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (value, value))


def drop_privileges(uid: int) -> None:
    """Become `uid` for good (no supplementary groups, no way back, no setuid gains)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
