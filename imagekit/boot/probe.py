"""What the overlay gets so the guest says when it is up: a probe, and a serial console.

- systemd images: a unit (`imagekit-probe.service`, WantedBy=multi-user.target) that waits for
  `systemctl is-system-running --wait`, lists failed units, prints the sentinel and powers off.
  It writes to /dev/ttyS0 (QEMU's serial port) and /dev/console: with `console=tty0 console=hvc0`
  and no hvc0 under QEMU, /dev/console is the invisible tty0.
- other inits (a busybox /sbin/init script, sysvinit): /sbin/init is wrapped by a script that starts
  the probe in the background and execs the image's own init, which must then stay up.
- every menu.lst `kernel` line gets `console=ttyS0` first: EC2's PV console is hvc0, which does not
  exist under QEMU; put first, ttyS0 gets every kernel message while the image's own last `console=`
  stays the preferred one.
Which kind: /sbin/init resolving to systemd means the unit, anything else the hook.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from imagekit.boot.console import SENTINEL
from imagekit.boot.mounts import MOUNTS_SCRIPT

SERIAL_ARG = "console=ttyS0"
LINUX_COMMANDS = "linux16|linuxefi|linux"  # what loads a kernel in GRUB 2's grub.cfg (menu.lst: "kernel")
PROBE_SCRIPT = "/usr/local/libexec/imagekit-probe"
UNIT = "/etc/systemd/system/imagekit-probe.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/imagekit-probe.service"
INIT = "/sbin/init"
INIT_ORIG = "/sbin/init.imagekit-orig"
SETTLE_SECONDS = 5  # the init hook: how long the image's init must stay up
STATE_WAIT = 240  # the systemd probe: bound on is-system-running --wait


class ProbeKind(StrEnum):
    SYSTEMD = "systemd-unit"
    INIT_HOOK = "init-hook"
    NONE = "none"


# say LINE: on the serial port and /dev/console, again if a write failed. The getty on ttyS0 starts about
# when the probe does (Type=idle) and hangs the tty up (TTYVHangup=yes): a write in flight then got EIO and
# the line was lost (seen in CI: the report's one mount line missing). The systemd probe also stops the
# serial gettys first; the init hook has none to stop.
SAY = r"""say() { for c in /dev/ttyS0 /dev/console; do [ -c $c ] || continue; n=0
  until echo "$*" 2>/dev/null > $c; do n=$((n+1)); [ $n -ge 10 ] && break; sleep 0.1; done; done; }"""

SYSTEMD_SCRIPT = f"""#!/bin/sh
# imagekit boot probe (added to a boot overlay, never to the image): settle, report, power off.
state=$(timeout {STATE_WAIT} systemctl is-system-running --wait 2>/dev/null)
failed=$(systemctl list-units --state=failed --plain --no-legend --no-pager 2>/dev/null |
  while read -r a b rest; do case $a in *.*) printf '%s ' "$a";; *) printf '%s ' "$b";; esac; done)
# a serial getty hangs its tty up as it starts (TTYVHangup=yes) and flushes what is queued (agetty's tcflush):
# stopped before the report, so a getty that starts late does not take a line with it
systemctl stop 'serial-getty@*.service' 2>/dev/null
{SAY}
say "IMAGEKIT-PROBE: state=${{state:-unknown}} failed=${{failed}}"
[ -r {MOUNTS_SCRIPT} ] && . {MOUNTS_SCRIPT}
say "{SENTINEL}"
sleep 1
systemctl poweroff --force --force 2>/dev/null || echo o > /proc/sysrq-trigger
"""

SYSTEMD_UNIT = f"""[Unit]
Description=imagekit boot probe (added by imagekit boot to its overlay)
After=multi-user.target

[Service]
Type=simple
ExecStart=/bin/sh {PROBE_SCRIPT}

