"""Linux isolation primitives (namespaces, mounts, privileges, resource limits) through libc.

Which isolation is available depends on the platform and on who runs mucode:
- `root`: each worker's sandbox lives in its own mount, network, IPC and PID namespaces; every program
  runs as a dedicated unprivileged uid (one per worker, unique on the host).
- `userns`: an unprivileged user with user namespaces gets the same namespaces, but programs keep
  the caller's uid (mapped to root inside a namespace that owns nothing on the host).
- `none`: no namespaces (not Linux, or namespaces refused): only resource limits, a session of its
  own and process-group kill. Network and file-system isolation are then missing; a warning says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
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

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECBIT_NOROOT, SECBIT_NOROOT_LOCKED = 1 << 0, 1 << 1
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
SECBIT_NO_CAP_AMBIENT_RAISE, SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 1 << 6, 1 << 7
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

# The only writable places in the sandbox: private tmpfs, emptied after every program.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
# Host folders bound read-only into the sandbox root (symlinks, as on merged-/usr systems, are copied).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICE_NODES = ("null", "zero", "full", "random", "urandom")
# Where the zygote builds the new root before pivoting into it (a mount point in its own namespace only).
NEW_ROOT_STAGING = "/tmp"

_libc = None
_cap_last: int | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.unshare.argtypes = [ctypes.c_int]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
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


def prctl(option: int, value: int, arg3: int = 0) -> None:
    _check(_lib().prctl(option, value, arg3, 0, 0), f"prctl({option})")


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


def enter_user_namespace(mapped_uid: int, mapped_gid: int, extra_flags: int = 0) -> None:
    """Enter a new user namespace in which this process is root, mapped to `mapped_uid` outside."""
    unshare(CLONE_NEWUSER | extra_flags)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {mapped_uid} 1")
    _write("/proc/self/gid_map", f"0 {mapped_gid} 1")


def enter_worker_namespaces(
    mode: str, scratch_mb: int, python_dirs: Iterable[str], hidden_dirs: Iterable[str]
) -> None:
    """Called once by a worker's sandbox parent (the zygote, PID 1 of its PID namespace unless mode
    is 'none'): private mounts, no network, private IPC, and a new root file system.

    The new root is an empty read-only tmpfs into which only the system folders (`SYSTEM_DIRS`) and
    `python_dirs` (the standard library) are bound read-only; `hidden_dirs` (installed packages,
    whose data files may hold hidden tests) are covered by empty read-only tmpfs. The caller's home,
    project folders, /run (host sockets), /sys and the host's /proc are simply not there; /proc is a
    fresh mount of the worker's PID namespace and /dev holds a few device nodes. The only network
    interface is a loopback that is down, so connect() fails with ENETUNREACH.

    In 'userns' mode the zygote then enters a second user namespace: every mount above is locked
    (cannot be unmounted or made writable from there, as bubblewrap does) and programs, which drop
    every capability, cannot change them at all.
    """
    if mode == "none":
        return
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    _build_root(NEW_ROOT_STAGING, scratch_mb, python_dirs, hidden_dirs)
    _pivot_root(NEW_ROOT_STAGING)
    if mode == "userns":
        enter_user_namespace(0, 0, CLONE_NEWNS)


def scratch_devices() -> dict[str, int]:
    """st_dev of each scratch folder: the worker checks them before wiping (a program that could
    unmount one would otherwise make the worker wipe whatever lies beneath)."""
    return {d: os.stat(d).st_dev for d in SCRATCH_DIRS}


def _bind(source: str, target: str, flags: int = MS_NOSUID | MS_NODEV) -> None:
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        open(target, "a").close()
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)


def _build_root(root: str, scratch_mb: int, python_dirs: Iterable[str], hidden_dirs: Iterable[str]) -> None:
    os.umask(0o022)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            os.symlink(os.readlink(directory), root + directory)
        elif os.path.isdir(directory):
            _bind(directory, root + directory)
    bound = [d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    for directory in sorted({os.path.realpath(d) for d in python_dirs if os.path.isdir(d)}):
        if not any(directory == b or directory.startswith(b + "/") for b in bound):
            _bind(directory, root + directory)
            bound.append(directory)
    for directory in sorted({os.path.realpath(d) for d in hidden_dirs}):
        if os.path.isdir(root + directory):
            mount(
                "tmpfs", root + directory, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0755"
            )
    os.makedirs(root + "/dev", mode=0o755)
    mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for node in DEVICE_NODES:
        if os.path.exists("/dev/" + node):
            _bind("/dev/" + node, f"{root}/dev/{node}", MS_NOSUID | MS_NOEXEC)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", mode=0o555)
    # Mounted before the pivot: in a user namespace the kernel only allows a new proc mount while a
    # fully visible one exists. It shows the worker's PID namespace only.
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(root + "/run", mode=0o755)  # empty: no host sockets
    for directory in SCRATCH_DIRS:
        os.makedirs(root + directory, mode=0o755, exist_ok=True)
        mount("tmpfs", root + directory, "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_mb}m,mode=1777")
    mount(None, root + "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def _pivot_root(root: str) -> None:
    """Make `root` the file system root and detach the old one entirely."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: unsupported architecture {platform.machine()}")
    os.chdir(root)
    _check(_lib().syscall(number, b".", b"."), "pivot_root")
    _check(_lib().umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def set_resource_limits(limits: Limits, n_tests: int = 1) -> None:
    """RLIMITs of a sandboxed process that serves `n_tests` tests (inherited by all it starts)."""
    mib = 1024 * 1024
    for name, value in (
        ("RLIMIT_AS", limits.memory_mb * mib),
        ("RLIMIT_NPROC", limits.max_processes),
        ("RLIMIT_NOFILE", limits.max_open_files),
        ("RLIMIT_FSIZE", limits.max_file_size_mb * mib),
        ("RLIMIT_CPU", limits.cpu_time_for(n_tests)),
        ("RLIMIT_CORE", 0),
    ):
        if hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (value, value))


def limit_own_memory(extra_mb: int) -> None:
    """Cap this process's address space at what it maps now plus `extra_mb` (soft and hard limit)."""
    if not sys.platform.startswith("linux"):
        return
    with open("/proc/self/statm") as handle:
        mapped = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + extra_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def drop_privileges(uid: int | None) -> None:
    """Lose every capability for good: empty bounding and ambient sets, root gets no capabilities
    back from execve (locked securebits), then become `uid` (root mode) and clear what is left.
    `no_new_privs` makes setuid binaries useless too."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(_last_capability() + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(
        PR_SET_SECUREBITS,
        SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
    )
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_lib().capset(header, data), "capset")
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def _last_capability() -> int:
    global _cap_last
    if _cap_last is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as handle:
                _cap_last = int(handle.read())
        except OSError:
            _cap_last = 40
    return _cap_last
