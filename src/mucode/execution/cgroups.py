"""Per-program memory and process limits through a cgroup, where the host lets mucode make one.

Each worker's judge makes one cgroup (a child of its own, on cgroup v1 in the `memory` and `pids`
hierarchies; on cgroup v2 a sibling of its own, under a parent that delegates both controllers).
The zygote keeps descriptors of its folders (opened before it leaves the host's file system), sets
the limits before each program and moves each program into it before the program drops its
privileges; a worker runs one program at a time, so the cgroup's limits are that program's. Where no
cgroup can be made, `open_program_cgroup` returns None with the reason, and only per-process
resource limits (RLIMIT_AS, RLIMIT_NPROC) apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


V1_CONTROLLERS = ("memory", "pids")
_PREFIX = "mucode-"


@dataclass
class ProgramCgroup:
    """The cgroup that holds one worker's program (and everything it starts)."""

    version: int
    folders: list[str]  # v1: the memory and the pids cgroup; v2: one cgroup
    fds: list[int] = field(default_factory=list)
    _set: tuple[int, int] | None = None

    @property
    def mechanism(self) -> str:
        if self.version == 1:
            return "cgroup v1 (memory.limit_in_bytes, memory.memsw.limit_in_bytes, pids.max)"
        return "cgroup v2 (memory.max, memory.swap.max, pids.max)"

    def open(self) -> None:
        self.fds = [os.open(folder, os.O_RDONLY | os.O_DIRECTORY) for folder in self.folders]

    def _write(self, name: str, value: str) -> bool:
        for fd in self.fds:
            try:
                target = os.open(name, os.O_WRONLY, dir_fd=fd)
            except FileNotFoundError:
                continue
            try:
                os.write(target, value.encode())
            finally:
                os.close(target)
            return True
        return False

    def _read(self, name: str) -> str:
        for fd in self.fds:
            try:
                target = os.open(name, os.O_RDONLY, dir_fd=fd)
            except FileNotFoundError:
                continue
            try:
                return os.read(target, 4096).decode()
            finally:
                os.close(target)
        return ""

    def set_limits(self, memory_mb: int, max_processes: int) -> None:
        """Limits for the next program (the cgroup is empty: the previous program is gone)."""
        if self._set == (memory_mb, max_processes):
            return
        memory = str(memory_mb * 1024 * 1024)
        if self.version == 1:
            self._write("memory.memsw.limit_in_bytes", "-1")  # it may never be below the memory limit
            self._write("memory.limit_in_bytes", memory)
            self._write("memory.memsw.limit_in_bytes", memory)  # no swap beyond the limit
        else:
            self._write("memory.max", memory)
            self._write("memory.swap.max", "0")
        self._write("pids.max", str(max_processes))
        self._set = (memory_mb, max_processes)

    def enter(self) -> None:
        """Move the calling process into the cgroup ("0" is the writer itself, in v1 and v2)."""
        for fd in self.fds:
            target = os.open("cgroup.procs", os.O_WRONLY, dir_fd=fd)
            try:
                os.write(target, b"0")
            finally:
                os.close(target)

    def oom_kills(self) -> int:
        """How many processes of the cgroup the kernel killed for memory, so far."""
        text = self._read("memory.oom_control" if self.version == 1 else "memory.events")
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        for folder in self.folders:
            try:
                os.rmdir(folder)
            except OSError:
                pass


def _own_cgroups() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    found = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                found[controller] = path
    return found


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of each cgroup file system."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            dash = fields.index("-")
            fstype = fields[dash + 1]
            if fstype in ("cgroup", "cgroup2"):
                found.append((fields[3], fields[4], fstype, set(fields[dash + 3].split(","))))
    return found


def _folder(mount_root: str, mount_point: str, path: str) -> str | None:
    if mount_root == "/":
        return mount_point + path.rstrip("/") if path != "/" else mount_point
    if path == mount_root or path.startswith(mount_root + "/"):
        return mount_point + path[len(mount_root) :]
    return None


def _remove_stale(parent: str) -> None:
    """Empty cgroups left by judges that were killed (named after the judge's pid)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name[len(_PREFIX) :]
        if name.startswith(_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass


def _make(parent: str) -> str:
    _remove_stale(parent)
    folder = os.path.join(parent, f"{_PREFIX}{os.getpid()}")
    os.mkdir(folder, 0o755)
    return folder


def _v1(own: dict[str, str], mounts) -> ProgramCgroup:
    folders = []
    try:
        for controller in V1_CONTROLLERS:
            mount = next((m for m in mounts if m[2] == "cgroup" and controller in m[3]), None)
            if mount is None or controller not in own:
                raise OSError(f"no cgroup v1 {controller} hierarchy")
            parent = _folder(mount[0], mount[1], own[controller])
            if parent is None or not os.path.isdir(parent):
                raise OSError(f"this process's {controller} cgroup is not visible")
            folders.append(_make(parent))
    except OSError:
        ProgramCgroup(1, folders).remove()
        raise
    return ProgramCgroup(1, folders)


def _v2(own: dict[str, str], mounts) -> ProgramCgroup:
    mount = next((m for m in mounts if m[2] == "cgroup2"), None)
    if mount is None or "" not in own:
        raise OSError("no cgroup v2 hierarchy")
    folder = _folder(mount[0], mount[1], own[""])
    if folder is None:
        raise OSError("this process's cgroup v2 is not visible")
    # A cgroup with processes cannot pass controllers to children (only the root may): unless ours
    # is the root, use a sibling of our own cgroup.
    parent = folder if folder == mount[1] else os.path.dirname(folder)
    with open(os.path.join(parent, "cgroup.controllers")) as handle:
        available = set(handle.read().split())
    if not {"memory", "pids"} <= available:
        raise OSError(f"cgroup v2 at {parent} offers no memory and pids controllers")
    with open(os.path.join(parent, "cgroup.subtree_control")) as handle:
        missing = {"memory", "pids"} - set(handle.read().split())
    if missing:
        with open(os.path.join(parent, "cgroup.subtree_control"), "w") as handle:
            handle.write(" ".join(f"+{c}" for c in sorted(missing)))
    return ProgramCgroup(2, [_make(parent)])


def open_program_cgroup() -> tuple[ProgramCgroup | None, str]:
    """A new cgroup for this worker's programs, or None and why not."""
    try:
        own, mounts = _own_cgroups(), _mounts()
    except OSError as err:
        return None, f"cgroups unreadable ({err.strerror})"
    failures = []
    for name, make in (("v2", _v2), ("v1", _v1)):
        try:
            cgroup = make(own, mounts)
            cgroup.open()
            return cgroup, cgroup.mechanism
        except (OSError, ValueError) as err:
            failures.append(f"{name}: {getattr(err, 'strerror', None) or err}")
    return None, "; ".join(failures)
