"""Watch a host file with inotify: did anything (imagekit, qemu-img, the libguestfs appliance's QEMU) open it?

inotify reports every open(2) of the file by any process of this host, however short, and needs no
tracing of the process tree; the events wait in the queue until read, so the check is deterministic.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path
from types import TracebackType

IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, os.O_NONBLOCK
EVENT = struct.Struct("iIII")


class OpenWatch:
    """`with OpenWatch(path) as w: ...; assert w.opens() == 0`"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = -1

    def __enter__(self) -> OpenWatch:
        self.fd = self._libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self._libc.inotify_add_watch(self.fd, os.fsencode(self.path), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {self.path}")
        return self

    def opens(self) -> int:
        """Open and read events since the watch began (or since the last call)."""
        count = 0
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return count
            pos = 0
            while pos < len(data):
                _, mask, _, length = EVENT.unpack_from(data, pos)
                count += bool(mask & (IN_OPEN | IN_ACCESS))
                pos += EVENT.size + length

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        os.close(self.fd)
