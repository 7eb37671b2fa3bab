"""The console classifier, fed the lines GRUB 2, Linux, initramfs-tools and systemd really print."""

from __future__ import annotations

from imagekit.boot.console import Reason, Watcher, clean, context


def watch(*lines: str, timed_out: bool = False) -> Watcher:
    w = Watcher()
    for i, line in enumerate(lines):
        w.feed(float(i), line)
    return w


def test_sentinel_without_failed_units_is_success() -> None:
    w = watch("  Booting `Debian'", "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@...)",
              "IMAGEKIT-PROBE: state=running failed=", "IMAGEKIT-PROBE: done")
    v = w.verdict(timed_out=False)
    assert w.done and v.booted and v.reason is Reason.BOOTED
    assert (v.entry_title, v.fallback, v.kernel_version) == ("Debian", False, "6.1.0-56-cloud-amd64")
    assert (v.t_first_kernel_line, v.t_sentinel) == (1.0, 3.0)


def test_failed_units_are_named() -> None:
    v = watch("Linux version 6.1.0", "IMAGEKIT-PROBE: state=degraded failed=broken.service other.mount ",
              "IMAGEKIT-PROBE: done").verdict(timed_out=False)
    assert v.reason is Reason.FAILED_UNITS and v.failed_units == ("broken.service", "other.mount")
    assert v.detail == "failed units: broken.service other.mount" and not v.booted


def test_fallback_is_reported() -> None:
    v = watch("  Booting `New'", "error: couldn't load file /boot/vmlinuz-new.", "Press any key to continue...",
              "   Falling back to `Old'", "Linux version 6.1.0", "IMAGEKIT-PROBE: state=running failed=",
              "IMAGEKIT-PROBE: done").verdict(timed_out=False)
    assert v.booted and (v.entry_title, v.fallback) == ("Old", True)
    assert v.grub_errors == ("couldn't load file /boot/vmlinuz-new",)


def test_every_entry_failing_stops_at_once() -> None:
    w = watch("  Booting `A'", "error: file `/boot/x' not found.", "   Falling back to `B'",
              "error: unknown filesystem.", "  Failed to boot both default and fallback entries.")
    v = w.verdict(timed_out=False)
    assert w.done and v.reason is Reason.NO_ENTRY_LOADED and v.entry_title is None
    assert v.detail == "GRUB: file `/boot/x' not found; unknown filesystem"


def test_menu_coming_round_again_means_every_entry_failed() -> None:
    w = watch("  Booting `A'", "error: no such partition.", "Press any key to continue...", "  Booting `A'")
    assert w.done and w.verdict(timed_out=False).reason is Reason.NO_ENTRY_LOADED


def test_menu_lst_not_found() -> None:
    v = watch("imagekit-pvgrub: (hd0,0)/boot/grub/menu.lst not found (the hd00 AKI looks only there)"
              ).verdict(timed_out=False)
    assert v.reason is Reason.MENU_LST_NOT_FOUND and v.detail.startswith("(hd0,0)/boot/grub/menu.lst not found")


def test_panic() -> None:
    w = watch("Linux version 6.1.0", "Run /bin/true as init process",
              "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000")
    v = w.verdict(timed_out=False)
    assert w.done and v.reason is Reason.KERNEL_PANIC
    assert v.detail == "Kernel panic: Attempted to kill init! exitcode=0x00000000"


def test_vfs_root_before_panic_is_root_not_found() -> None:
    v = watch("Linux version 6.1.0", "VFS: Cannot open root device \"vda\" or unknown-block(0,0): error -6",
              "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
              ).verdict(timed_out=False)
    assert v.reason is Reason.ROOT_NOT_FOUND and "Cannot open root device" in v.detail


def test_initramfs_root_missing() -> None:
    w = watch("Linux version 6.1.0", "Gave up waiting for root file system device.  Common problems:",
              "ALERT!  LABEL=nosuch does not exist.  Dropping to a shell!", "(initramfs) ")
    v = w.verdict(timed_out=False)
    assert w.done and v.reason is Reason.ROOT_NOT_FOUND
    assert v.detail == "LABEL=nosuch does not exist (the initramfs gave up waiting for it)"


def test_initramfs_shell_for_other_reasons() -> None:
    v = watch("Linux version 6.1.0", "No init found. Try passing init= bootarg.", "(initramfs) "
              ).verdict(timed_out=False)
    assert v.reason is Reason.INITRAMFS_SHELL


def test_emergency_mode() -> None:
    v = watch("Linux version 6.1.0", "You are in emergency mode. After logging in, type \"journalctl -xb\"",
              ).verdict(timed_out=False)
    assert v.reason is Reason.EMERGENCY_MODE


def test_login_prompt_alone_is_not_success() -> None:
    v = watch("Linux version 6.1.0", "Debian GNU/Linux 12 debian ttyS0", "debian login: ").verdict(timed_out=True)
    assert v.reason is Reason.LOGIN_PROMPT_ONLY and v.login_prompt and not v.booted


def test_console_failures_without_probe() -> None:
    v = watch("Linux version 6.1.0", "[FAILED] Failed to start ssh.service - OpenBSD Secure Shell server.",
              ).verdict(timed_out=True)
    assert v.reason is Reason.FAILED_UNITS and "ssh.service" in v.detail


def test_no_output_and_silent_kernel() -> None:
    assert Watcher().verdict(timed_out=True).reason is Reason.NO_OUTPUT
    v = watch("  Booting `Debian'").verdict(timed_out=True, silent_for=120)
    assert v.reason is Reason.NO_OUTPUT and "printed nothing" in v.detail
    assert watch("  Booting `Debian'").verdict(timed_out=True).reason is Reason.TIMEOUT  # --timeout, not silence


def test_timeout_and_early_stop() -> None:
    assert watch("Linux version 6.1.0", "ok").verdict(timed_out=True).reason is Reason.TIMEOUT
    assert watch("Linux version 6.1.0", "ok").verdict(timed_out=False).reason is Reason.STOPPED
    v = watch("Linux version 6.1.0", "ok").verdict(timed_out=True, silent_for=121.0)
    assert v.detail == "no console output for 121s"


def test_clean_and_context() -> None:
    assert clean("\x1b[1;1Hhello\r\x1b[0m") == "hello"
    w = watch(*[f"line {i}" for i in range(20)])
    assert context(w.lines, 10, before=2, after=1) == ["line 8", "line 9", "line 10", "line 11"]


def test_phases_follow_the_boot_for_the_progress_display() -> None:
    """Issue 15 item 8: the boot row shows firmware/GRUB, kernel, initrd, systemd, sentinel as they come."""
    seen: list[str] = []
    w = Watcher(on_phase=seen.append)
    for i, line in enumerate([
        "SeaBIOS (version 1.16.2-debian-1.16.2-1)", "Booting from Hard Disk...",
        "  Booting `Debian GNU/Linux'", "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@...)",
        "[    0.100000] Command line: root=/dev/xvda1 console=ttyS0", "Loading, please wait...",
        "Begin: Loading essential drivers ... done.", "[    2.000000] systemd[1]: Detected virtualization kvm.",
        "[  OK  ] Reached target multi-user.target", "IMAGEKIT-PROBE: state=running failed=",
        "IMAGEKIT-PROBE: done",
    ]):
        w.feed(float(i), line)
    assert seen == ["GRUB", "kernel", "initrd", "systemd", "sentinel"]
    assert w.phase == "sentinel" and w.verdict(timed_out=False).booted
