"""`imagekit diff`'s two sides read in this process (lint/native.py's reader), without an appliance.

What libguestfs does for diff is done here the same way: the root filesystem is the first one holding
/etc/fstab, a separate /boot the first other one holding /grub or /boot/grub, mounted over the root's
/boot; every path below the root is listed and every regular file hashed (symlinks not followed),
and the text files compared are read only up to diff.MAX_TEXT.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from imagekit.diff.compare import MAX_TEXT, Side, cmdline, dpkg_status, file_changes, from_manifest
from imagekit.lint.native import READABLE, NativeView, Node, open_native
from imagekit.lint.view import UnreadableFile
from imagekit.manifest import Manifest
from imagekit.util.errors import UsageError


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.h.update(data)
        return len(data)


class Mounted:
    """The root filesystem of one image with its separate /boot (if any) over the root's /boot."""

    def __init__(self, view: NativeView, image: Path) -> None:
        self.view = view
        self.root, self.boot = self._choose(image)

    def _choose(self, image: Path) -> tuple[str, str | None]:
        devices = sorted(f.device for f in self.view.filesystems if f.type in READABLE)
        if not devices:
            raise UsageError(f"{image}: no filesystem the native reader can read (not a disk image?)")
        root = boot = None
        for dev in devices:
            try:
                if self.view.kind(dev, "/etc/fstab") == "file" and root is None:
                    root = dev
                elif boot is None and "dir" in (self.view.kind(dev, "/grub"), self.view.kind(dev, "/boot/grub")):
                    boot = dev
            except UnreadableFile:
                continue
        if root is None:
            raise UsageError(f"{image}: no filesystem holds /etc/fstab (not a Linux root?)")
        if boot is not None and self.view.kind(root, "/boot") != "dir":
            boot = None
        return root, boot

    def where(self, path: str) -> tuple[str, str]:
        """(device, path on it) for an absolute path of the mounted tree."""
        if self.boot is not None and (path == "/boot" or path.startswith("/boot/")):
            return self.boot, path[len("/boot"):] or "/"
        return self.root, path

    def kind(self, path: str) -> str | None:
        return self.view.kind(*self.where(path))

    def walk(self) -> list[tuple[str, str, Node]]:
        """(path, device, node) for every path of the mounted tree."""
        out = []
        for path, node in self.view.walk(self.root):
            if self.boot is not None and path.startswith("/boot/"):
                continue  # hidden under the boot filesystem
            out.append((path, self.root, node))
        if self.boot is not None:
            out += [("/boot" + path, self.boot, node) for path, node in self.view.walk(self.boot)]
        return out

    def text(self, path: str, limit: int) -> str | None:
        device, inner = self.where(path)
        if self.view.kind(device, inner) != "file":
            return None
        size = self.view.size(device, inner) or 0
        if size > limit:
            return f"({size} bytes: too large to compare)\n"
        data = self.view.read(device, inner, limit)
        return None if data is None else data.decode(errors="replace")

    def sha256(self, path: str, device: str, node: Node) -> str:
        out = _Hasher()
        self.view.copy_out(device, path, node, out)  # type: ignore[arg-type]
        return out.h.hexdigest()


def read_sides_native(images: tuple[Path, Path], manifests: list[Manifest | None], progress: Any) -> Any:
    """Both sides (diff.Side) read natively; NotNative when an image cannot be read here."""
    with ExitStack() as stack:
        views = [stack.enter_context(open_native(p)) for p in images]
        sides = []
        mounted = []
        for view, path, manifest in zip(views, images, manifests, strict=True):
            with progress.stage("diff", f"read {path.name}"):
                m = Mounted(view, path)
                mounted.append(m)
                side = from_manifest(manifest) if manifest else Side()
                try:
                    if not side.packages and (status := m.text("/var/lib/dpkg/status", MAX_TEXT)) is not None:
                        side.packages = dpkg_status(status)
                    for rel in ("/boot/grub/menu.lst", "/boot/boot/grub/menu.lst"):
                        if (menu := m.text(rel, MAX_TEXT)) is not None:
                            side.boot["menu.lst"] = menu
                            side.boot["cmdline"] = cmdline(menu) or ""
                            break
                    if (fstab := m.text("/etc/fstab", MAX_TEXT)) is not None:
                        side.boot["fstab"] = fstab
                    entries = m.walk()
                    side.paths = {p for p, _, _ in entries}
                    side.sums = {p: m.sha256(p, dev, node) for p, dev, node in entries if node.kind == "file"}
                    side.sizes = {p: node.size for p, _, node in entries}
                except UnreadableFile as exc:
                    raise UsageError(f"{path}: cannot read {exc.path} on {exc.device}: {exc.reason}") from None
                sides.append(side)
        changed = file_changes(sides[0], sides[1])
        for side, keep in ((sides[0], "added"), (sides[1], "removed")):
            wanted = {c.name for c in changed if c.change != keep}
            side.sizes = {p: s for p, s in side.sizes.items() if p in wanted}
        return sides[0], sides[1]
