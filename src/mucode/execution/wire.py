"""Length-prefixed frames over file descriptors (blocking on the sandboxed side)."""

from __future__ import annotations

import os
import struct
from typing import Callable


HEADER = struct.Struct(">I")


def send_frame(fd: int, payload: bytes) -> None:
    data = HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exact(fd: int, size: int, before_read: Callable[[], None] | None = None) -> bytes:
    """`size` bytes from `fd`; `before_read()` runs before every read (to wait with a deadline)."""
    chunks, remaining = [], size
    while remaining:
        if before_read is not None:
            before_read()
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(fd: int, max_bytes: int = 1 << 31) -> bytes:
    (size,) = HEADER.unpack(read_exact(fd, HEADER.size))
    if size > max_bytes:
        raise ValueError(f"frame of {size} bytes exceeds the limit of {max_bytes}")
    return read_exact(fd, size)
