"""Which mounts came up and when the services that need them started, as the guest saw it.

The systemd probe (probe.py) sources `MOUNTS_SCRIPT` just before its sentinel when this module has
installed it. It prints one machine-readable line per fact on the serial console:

    IMAGEKIT-PROBE: mount target=/var/lib/postgresql source=/dev/vdc fstype=ext4 label=pgdata
    IMAGEKIT-PROBE: fstab target=/var/lib/postgresql spec=LABEL=pgdata fstype=ext4
    IMAGEKIT-PROBE: unit id=var-lib-postgresql.mount state=active result=success active_us=12345678 mounts=

`mount` lines are /proc/self/mounts (block devices only, the label from /dev/disk/by-label), `fstab`
lines what /etc/fstab asks for, `unit` lines `systemctl show` of each fstab mount unit and of each
service ordered after a mount: the services the manifest's data volumes name and every
`RequiresMountsFor=` drop-in found in the image (templates expanded to their instances).
`active_us` is ActiveEnterTimestampMonotonic (microseconds since boot, 0 when never active).
For each failed unit it also prints the last journal lines (`IMAGEKIT-PROBE: journal unit=X: ...`), so
the saved serial log says why (e.g. cloud-init's locale module in a minbase system).
`read_mounts` turns those lines into the report's `mounts`, `missing_mounts` and `services`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imagekit.boot.console import PROBE_PREFIX, Line
from imagekit.manifest import Manifest

MOUNTS_SCRIPT = "/usr/local/libexec/imagekit-probe-mounts"
DROPIN_GLOB = "/etc/systemd/system/*.d/*.conf"
_REQUIRES = re.compile(r"^\s*RequiresMountsFor\s*=\s*(?P<paths>.*)$", re.M)
_UNIT_NAME = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|timer|target|mount)$")
NOT_MOUNTED = ("swap", "none", "proc", "sysfs", "tmpfs", "devpts")
FSTAB = "/etc/fstab"
# x-systemd.device-timeout= as imagekit writes it (20s) and as people do (20, 1min); other spans are left alone
_DEVICE_TIMEOUT = re.compile(r"(?:(?<=,)|^)x-systemd\.device-timeout=(?P<n>\d+)(?P<unit>s|sec|m|min)?(?=,|$)")

SCRIPT = r"""# imagekit boot (sourced by the probe before its sentinel): mounts, and units ordered after them.
show() {
  st=$(systemctl show -p ActiveState --value -- "$1" 2>/dev/null)
  rs=$(systemctl show -p Result --value -- "$1" 2>/dev/null)
  at=$(systemctl show -p ActiveEnterTimestampMonotonic --value -- "$1" 2>/dev/null)
  rm=$(systemctl show -p RequiresMountsFor --value -- "$1" 2>/dev/null | tr ' ' ',')
  say "IMAGEKIT-PROBE: unit id=$1 state=${st:-unknown} result=${rs:-unknown} active_us=${at:-0} mounts=$rm"
}
while read -r src target fstype rest; do
  case $src in /dev/*) ;; *) continue;; esac
  real=$(readlink -f "$src"); label=
  for l in /dev/disk/by-label/*; do [ "$(readlink -f "$l")" = "$real" ] && label=${l##*/}; done
  say "IMAGEKIT-PROBE: mount target=$target source=$src fstype=$fstype label=$label"
