"""Read a boot's serial console: did the guest reach the probe's sentinel, and if not, why not.

`Watcher` is fed lines as they arrive (with seconds since QEMU started) and says when the boot has
reached an end state, so the harness can stop QEMU at once instead of waiting for the timeout;
`Watcher.verdict()` turns what it saw into a `Verdict`. The patterns are the messages GRUB 2,
Linux, initramfs-tools and systemd print, and, for HVM images, what the firmware (SeaBIOS, OVMF) and
GRUB 2 print before a kernel starts; every reason names the console line it came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

SENTINEL = "IMAGEKIT-PROBE: done"
PROBE_PREFIX = "IMAGEKIT-PROBE:"
GRUB_PREFIX = "imagekit-pvgrub:"

_SPACES = re.compile(r" {4,}")
_ANSI = re.compile(r"\x1b\[[0-9;?=]*[A-Za-z]|\x1bc|\x1b[()][A-Z0-9]|\x1b[=>]")


class Reason(StrEnum):
    BOOTED = "booted"
    FAILED_UNITS = "failed-units"
    MENU_LST_NOT_FOUND = "menu-lst-not-found"
    NO_ENTRY_LOADED = "no-entry-loaded"
    # --loader pvgrub097, decided before QEMU starts (imagekit/boot/pvgrub097.py)
    PVGRUB_KERNEL_FORMAT = "pvgrub-kernel-format"
    PVGRUB_NOT_XEN_PV = "pvgrub-not-xen-pv"
    PVGRUB_UNKNOWN_COMMAND = "pvgrub-unknown-command"
    PVGRUB_UNREADABLE = "pvgrub-unreadable"
    FIRMWARE_NO_BOOTABLE_DEVICE = "firmware-no-bootable-device"
    GRUB_RESCUE = "grub-rescue"
    GRUB_CFG_NOT_FOUND = "grub-cfg-not-found"
    KERNEL_PANIC = "kernel-panic"
    ROOT_NOT_FOUND = "root-not-found"
    INITRAMFS_SHELL = "initramfs-shell"
    EMERGENCY_MODE = "emergency-mode"
    LOGIN_PROMPT_ONLY = "login-prompt-only"
    NO_OUTPUT = "no-output"
    STOPPED = "stopped"
    TIMEOUT = "timeout"


EXPLAIN: dict[Reason, str] = {
    Reason.BOOTED: "the guest reached userspace and the probe found no failed units",
    Reason.FAILED_UNITS: "the guest booted but systemd units failed",
    Reason.MENU_LST_NOT_FOUND: "PV-GRUB found no menu.lst where this AKI variant looks",
    Reason.NO_ENTRY_LOADED: "GRUB could not load the default entry nor any fallback",
    Reason.PVGRUB_KERNEL_FORMAT: "Xen's domain builder cannot load the kernel PV-GRUB read (not an ELF, or a "
                                 "bzImage payload PV-GRUB cannot decompress)",
    Reason.PVGRUB_NOT_XEN_PV: "the kernel has no Xen PV ELF notes Xen's loader accepts: it cannot start as a PV guest",
    Reason.PVGRUB_UNKNOWN_COMMAND: "GRUB 0.97 failed the entry with Error 27 (a menu-only command inside it) and "
                                   "no fallback booted",
    Reason.PVGRUB_UNREADABLE: "GRUB 0.97 could not load the entry (a device or file it cannot read, or no "
                              "kernel: its error named) and no fallback booted",
    Reason.FIRMWARE_NO_BOOTABLE_DEVICE: "the firmware found nothing it could boot on the disk",
    Reason.GRUB_RESCUE: "GRUB 2 could not find its own files and stopped at the rescue prompt",
    Reason.GRUB_CFG_NOT_FOUND: "GRUB 2 found no grub.cfg (or no entry in it) and stopped at its prompt",
    Reason.KERNEL_PANIC: "the kernel panicked",
    Reason.ROOT_NOT_FOUND: "the kernel or initramfs could not find the root filesystem",
    Reason.INITRAMFS_SHELL: "the initramfs gave up and dropped to a shell",
    Reason.EMERGENCY_MODE: "systemd entered emergency mode",
    Reason.LOGIN_PROMPT_ONLY: "a login prompt appeared but the probe never reported",
    Reason.NO_OUTPUT: "nothing at all appeared on the console",
    Reason.STOPPED: "the guest stopped before the probe reported",
    Reason.TIMEOUT: "the probe did not report before the timeout",
}


@dataclass(frozen=True)
class Line:
    t: float  # seconds since QEMU started
    text: str


@dataclass(frozen=True)
class Verdict:
    reason: Reason
    detail: str  # one line: the console line (or fact) the reason comes from
    line_no: int | None  # index into the log's lines, for context
    entry_title: str | None  # the GRUB entry whose kernel started (None if GRUB was not used)
    fallback: bool  # True when GRUB fell back from the default entry
    grub_errors: tuple[str, ...]
    kernel_version: str | None
    t_first_kernel_line: float | None
    t_sentinel: float | None
    t_bootloader: float | None  # first line from GRUB (the firmware's own cost, for HVM)
    failed_units: tuple[str, ...]
    system_state: str | None  # from `systemctl is-system-running`, as the probe saw it
    login_prompt: bool

    @property
    def booted(self) -> bool:
        return self.reason is Reason.BOOTED


def clean(raw: str) -> str:
    """A console line without terminal escapes and carriage returns."""
    return _ANSI.sub("", raw).replace("\r", "").rstrip()


# (pattern, reason) checked on every line; the first end state seen wins, except that a more specific
# cause seen just before a panic or a shell (root not found) is kept.
# up to the first quote: GRUB 2 writing to `serial console` puts both copies of a line on ttyS0 (OVMF, sercon)
_GRUB_BOOTING = re.compile(r"Booting `(?P<title>.*?)'")
_GRUB_FALLBACK = re.compile(r"Falling back to `(?P<title>.*?)'")
_GRUB_ERROR = re.compile(r"^\s*error: (?P<msg>.+?)\.?$")
# GRUB 2 writing to `serial console` under SeaBIOS's sercon: both land on ttyS0, interleaved, so one line
# can hold two messages ("...' not founderror: you need to load the kernel first.") or a message and what
# follows it ("no such device: 0a1b.GNU GRUB  version 2.06").
_GRUB_ERRORS = re.compile(r"error: (?P<msg>.+?)(?:\.(?=[A-Z]|\s|$)|(?=error: )|$)")
_KERNEL_BANNER = re.compile(r"Linux version (?P<version>\S+)")
# The initramfs taking over (initramfs-tools, dracut, the kernel running it), then systemd as PID 1.
_INITRD = re.compile(r"Run /init as init process|Loading, please wait|Begin: |dracut|Unpacking initramfs")
_SYSTEMD = re.compile(r"systemd\[1\]: |Welcome to .*!|^\[\s*OK\s*\] ")
_PANIC = re.compile(r"Kernel panic - not syncing: (?P<msg>.*)")
_VFS = re.compile(r"VFS: (?:Cannot open root device|Unable to mount root fs)(?P<msg>.*)")
_ALERT = re.compile(r"ALERT!\s+(?P<dev>\S+) does not exist")
_GAVE_UP = re.compile(r"Gave up waiting for (?:root|suspend/resume) (?:file system )?device")
_INITRAMFS_PROMPT = re.compile(r"^\(initramfs\)")
_EMERGENCY = re.compile(r"You are in emergency mode|Entering emergency mode|Give root password for maintenance"
                        r"|Cannot open access to console, the root account is locked")
_LOGIN = re.compile(r"^\S+ login:\s*$")
_FAILED_START = re.compile(r"\[FAILED\] Failed to start (?P<what>.+?)\.?$")
_PROBE_STATE = re.compile(r"IMAGEKIT-PROBE: state=(?P<state>\S*) failed=(?P<units>.*)$")
_ALL_FAILED = "Failed to boot both default and fallback entries"
_FOLLOW_ON = {"you need to load the kernel first",  # an initrd line after a kernel that failed to load
              "no suitable video mode found"}  # GRUB 2 on UEFI without a GOP: it boots "in blind mode"
_GRUB_PROMPT = re.compile(r"^grub> ?$")
# HVM: the firmware and GRUB 2 before any kernel. SeaBIOS prints "Boot failed: ..." per device, then
# "No bootable device."; OVMF's BdsDxe prints "failed to load Boot000N ...: Not Found" per option, then
# starts its UEFI Shell (or says there is no bootable option).
_SEABIOS_FAILED = re.compile(r"^Boot failed: (?P<msg>.+?)\.?$")
_SEABIOS_NONE = re.compile(r"^No bootable device")
_OVMF_FAILED = re.compile(r"BdsDxe: failed to load (?P<option>Boot\w+ \".*?\") from .*: (?P<msg>.+?)\.?$")
_OVMF_NONE = re.compile(r"BdsDxe: No bootable option or device was found|BdsDxe: (?:loading|starting) Boot\w+ "
                        r"\"EFI Internal Shell\"|UEFI Interactive Shell|^Shell> ?$")
_GRUB_RESCUE = re.compile(r"^grub rescue> ?$")
_GRUB_START = re.compile(r"GRUB loading|Welcome to GRUB|GNU GRUB +version|Booting `|^\s*error: |^grub(?: rescue)?>|"
                         r"Entering rescue mode|" + re.escape(GRUB_PREFIX))


@dataclass
class Watcher:
    """Incremental reader of one boot's console."""

    lines: list[Line] = field(default_factory=list)
    titles_tried: list[tuple[str, bool]] = field(default_factory=list)  # (title, via fallback)
    grub_errors: list[str] = field(default_factory=list)
    kernel_version: str | None = None
    t_kernel: float | None = None
    t_sentinel: float | None = None
    t_bootloader: float | None = None
    errors_at_title: int = 0  # len(grub_errors) when the last entry was tried
    firmware_errors: list[str] = field(default_factory=list)
    failed_units: tuple[str, ...] = ()
    console_failures: list[str] = field(default_factory=list)
    system_state: str | None = None
    login_prompt: bool = False
    end: tuple[Reason, str, int] | None = None  # the end state, once seen
    root_cause: tuple[Reason, str, int] | None = None  # a root-not-found seen before the end
    firmware_boot: bool = False  # an HVM boot: GRUB 2 reads the image's grub.cfg, not PV-GRUB's menu.lst
    on_phase: Callable[[str], None] | None = None  # told each new `phase` (the progress display's boot row)
    phase: str = "firmware"  # firmware, GRUB, kernel, initrd, systemd, sentinel: how far the boot got
    uefi_name: str = "OVMF"  # the UEFI firmware reasons name (AAVMF: arm64's edk2)

    @property
    def done(self) -> bool:
        return self.end is not None

    def feed(self, t: float, raw: str) -> bool:
        """Take one console line; True once the boot has reached an end state."""
        text = clean(raw)
        self.lines.append(Line(t, text))
        if not text.strip() or self.end is not None:
            return self.end is not None
        self._read(len(self.lines) - 1, t, text)
        self._follow_phase(text)
        return self.end is not None

    def _follow_phase(self, text: str) -> None:
        phase = self.phase
        if self.t_sentinel is not None:
            phase = "sentinel"
        elif self.t_kernel is None:
            phase = "GRUB" if self.t_bootloader is not None else "firmware"
        elif _SYSTEMD.search(text):
            phase = "systemd"
        elif phase not in ("initrd", "systemd") and _INITRD.search(text):
            phase = "initrd"
        elif phase in ("firmware", "GRUB"):
            phase = "kernel"
        if phase != self.phase:
            self.phase = phase
            if self.on_phase is not None:
                self.on_phase(phase)

    def _finish(self, reason: Reason, detail: str, n: int) -> None:
        if self.end is None:
            self.end = (reason, detail, n)

    def _read(self, n: int, t: float, text: str) -> None:
        if self.t_kernel is None:
            if self.t_bootloader is None and _GRUB_START.search(text):
                self.t_bootloader = t
            self._read_firmware(n, text)
            self._read_grub(n, text)
        m = _KERNEL_BANNER.search(text)
        if m and self.t_kernel is None:
            self.t_kernel, self.kernel_version = t, m["version"]
            return
        self._read_linux(n, t, text)

    def _read_firmware(self, n: int, text: str) -> None:
        if m := _SEABIOS_FAILED.match(text):
            self.firmware_errors.append(f"Boot failed: {m['msg']}")
        elif m := _OVMF_FAILED.search(text):
            self.firmware_errors.append(f"failed to load {m['option']}: {m['msg']}")
        elif _SEABIOS_NONE.match(text):
            self._finish(Reason.FIRMWARE_NO_BOOTABLE_DEVICE,
                         "SeaBIOS: " + "; ".join([*dict.fromkeys(self.firmware_errors), "No bootable device"]), n)
        elif _OVMF_NONE.search(text):
            tried = "; ".join(dict.fromkeys(self.firmware_errors)) or "no boot option on the disk"
            self._finish(Reason.FIRMWARE_NO_BOOTABLE_DEVICE, f"{self.uefi_name}: {tried}; {_ovmf_end(text)}", n)
        elif _GRUB_RESCUE.match(text.strip()):
            errors = "; ".join(dict.fromkeys(self.grub_errors)) or "no error message"
            self._finish(Reason.GRUB_RESCUE, f"GRUB: {errors}; stopped at the grub rescue> prompt", n)

    def _read_grub(self, n: int, text: str) -> None:
        if m := _GRUB_BOOTING.search(text):
            title = m["title"]
            failed_since = len(self.grub_errors) > self.errors_at_title  # (not a copy of the same line: sercon)
            if (title, False) in self.titles_tried and failed_since:  # the menu came round again: all failed
                self._finish(Reason.NO_ENTRY_LOADED, self._grub_detail(), n)
            self.titles_tried.append((title, False))
            self.errors_at_title = len(self.grub_errors)
        elif m := _GRUB_FALLBACK.search(text):
            self.titles_tried.append((m["title"], True))
            self.errors_at_title = len(self.grub_errors)
        elif _GRUB_ERROR.match(text):
            self.grub_errors += [m["msg"] for m in _GRUB_ERRORS.finditer(text) if m["msg"] not in _FOLLOW_ON]
        elif _ALL_FAILED in text:
            self._finish(Reason.NO_ENTRY_LOADED, self._grub_detail(), n)
        elif text.startswith(GRUB_PREFIX) and "not found" in text:
            self._finish(Reason.MENU_LST_NOT_FOUND, text[len(GRUB_PREFIX):].strip(), n)
        elif _GRUB_PROMPT.match(text.strip()) and self.firmware_boot:
            self._finish(Reason.GRUB_CFG_NOT_FOUND, f"{self._grub_detail()}; stopped at the grub> prompt", n)
        elif _GRUB_PROMPT.match(text.strip()):
            self._finish(Reason.MENU_LST_NOT_FOUND, "GRUB found no menu entries and stopped at its prompt", n)

    def _grub_detail(self) -> str:
        errors = "; ".join(dict.fromkeys(self.grub_errors)) or "no error message"
        return f"GRUB: {errors}"

    def _read_linux(self, n: int, t: float, text: str) -> None:
        if m := _PROBE_STATE.search(text):
            self.system_state = m["state"] or None
            self.failed_units = tuple(u for u in m["units"].split() if u)
        elif SENTINEL in text:
            self.t_sentinel = t
            if self.failed_units:
                self._finish(Reason.FAILED_UNITS, "failed units: " + " ".join(self.failed_units), n)
            else:
                self._finish(Reason.BOOTED, f"{text.strip()} (system {self.system_state or 'up'})", n)
        elif m := _VFS.search(text):
            self.root_cause = self.root_cause or (Reason.ROOT_NOT_FOUND, text.strip(), n)
        elif m := _ALERT.search(text):
            self.root_cause = (Reason.ROOT_NOT_FOUND, f"{m['dev']} does not exist "
                                                  "(the initramfs gave up waiting for it)", n)
        elif _GAVE_UP.search(text):
            self.root_cause = self.root_cause or (Reason.ROOT_NOT_FOUND, text.strip(), n)
        elif m := _PANIC.search(text):
            self._finish(*(self.root_cause or (Reason.KERNEL_PANIC, f"Kernel panic: {m['msg']}", n)))
        elif _INITRAMFS_PROMPT.match(text):
            self._finish(*(self.root_cause or (Reason.INITRAMFS_SHELL, "initramfs shell: (initramfs) prompt", n)))
        elif _EMERGENCY.search(text):
            self._finish(Reason.EMERGENCY_MODE, text.strip(), n)
        elif m := _FAILED_START.search(text):
            self.console_failures.append(m["what"])
        elif _LOGIN.match(text):
            self.login_prompt = True

    def verdict(self, *, timed_out: bool, silent_for: float | None = None) -> Verdict:
        """What happened, once QEMU has stopped (or been stopped)."""
        reason, detail, n = self.end or self._no_end(timed_out, silent_for)
        entry, fallback = self._entry()
        return Verdict(
            reason=reason, detail=detail, line_no=n, entry_title=entry, fallback=fallback,
            grub_errors=tuple(self.grub_errors), kernel_version=self.kernel_version,
            t_first_kernel_line=self.t_kernel, t_sentinel=self.t_sentinel, t_bootloader=self.t_bootloader,
            failed_units=self.failed_units, system_state=self.system_state, login_prompt=self.login_prompt,
        )

    def _entry(self) -> tuple[str | None, bool]:
        if not self.titles_tried:
            return None, False
        title, fallback = self.titles_tried[-1]
        if self.t_kernel is None and self.end is not None and self.end[0] is Reason.NO_ENTRY_LOADED:
            return None, False
        return title, fallback

    def _no_end(self, timed_out: bool, silent_for: float | None) -> tuple[Reason, str, int | None]:
        last = len(self.lines) - 1 if self.lines else None
        if not any(line.text.strip() for line in self.lines):
            return Reason.NO_OUTPUT, "the serial console stayed empty", None
        if self.root_cause:
            return self.root_cause
        grub_failed = self.t_kernel is None and len(self.grub_errors) > self.errors_at_title
        if grub_failed and (silent_for is not None or not timed_out):  # GRUB 2 stuck after a failed entry
            return Reason.NO_ENTRY_LOADED, self._grub_detail(), last
        if grub_failed:  # cut off during GRUB's 10 s "Press any key" wait: a fallback may still have followed
            return Reason.TIMEOUT, f"the probe did not report in time ({self._grub_detail()}; GRUB was still " \
                                   "waiting to try a fallback)", last
        if self.titles_tried and self.t_kernel is None and (silent_for is not None or not timed_out):
            title = self.titles_tried[-1][0]
            return (Reason.NO_OUTPUT, f"GRUB booted `{title}' but the kernel printed nothing on the console "
                    "(no console=ttyS0/hvc0 it could use?)", last)
        if self.console_failures:
            return Reason.FAILED_UNITS, "failed to start: " + "; ".join(self.console_failures), last
        if self.login_prompt:
            return Reason.LOGIN_PROMPT_ONLY, "a login prompt appeared, but the probe never reported", last
        if not timed_out:
            return Reason.STOPPED, "QEMU exited before the probe reported", last
        if silent_for is not None:
            return Reason.TIMEOUT, f"no console output for {silent_for:.0f}s", last
        return Reason.TIMEOUT, "the probe did not report in time", last


def _ovmf_end(text: str) -> str:
    if "No bootable option" in text:
        return "no bootable option or device was found"
    return "it started the UEFI Shell"


def context(lines: list[Line], n: int | None, before: int = 6, after: int = 3) -> list[str]:
    """The console lines around line n (the last ones when n is None), blank lines left out."""
    if not lines:
        return []
    if n is None:
        n = len(lines) - 1
    picked = [line.text for line in lines[max(0, n - before * 3) : n + 1] if line.text.strip()][-before - 1 :]
    picked += [line.text for line in lines[n + 1 : n + 1 + after * 3] if line.text.strip()][:after]
    return [_SPACES.sub("   ", text) for text in picked]  # GRUB 2's menu is one line padded with spaces