[Install]
WantedBy=multi-user.target
"""

HOOK_INIT = f"""#!/bin/sh
# imagekit boot: start the probe, then the image's own init (this wrapper lives in a boot overlay only).
/bin/sh {PROBE_SCRIPT} </dev/null >/dev/null 2>&1 &
exec {INIT_ORIG} "$@"
"""

HOOK_SCRIPT = f"""#!/bin/sh
# imagekit boot probe: the image's init must still be running after {SETTLE_SECONDS}s.
sleep {SETTLE_SECONDS}
[ -r /proc/1/cmdline ] || mount -t proc proc /proc 2>/dev/null
{SAY}
say "IMAGEKIT-PROBE: state=running failed="
say "{SENTINEL}"
sleep 1
echo o > /proc/sysrq-trigger
"""


def _serial(arg: str, serial: str = SERIAL_ARG) -> bool:
    return arg == serial or arg.startswith(serial + ",")


def _edit_kernel_lines(text: str, keywords: str, edit: Callable[[str], str | None]) -> tuple[str, int]:
    """Each line loading a kernel (`keywords`: "kernel" in menu.lst, "linux16|linuxefi|linux" in grub.cfg)
    with its arguments replaced by edit(args) (None: unchanged); and how many lines changed."""
    changed = 0

    def fix(m: re.Match[str]) -> str:
        nonlocal changed
        args = edit(m["args"])
        if args is None:
            return m[0]
        changed += 1
        return f"{m['head']}{m['path']} {args}".rstrip()

    pattern = re.compile(rf"^(?P<head>\s*(?:{keywords})(?:\s*=\s*|[ \t]+))(?P<path>\S+)[ \t]*(?P<args>[^\n]*)$",
                         re.M)
    return pattern.sub(fix, text), changed


def add_serial_console(menu_lst: str, keywords: str = "kernel", last: bool = False,
                       serial: str = SERIAL_ARG) -> tuple[str, int]:
    """menu.lst with console=ttyS0 put first on each kernel line that lacks it; and how many lines changed.
    `keywords`: the command that loads a kernel (GRUB 2's grub.cfg: "linux16|linuxefi|linux"); `last`: put it
    last, making it /dev/console, unless the line's last console= is ttyS0 already (HVM: ttyS0 is EC2's too).
    `serial`: the console= of QEMU's serial port (console=ttyAMA0 on arm64's virt machine)."""

    def edit(args: str) -> str | None:
        consoles = [a for a in args.split() if a.startswith("console=")]
        if (consoles and _serial(consoles[-1], serial)) or (not last and any(_serial(c, serial) for c in consoles)):
            return None
        return f"{args} {serial}".strip() if last else f"{serial} {args}".strip()

    return _edit_kernel_lines(menu_lst, keywords, edit)


def add_kernel_arg(menu_lst: str, arg: str, keywords: str = "kernel") -> tuple[str, int]:
    """menu.lst with `arg` put first on each kernel line that lacks it; and how many lines changed."""
    return _edit_kernel_lines(menu_lst, keywords, lambda args: None if arg in args.split() else f"{arg} {args}".strip())


def detect_kind(g: Any) -> ProbeKind:
    """systemd when /sbin/init resolves to systemd; the init hook when there is a /sbin/init and a shell."""
    try:
        init = str(g.realpath(INIT))
    except RuntimeError:
        return ProbeKind.NONE
    if init.endswith("/systemd"):
        return ProbeKind.SYSTEMD
    return ProbeKind.INIT_HOOK if g.exists("/bin/sh") else ProbeKind.NONE


def _write(g: Any, path: str, text: str, mode: int) -> None:
    g.mkdir_p(path.rsplit("/", 1)[0])
    g.write(path, text.encode())
    g.chmod(mode, path)


def install_probe(g: Any, kind: ProbeKind) -> list[str]:
    """Install the probe of `kind` in the mounted overlay; what was added, for the report."""
    if kind is ProbeKind.SYSTEMD:
        _write(g, PROBE_SCRIPT, SYSTEMD_SCRIPT, 0o755)
        _write(g, UNIT, SYSTEMD_UNIT, 0o644)
        g.mkdir_p(WANTS.rsplit("/", 1)[0])
        g.ln_sf(UNIT, WANTS)
        return [f"{UNIT} (probe unit, enabled for multi-user.target)", PROBE_SCRIPT]
    if kind is ProbeKind.INIT_HOOK:
        _write(g, PROBE_SCRIPT, HOOK_SCRIPT, 0o755)
        g.mv(INIT, INIT_ORIG)
        _write(g, INIT, HOOK_INIT, 0o755)
        return [f"{INIT} wrapper (the image's init moved to {INIT_ORIG})", PROBE_SCRIPT]
    return []
