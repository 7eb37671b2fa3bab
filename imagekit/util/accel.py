"""Is KVM really usable? Probe once, remember, and fall back to TCG.

On some hosts /dev/kvm exists but QEMU with KVM asserts (`kvm_buf_set_msrs`) or hangs as soon as
a Linux kernel starts. So the probe boots a real kernel under KVM to its first panic (no root
device, `panic=-1`, `-no-reboot`): a working KVM gets there in about a second and QEMU exits; a
broken one crashes or hangs and is killed. The verdict is cached per host kernel and QEMU binary.
`IMAGEKIT_ACCEL=kvm|tcg` overrides the probe.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imagekit.util.cache import cache_dir
from imagekit.util.errors import CommandTimedOut, UsageError
from imagekit.util.run import run

log = logging.getLogger("imagekit.util.accel")

PROBE_SECONDS = 15.0
ACCELS = ("kvm", "tcg")


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str  # why: "probe booted a kernel", "KVM hung", "forced by IMAGEKIT_ACCEL"

    def libguestfs_env(self) -> dict[str, str]:
        """Settings for libguestfs' direct backend (it has no TCG fallback of its own)."""
        if self.name == "tcg":
            return {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
        return {"LIBGUESTFS_BACKEND": os.environ.get("LIBGUESTFS_BACKEND", "direct")}

    def qemu_args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def _probe_kernel() -> str | None:
    for path in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        if os.access(path, os.R_OK):
            return path
    return None


def _probe(qemu: str) -> Accel:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel("tcg", "/dev/kvm is missing or not accessible")
    kernel = _probe_kernel()
    with tempfile.TemporaryDirectory(prefix="imagekit-kvm-") as tmp:
        log = Path(tmp) / "serial.log"
        argv = [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "256", "-nodefaults",
                "-display", "none", "-no-reboot", "-serial", f"file:{log}"]
        if kernel:
            argv += ["-kernel", kernel, "-append", "console=ttyS0 panic=-1 root=/dev/imagekit-kvm-probe"]
        else:  # no kernel to try: at least see that firmware runs
            argv += ["-chardev", f"file,id=dbg,path={log}", "-device", "isa-debugcon,iobase=0x402,chardev=dbg"]
        try:
            proc = run(argv, check=False, input=b"", stdout=subprocess.DEVNULL, timeout=PROBE_SECONDS if kernel else 3)
        except CommandTimedOut:
            if not kernel and "SeaBIOS" in log.read_text(errors="replace"):
                return Accel("kvm", "firmware ran under KVM (no kernel to probe with)")
            return Accel("tcg", f"QEMU with KVM hung for {PROBE_SECONDS:.0f}s booting a probe kernel")
        text = log.read_text(errors="replace")
        if proc.returncode == 0 and "Kernel panic" in text:
            return Accel("kvm", "a probe kernel booted under KVM")
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        return Accel("tcg", f"QEMU with KVM failed: {err[-1] if err else f'status {proc.returncode}'}")


def detect(requested: str | None = None) -> Accel:
    """The accelerator to use: `requested` (from --accel), IMAGEKIT_ACCEL, or the cached probe."""
    forced = requested or os.environ.get("IMAGEKIT_ACCEL")
    if forced:
        if forced not in ACCELS:
            raise UsageError(f"--accel: {forced!r} is not one of {', '.join(ACCELS)}")
        return Accel(forced, "requested")
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return Accel("tcg", "qemu-system-x86_64 not found")
    key = f"{platform.release()}|{os.stat(qemu).st_mtime_ns}|{os.access('/dev/kvm', os.W_OK)}"
    cached = cache_dir() / "accel.json"
    try:
        data = json.loads(cached.read_text())
        if data.get("key") == key:
            return Accel(data["name"], data["reason"] + " (cached)")
    except (OSError, ValueError, KeyError):
        pass
    return _probe_once(qemu, key, cached)


@functools.cache
def _probe_once(qemu: str, key: str, cached: Path) -> Accel:
    """Probe and remember the verdict; once per process, so an unwritable cache warns once and probes once."""
    accel = _probe(qemu)
    remember(cached, {"key": key, "name": accel.name, "reason": accel.reason})
    return accel


def remember(cached: Path, verdict: dict[str, str]) -> None:
    """Write the verdict to the cache, best-effort: an unwritable cache costs a probe next time, never a failure."""
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(verdict))
        tmp.replace(cached)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        log.warning("warning: cannot cache the KVM probe in %s (%s); probing again next time",
                    cached, exc.strerror or exc)
