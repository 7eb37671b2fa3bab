"""From a finished boot to its report: the console's verdict with what the preparation did, GRUB's entries
diagnosed, and the serial log saved (beside the image, else in the cache). Every loader ends here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imagekit.boot import guest
from imagekit.boot.console import EXPLAIN, Reason, Verdict, Watcher, context
from imagekit.boot.options import BootOptions
from imagekit.boot.overlay import ImageFile
from imagekit.boot.prepared import Prepared
from imagekit.boot.qemu import Outcome
from imagekit.boot.report import BootReport, EntryBooted
from imagekit.bootloader.menulst import MenuLstError, parse_menu_lst
from imagekit.util.accel import Accel
from imagekit.util.atomic import copy_file
from imagekit.util.cache import cache_dir


def _entry(verdict: Verdict, prepared: Prepared) -> EntryBooted | None:
    if prepared.direct is not None:
        d = prepared.direct
        return EntryBooted(d.entry.title, d.index, d.fallback)
    if prepared.grub097 is not None and (booted := prepared.grub097.plan.booted) is not None:
        return EntryBooted(booted.entry.title, booted.entry.index, prepared.grub097.plan.fell_back)
    if verdict.entry_title is None:
        return None
    index = None
    try:
        titles = [e.title for e in parse_menu_lst(prepared.menu_text or "").entries]
        index = titles.index(verdict.entry_title) if verdict.entry_title in titles else None
    except MenuLstError:
        pass
    return EntryBooted(verdict.entry_title, index, verdict.fallback)


def diagnose_entries(menu_text: str | None, disk: guest.Disk) -> list[str]:
    """Why GRUB could not load entries, where its own message ("couldn't load file") does not say."""
    try:
        entries = parse_menu_lst(menu_text or "").entries
    except MenuLstError as exc:
        return [f"menu.lst: {exc}"]
    found = []
    for e in entries:
        if e.root is None:
            continue
        if e.root_partition is None and disk.partitioned:
            found.append(f"entry {e.title!r}: root {e.root} is the whole disk, but the disk is partitioned: "
                         "there is no filesystem there (use (hd0,0))")
        elif e.root_partition is not None and not disk.partitioned:
            found.append(f"entry {e.title!r}: root {e.root} names a partition, but the disk has no partition "
                         "table (use (hd0))")
    return found


def default_log_path(image: Path) -> Path:
    beside = image.parent / f"{image.name}.serial.log"
    if os.access(beside.parent, os.W_OK):
        return beside
    return cache_dir() / "boot-logs" / f"{image.name}.serial.log"


def save_log(source: Path, target: Path) -> Path:
    """The boot's console saved at target whole (util/atomic: two boots of one image saving at once each
    rename a complete log; the last one stays)."""
    copy_file(source, target)
    return target


@dataclass(frozen=True)
class BootRun:
    """What one boot left: the console read (`watcher`), how QEMU (or `xl console`) ended, the saved serial log,
    and how long the preparation took."""

    watcher: Watcher
    outcome: Outcome
    log: Path
    seconds_prepare: float


def build_report(opts: BootOptions, image: ImageFile, loader: str, accel: Accel, prepared: Prepared,
                 run: BootRun) -> BootReport:
    watcher, outcome = run.watcher, run.outcome
    verdict = watcher.verdict(timed_out=outcome.timed_out, silent_for=outcome.silent_for)
    notes = list(prepared.notes)
    detail = verdict.detail
    if verdict.reason is Reason.NO_ENTRY_LOADED:
        detail = "; ".join([detail, *diagnose_entries(prepared.menu_text, prepared.disk)])
    if loader == "pvgrub":
        notes.append("GRUB's menu countdown was skipped (timeout 0 after reading menu.lst): on EC2 nobody "
                     "presses a key, so it only costs time")
    if accel.name == "tcg":
        notes.append(f"TCG (no KVM): {accel.reason}")
    if verdict.reason is Reason.ROOT_NOT_FOUND and loader == "pvgrub":
        notes.append("if root= names an EC2 device (/dev/xvda1, /dev/sda1), it cannot exist under QEMU: "
                     "use LABEL= or UUID=, or --loader direct, which maps it")
    return BootReport(
        image=str(image.path), loader=loader, hypervisor=opts.hypervisor,
        variant=str(prepared.disk.variant) if prepared.disk.variant else None,
        accel=accel.name, accel_reason=accel.reason, booted=verdict.booted, reason=str(verdict.reason),
        explanation=EXPLAIN[verdict.reason], detail=detail,
        context=context(watcher.lines, verdict.line_no), entry=_entry(verdict, prepared),
        kernel_version=verdict.kernel_version,
        seconds_to_first_kernel_line=_round(verdict.t_first_kernel_line),
        seconds_to_sentinel=_round(verdict.t_sentinel), seconds_qemu=round(outcome.seconds, 2),
        seconds_prepare=round(run.seconds_prepare, 2), prepared_with=prepared.prepared_with,
        failed_units=list(verdict.failed_units),
        grub_errors=list(verdict.grub_errors),
        system_state=verdict.system_state, login_prompt=verdict.login_prompt, probe=str(prepared.kind),
        serial_log=str(run.log), added=list(prepared.added),
        mappings=list(prepared.direct.mappings) if prepared.direct else
        list(prepared.grub097.mappings) if prepared.grub097 else [], notes=notes,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