done < /proc/self/mounts
while read -r spec target fstype rest; do
  case $spec in ''|\#*) continue;; esac
  case $fstype in swap|none|proc|sysfs|tmpfs|devpts) continue;; esac
  case $target in /*) ;; *) continue;; esac
  say "IMAGEKIT-PROBE: fstab target=$target spec=$spec fstype=$fstype"
  show "$(systemd-escape -p --suffix=mount "$target")"
done < /etc/fstab
for unit in $failed; do  # the probe's failed units: their last journal lines, for whoever reads the log
  journalctl -b -u "$unit" -n 10 --no-pager -o cat 2>/dev/null |
    while read -r line; do say "IMAGEKIT-PROBE: journal unit=$unit: $line"; done
done
for pattern in @UNITS@; do
  systemctl list-units --all --plain --no-legend --no-pager "$pattern" 2>/dev/null |
    while read -r unit rest; do show "$unit"; done
done
"""


def script(units: list[str]) -> str:
    """The probe's mounts script for these services (a template `x@.service` lists its instances)."""
    patterns = [u.replace("@.", "@*.") for u in units if _UNIT_NAME.match(u)]
    return SCRIPT.replace("@UNITS@", " ".join(shlex.quote(p) for p in patterns))


def services_after_mounts(g: Any, manifest: Manifest | None) -> list[str]:
    """Units ordered after a mount: the manifest's data volumes' services and the image's drop-ins."""
    units: list[str] = []
    for vol in (manifest.data_volumes if manifest else None) or []:
        units += list(vol.services or [])
    try:
        paths = list(g.glob_expand(DROPIN_GLOB))
    except RuntimeError:
        paths = []
    for path in sorted(paths):
        try:
            text = str(g.cat(path))
        except RuntimeError:
            continue
        if _REQUIRES.search(text):
            units.append(path.split("/")[-2].removesuffix(".d"))
    return list(dict.fromkeys(units))


def install_mounts_probe(g: Any, manifest: Manifest | None) -> list[str]:
    """Write the mounts script into the mounted overlay (the systemd probe sources it); for the report."""
    units = services_after_mounts(g, manifest)
    g.mkdir_p(MOUNTS_SCRIPT.rsplit("/", 1)[0])
    g.write(MOUNTS_SCRIPT, script(units).encode())
    g.chmod(0o644, MOUNTS_SCRIPT)
    watched = f" and {', '.join(units)}" if units else ""
    return [f"{MOUNTS_SCRIPT} (mounts, fstab mount units{watched}: reported before the sentinel)"]


def _fstab_label(spec: str) -> str | None:
    """The label an fstab spec names (LABEL=x, LABEL="x", /dev/disk/by-label/x), else None."""
    for prefix in ("LABEL=", "/dev/disk/by-label/"):
        if spec.startswith(prefix):
            return spec.removeprefix(prefix).strip('"')
    return None


def stretch_device_timeouts(g: Any, labels: Sequence[str], scale: int) -> list[str]:
    """The overlay's /etc/fstab with the device timeout of each attached volume (by its label) made `scale`
    times longer; for the report. Under TCG the guest runs several times slower than on EC2 and its udev
    names an attached volume (/dev/disk/by-label/X) later than the image's timeout allows for, which then
    reports a volume that is there as missing (seen in CI: 20 s passed before udev got to it in a 65 s boot).
    A volume that is not attached keeps the image's timeout: the boot without it waits as EC2 would."""
    if not labels or scale <= 1 or not g.is_file(FSTAB):
        return []
    stretched: list[str] = []
    lines = []
    for line in str(g.cat(FSTAB)).splitlines(keepends=True):
        tokens = re.split(r"(\s+)", line)  # fields at even indices, the whitespace between them kept
        at = [i for i in range(0, len(tokens), 2) if tokens[i]]
        spec = tokens[at[0]] if at else "#"
        if len(at) >= 4 and not spec.startswith("#") and _fstab_label(spec) in labels:
            options = tokens[at[3]]
            if m := _DEVICE_TIMEOUT.search(options):
                was = int(m["n"]) * (60 if m["unit"] in ("m", "min") else 1)
                tokens[at[3]] = f"{options[:m.start()]}x-systemd.device-timeout={was * scale}s{options[m.end():]}"
                stretched.append(f"{spec} {was} s -> {was * scale} s")
        lines.append("".join(tokens))
    if not stretched:
        return []
    g.write(FSTAB, "".join(lines).encode())
    return [f"{FSTAB}: x-systemd.device-timeout of {', '.join(stretched)} (TCG: the emulated guest names an "
            f"attached volume later than on EC2; the image keeps its own timeout)"]


@dataclass(frozen=True)
class ProbeFacts:
    mounts: list[dict[str, str]]
    fstab: list[dict[str, str]]
    units: dict[str, dict[str, str]]


def _fields(rest: str) -> dict[str, str]:
    out = {}
    for word in rest.split():
        key, sep, value = word.partition("=")
        if sep:
            out[key] = value
    return out


def parse_lines(lines: list[Line]) -> ProbeFacts:
    """The probe's mount/fstab/unit lines (each may appear twice: ttyS0 and /dev/console)."""
    mounts: dict[str, dict[str, str]] = {}
    fstab: dict[str, dict[str, str]] = {}
    units: dict[str, dict[str, str]] = {}
    for line in lines:
        at = line.text.find(PROBE_PREFIX)
        if at < 0:
            continue
        kind, _, rest = line.text[at + len(PROBE_PREFIX):].strip().partition(" ")
        f = _fields(rest)
        if kind == "mount" and "target" in f:
            mounts[f["target"]] = f
        elif kind == "fstab" and "target" in f:
            fstab[f["target"]] = f
        elif kind == "unit" and "id" in f:
            units[f["id"]] = f
    return ProbeFacts(list(mounts.values()), list(fstab.values()), units)


def seconds(unit: dict[str, str] | None) -> float | None:
    """ActiveEnterTimestampMonotonic in seconds since boot; None when the unit never became active."""
    if unit is None:
        return None
    try:
        us = int(unit.get("active_us", "0"))
    except ValueError:
        return None
    return round(us / 1e6, 2) if us > 0 else None


def mount_unit_name(target: str) -> str:
    """systemd-escape -p --suffix=mount, for the paths fstab holds."""
    if target == "/":
        return "-.mount"
    parts = target.strip("/").split("/")
    esc = ["".join(c if c.isalnum() or c in ":_." else f"\\x{ord(c):02x}" for c in p) for p in parts]
    return "-".join(esc) + ".mount"


def missing_mounts(facts: ProbeFacts) -> list[dict[str, Any]]:
    """fstab entries that are not mounted, with their mount unit's state."""
    mounted = {m["target"] for m in facts.mounts}
    missing = []
    for entry in facts.fstab:
        if entry["target"] in mounted or entry.get("fstype") in NOT_MOUNTED:
            continue
        unit = mount_unit_name(entry["target"])
        u = facts.units.get(unit, {})
        missing.append({"target": entry["target"], "spec": entry.get("spec"), "unit": unit,
                        "state": u.get("state"), "result": u.get("result")})
    return missing


def mounts_needed(paths: list[str], targets: list[str]) -> list[str]:
    """The mount points (other than /) that RequiresMountsFor= paths resolve to: for each path, the deepest
    fstab or mounted target it lies under (systemd orders after those mount units only)."""
    found: list[str] = []
    for path in paths:
        under = [t for t in targets if t != "/" and (path == t or path.startswith(t.rstrip("/") + "/"))]
        if under:
            found.append(max(under, key=len))
    return list(dict.fromkeys(found))


def service_records(facts: ProbeFacts) -> list[dict[str, Any]]:
    """Each non-mount unit: state, when it became active, and whether after every mount it requires."""
    records = []
    targets = [e["target"] for e in facts.fstab] + [m["target"] for m in facts.mounts]
    for name, u in facts.units.items():
        if name.endswith(".mount"):
            continue
        paths = mounts_needed([p for p in u.get("mounts", "").split(",") if p], targets)
        times = [seconds(facts.units.get(mount_unit_name(p))) for p in paths]
        needed = [{"target": p, "unit": mount_unit_name(p), "active_at": at}
                  for p, at in zip(paths, times, strict=True)]
        t = seconds(u)
        after = None if t is None or not needed else all(at is not None and at <= t for at in times)
        records.append({"unit": name, "state": u.get("state"), "result": u.get("result"), "active_at": t,
                        "requires_mounts": needed, "after_mounts": after})
    return records


def read_mounts(lines: list[Line]) -> dict[str, Any]:
    """The report's fields: mounts, missing_mounts, services."""
    facts = parse_lines(lines)
    return {"mounts": facts.mounts, "missing_mounts": missing_mounts(facts), "services": service_records(facts)}


def describe(mounts: list[dict[str, Any]], missing: list[dict[str, Any]], services: list[dict[str, Any]]) -> list[str]:
    """Report lines: "var-lib-postgresql.mount active at 12.3 s, postgresql.service started at 14.1 s ..."."""
    lines = [f"mount: {m['target']} from {m.get('source')} ({m.get('fstype')}"
             + (f", label {m['label']})" if m.get("label") else ")") for m in mounts]
    lines += [f"mount did not come up: {m['target']} ({m.get('spec')}; {m['unit']} {m.get('state')}/{m.get('result')})"
              for m in missing]
    for s in services:
        mounts_at = ", ".join(f"{m['unit']} " + (f"active at {m['active_at']:.1f} s" if m["active_at"] is not None
                                                   else "never active") for m in s["requires_mounts"])
        started = f"started at {s['active_at']:.1f} s" if s["active_at"] is not None else \
            f"not started ({s.get('state')}/{s.get('result')})"
        order = {True: " (after its mounts)", False: " (BEFORE its mounts)", None: ""}[s["after_mounts"]]
        lines.append(f"service: {mounts_at + ', ' if mounts_at else ''}{s['unit']} {started}{order}")
    return lines
