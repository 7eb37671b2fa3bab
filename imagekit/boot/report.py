"""The result of a boot test: for a person (text) or a program (--json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from imagekit.boot.mounts import describe


@dataclass(frozen=True)
class EntryBooted:
    title: str
    index: int | None  # position in menu.lst, when it could be parsed
    fallback: bool  # False: the default entry


@dataclass(frozen=True)
class FirmwareResult:
    """One firmware's boot of an HVM image (a hybrid image has two)."""

    firmware: str  # "bios" (SeaBIOS) or "uefi" (OVMF)
    booted: bool
    reason: str
    detail: str
    seconds_to_bootloader: float | None  # the firmware's own cost: QEMU start to GRUB's first line
    seconds_to_first_kernel_line: float | None
    seconds_to_sentinel: float | None
    seconds_qemu: float
    serial_log: str
    degraded: bool = False  # a mount in fstab did not come up, or the system was degraded


@dataclass(frozen=True)
class BootReport:
    image: str
    loader: str  # "pvgrub" or "direct"
    hypervisor: str  # "qemu" or "xen"
    variant: str | None  # the PV-GRUB AKI emulated: "hd0" or "hd00"
    accel: str
    accel_reason: str
    booted: bool
    reason: str  # console.Reason value
    explanation: str
    detail: str
    context: list[str]  # console lines around the failure (or the sentinel)
    entry: EntryBooted | None
    kernel_version: str | None
    seconds_to_first_kernel_line: float | None
    seconds_to_sentinel: float | None
    seconds_qemu: float
    seconds_prepare: float
    failed_units: list[str]
    grub_errors: list[str]
    system_state: str | None
    login_prompt: bool
    probe: str  # "systemd-unit", "init-hook" or "none"
    serial_log: str
    added: list[str] = field(default_factory=list)  # what the overlay got
    prepared_with: str = "libguestfs"  # "debugfs" (a raw copy edited, no appliance), "debugfs-cached", "libguestfs"
    mappings: list[str] = field(default_factory=list)  # kernel argument rewrites (direct loader)
    notes: list[str] = field(default_factory=list)
    # what the instance had besides its root volume, and what came up (imagekit/boot/attach.py, mounts.py)
    attachments: list[dict[str, Any]] = field(default_factory=list)  # instance store, data volumes
    mounts: list[dict[str, Any]] = field(default_factory=list)  # target, source, fstype, label
    missing_mounts: list[dict[str, Any]] = field(default_factory=list)  # fstab entries that did not come up
    services: list[dict[str, Any]] = field(default_factory=list)  # units ordered after mounts, with times
    user_data: dict[str, Any] | None = None  # what the guest fetched from the local metadata service
    degraded: bool = False  # system degraded, or a mount in fstab did not come up
    # HVM images only (None / empty for PV-GRUB): firmware "bios", "uefi" or "both", one result each
    firmware: str | None = None
    disk_interface: str | None = None
    seconds_to_bootloader: float | None = None
    firmwares: list[FirmwareResult] = field(default_factory=list)
    # --loader pvgrub097: GRUB 0.97's run of the menu and Xen's loader (imagekit/boot/pvgrub097.py summary())
    pvgrub097: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.booted else 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        head = "booted" if self.booted else f"did not boot: {self.reason}"
        head += " (degraded)" if self.degraded else ""
        lines = [f"{self.image}: {head}", f"  {self.explanation}: {self.detail}"]
        if self.entry:
            which = "fallback" if self.entry.fallback else "default"
            lines.append(f"  entry: {self.entry.title!r} ({which}, loader {self.loader}"
                         + (f", {self.variant} AKI)" if self.variant else ")"))
        if self.kernel_version:
            lines.append(f"  kernel: {self.kernel_version}")
        timing = [f"first kernel line {self.seconds_to_first_kernel_line:.1f}s"
                  if self.seconds_to_first_kernel_line is not None else None,
                  f"sentinel {self.seconds_to_sentinel:.1f}s" if self.seconds_to_sentinel is not None else None]
        lines.append(f"  time: {', '.join(t for t in timing if t) or 'n/a'} (QEMU {self.seconds_qemu:.1f}s, "
                     f"{self.accel}; prepare {self.seconds_prepare:.1f}s with {self.prepared_with})")
        if self.failed_units:
            lines.append(f"  failed units: {' '.join(self.failed_units)}")
        lines += [f"  added to the overlay: {a}" for a in self.added]
        lines += [f"  mapped: {m}" for m in self.mappings]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  {line}" for line in instance_lines(self)]
        lines += [f"  firmware {f.firmware}: {'booted' if f.booted else f.reason}"
                  f"{' (degraded)' if f.degraded else ''}, GRUB "
                  f"{_seconds(f.seconds_to_bootloader)}, sentinel {_seconds(f.seconds_to_sentinel)}"
                  for f in self.firmwares]
        if self.serial_log:  # empty when no QEMU ran (--loader pvgrub097 decided before it)
            lines.append(f"  serial log: {self.serial_log}")
        if not self.booted and self.context:
            lines.append("  console:")
            lines += [f"    | {c}" for c in self.context]
        return "\n".join(lines)


def instance_lines(report: BootReport) -> list[str]:
    """Disks attached, mounts, services after mounts, user-data: the instance beyond its root volume."""
    lines = [f"attached: {a['qemu_device']} = " + (f"{a['ec2_device']} " if a["ec2_device"] != "-" else "")
             + f"{a['role']} {a['name']}" + (f" ({a['source']}, through an overlay)" if a.get("source") else "")
             for a in report.attachments]
    lines += describe(report.mounts, report.missing_mounts, report.services)
    if report.user_data is not None:
        got = "fetched" if report.user_data["fetched"] else "NOT fetched"
        lines.append(f"user-data {report.user_data['file']}: {got} by the guest "
                     f"({len(report.user_data['requests'])} metadata requests)")
    if report.degraded:
        lines.append("degraded: " + ("; ".join(f"{m['target']} not mounted" for m in report.missing_mounts)
                                     or f"system {report.system_state}"))
    return lines


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}s"
