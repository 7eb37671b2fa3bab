"""Fuzz the recipe loader (hypothesis, derandomized): hostile values for every key, never a traceback.

Each example takes a valid recipe, puts hostile values at one to three of its keys (or new ones): strings
with `..`, NUL, newlines, braces, options, long names; huge and odd numbers; wrong types; nesting 331
deep; or raw bytes for the whole file. `load_recipe` must return a Recipe or raise a RecipeError whose
message is one printable line naming the file and a key. A recipe it accepts must render menu.lst,
grub.cfg and fstab with no line injected. A few rejected recipes also go through the real
`imagekit build`: exit 2, one line on stderr naming the key, no Traceback, no file written.
"""

from __future__ import annotations

import atexit
import copy
import math
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from imagekit.bootloader.grubcfg import parse_grub_cfg
from imagekit.recipe.kernel_profiles import load_profile
from imagekit.recipe.load import load_recipe
from imagekit.recipe.model import Recipe, Virtualization
from imagekit.rootfs.configure import FsIds, KernelInfo, boot_config, boot_entries, fstab_text
from imagekit.util.errors import RecipeError
from tests.pvgrub.grub097_reads import entry_commands, entry_files, grub097_reads
from tests.util import run_imagekit

FUZZ_EXAMPLES = 500
CLI_EXAMPLES = 6

LVM_BASE: dict[str, Any] = {
    "name": "fuzz", "description": "a recipe to fuzz", "arch": "x86_64", "size": "3G", "free": "10%",
    "layout": "hd00", "hostname": "fuzz", "packages": ["openssh-server", "lvm2"], "reproducible": False,
    "epoch": 1700000000,
    "rootfs": {"source": "bootstrap", "tool": "mmdebstrap", "suite": "bookworm", "variant": "minbase",
               "mirror": "http://deb.debian.org/debian", "components": ["main"], "packages": ["udev"],
               "snapshot": "20260101T000000Z"},
    "filesystems": {"root": {"type": "ext4", "label": "root", "features": "^metadata_csum"},
                    "boot": {"type": "ext2", "label": "boot", "size": "256M"}},
    "kernel": {"profile": "debian-cloud-amd64", "cmdline": "quiet", "root": "label"},
    "boot": {"default": 0, "fallback": 1, "timeout": 1,
             "entries": [{"title": "{name} ({kernel_version})", "args": "x=1"},
                         {"title": "fallback", "kernel": "vmlinuz-6.1.0-28-cloud-amd64",
                          "initrd": "initrd.img-6.1.0-28-cloud-amd64"}]},
    "files": [{"src": "files/interfaces-eth0", "dest": "/etc/network/interfaces.d/eth0", "mode": "0644"}],
    "volumes": [{"name": "pgdata", "mountpoint": "/var/lib/postgresql", "device": "/dev/sdh", "size": "1G",
                 "type": "ext4", "label": "pgdata", "services": ["postgresql.service"], "device_timeout": 20,
                 "initial": "copy", "image": True, "delete_on_termination": False}],
    "lvm": {"vg": "vg0", "volumes": [{"name": "root", "mountpoint": "/", "size": "1536M"},
                                     {"name": "swap", "type": "swap", "label": "swap", "size": "256M"},
                                     {"name": "var", "mountpoint": "/var", "type": "ext4", "label": "var"}]},
}
UEFI_BASE: dict[str, Any] = {
    "name": "fuzz-uefi", "size": "auto", "free": "512M", "layout": "gpt-uefi", "hostname": "uefi",
    "rootfs": {"source": "tarball", "path": "rootfs.tar"},
    "filesystems": {"root": {"type": "xfs", "label": "root"}, "esp": {"size": "128M", "label": "ESP"}},
    "kernel": {"profile": "host-cloud-amd64", "root": "uuid", "cmdline": "console=ttyS0 dyndbg=\"+p\""},
    "boot": {"entries": [{"title": "Debian {name} {{literal}}"}]},
}
BASES = {"lvm": LVM_BASE, "uefi": UEFI_BASE}

HOSTILE_STRINGS = [
    "", " ", ".", "..", "/", "//", "/..", "/../../../../../../../../srv/escaped", "/var/run/x", "/etc/./x",
    "/dev/sda", "/proc/self/mem", "/sys/x", "/etc/a\0b", "a\0", "a\nb", "title x\nkernel /evil", "a\rb", "\t",
    "a\u2028b", "\x1b[2J", "\x7f", "{", "}", "{version}", "{name!r}", "{name:>9}", "{0}", "{}", "{{", "%s",
    "--customize-hook=touch /tmp/pwned", "-x", "--", "./x.deb", "/tmp/x.deb", "x" * 251, "a" * 5000,
    "1" + "0" * 309, "1e309", "-1G", "0", "nan", "inf", "99999999999999999999T", "http://a b", "file:///x\ndeb",
    "deb http://evil bookworm main", "mirror+file:/etc/passwd", "main,contrib", "../../etc", "ro; insmod x",
    "$(reboot)", "`id`", "a}b", "quiet \"unbalanced", "LABEL=x\t/\text4", "ext4\n/dev/sdb /mnt ext4",
    "é", "ü" * 200, "\udcff"[:0] + "\ufeff", "label with spaces", "UPPER", "sd", "/dev/sdb", "/dev/xvda",
]


class Digits:
    """An integer of `n` digits, written into the TOML as such (Python cannot repr one past 4300 digits)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Digits({self.n})"


HUGE_NUMBERS = [0, -1, 1, 2**31, 2**63, 2**64, 10**309, -(10**309), Digits(4400), Digits(20000)]


@st.composite
def deep(draw: st.DrawFn) -> Deep:
    return Deep(draw(st.sampled_from([40, 331, 2000])), draw(st.sampled_from(["array", "table"])))


class Deep:
    """A value nested `depth` deep, written out without recursion (the serializer must not be the one to fail)."""

    def __init__(self, depth: int, kind: str) -> None:
        self.depth, self.kind = depth, kind


scalars = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=300),
    st.sampled_from(HUGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.one_of(
    scalars,
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=3), max_leaves=6),
    deep(),
)


def key_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key of the base (tables, arrays and leaves), so each gets hostile values."""
    paths = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            paths += key_paths(v, (*prefix, k))
    elif isinstance(data, list):
        for n, v in enumerate(data):
            paths += key_paths(v, (*prefix, n))
    return paths


def value_at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


ALL_PATHS = {name: key_paths(base) for name, base in BASES.items()}
STRING_PATHS = {name: [p for p in paths if isinstance(value_at(BASES[name], p), str)]
                for name, paths in ALL_PATHS.items()}
NEW_KEYS = [("colour",), ("rootfs", "suit"), ("kernel", "x\ny"), ("boot", "entries", 0, "tilte"), ("path",),
            ("sha256",), ("a.b",), ("",)]


def put(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        if isinstance(data, dict):
            data = data.setdefault(part, {})
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return  # an earlier mutation replaced the container: nothing to put this in
    last = path[-1]
    if isinstance(data, dict) or (isinstance(data, list) and isinstance(last, int) and last < len(data)):
        data[last] = value


def toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, Deep):
        inner = "[" * value.depth + "]" * value.depth if value.kind == "array" else \
            "{a = " * value.depth + "1" + "}" * value.depth
        return inner
    if isinstance(value, Digits):
        return "1" + "0" * (value.n - 1)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in data.items())


@st.composite
def hostile_recipes(draw: st.DrawFn, strings_only: bool = False) -> bytes:
    """A recipe file's bytes: the base with hostile values at 1-3 keys, or (rarely) raw bytes.

    Half the examples put hostile strings where the base has a string (the values that reach argv, menu.lst,
    grub.cfg, fstab and paths), the rest any value anywhere (wrong types, numbers, nesting, new keys).
    """
    mode = "strings" if strings_only else draw(st.sampled_from(["bytes"] + ["strings"] * 9 + ["values"] * 10))
    if mode == "bytes":
        return draw(st.binary(max_size=300))
    base = draw(st.sampled_from(sorted(BASES)))
    data = copy.deepcopy(BASES[base])
    for _ in range(draw(st.integers(1, 3))):
        if mode == "strings":
            put(data, draw(st.sampled_from(STRING_PATHS[base])), draw(st.sampled_from(HOSTILE_STRINGS) | st.text()))
        else:
            put(data, draw(st.sampled_from(ALL_PATHS[base] + NEW_KEYS)), draw(values))
    return toml_document(data).encode("utf-8", "surrogatepass")


def mutated(base: str, path: tuple[Any, ...], value: Any) -> bytes:
    data = copy.deepcopy(BASES[base])
    put(data, path, value)
    return toml_document(data).encode()


ZEROS_309 = "1" + "0" * 309
# The cases issue 13 found, always run first (hypothesis' explicit examples).
ISSUE_CASES = [
    mutated("lvm", ("files", 0, "dest"), "/../../../../../../../../srv/escaped"),
    mutated("lvm", ("size",), ZEROS_309), mutated("uefi", ("free",), ZEROS_309),
    mutated("lvm", ("volumes", 0, "size"), ZEROS_309), mutated("lvm", ("lvm", "volumes", 0, "size"), ZEROS_309),
    mutated("lvm", ("filesystems", "boot", "size"), ZEROS_309),
    mutated("uefi", ("filesystems", "esp", "size"), ZEROS_309),
    mutated("lvm", ("kernel", "profile"), "a" * 251),
    mutated("lvm", ("boot",), Deep(331, "array")), mutated("lvm", ("boot",), Deep(331, "table")),
    mutated("lvm", ("boot", "entries", 0, "title"), "Debian {version}"),
    mutated("lvm", ("boot", "entries", 0, "title"), "Debian {"),
    mutated("lvm", ("boot", "entries", 0, "title"), "x\nkernel /evil"),
    mutated("uefi", ("boot", "entries", 0, "title"), "x' {\n}\nmenuentry 'evil"),
    mutated("lvm", ("boot", "entries", 0, "args"), "x\ninitrd /evil"),
    mutated("uefi", ("kernel", "cmdline"), "quiet; insmod evil"),
    mutated("lvm", ("kernel", "cmdline"), "quiet\nroot=/dev/evil"),
    mutated("lvm", ("rootfs", "suite"), "--customize-hook=touch /tmp/pwned"),
    mutated("lvm", ("rootfs", "mirror"), "--customize-hook=touch /tmp/pwned"),
    mutated("lvm", ("hostname",), "a\nb"), mutated("lvm", ("filesystems", "root", "label"), "r\n"),
    mutated("lvm", ("kernel", "root"), "/dev/xvda1\t/\text4"),
]


def with_issue_cases(test: Any) -> Any:
    for raw in reversed(ISSUE_CASES):
        test = example(raw)(test)
    return test


WORKDIR = Path(tempfile.mkdtemp(prefix="imagekit-fuzz-"))  # module-wide: hypothesis reruns the test body
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
(WORKDIR / "files").mkdir()
(WORKDIR / "files/interfaces-eth0").write_text("auto eth0\n")


def write_recipe(raw: bytes, name: str = "fuzz.toml") -> Path:
    path = WORKDIR / name
    path.write_bytes(raw)
    return path


def check_rendering(recipe: Recipe) -> None:
    """An accepted recipe renders menu.lst/grub.cfg and fstab with one line per entry, mount and title."""
    profile = load_profile(recipe.kernel.profile, recipe_path=recipe.path)
    kernel = KernelInfo("6.1.0-28-cloud-amd64", "vmlinuz-6.1.0-28-cloud-amd64", "initrd.img-6.1.0-28-cloud-amd64")
    ids = FsIds("0f0e0d0c-0b0a-4908-8706-050403020100", "1f0e0d0c-0b0a-4908-8706-050403020100", "1A2B-3C4D")
    _, text = boot_config(recipe, profile, kernel, ids)
    wanted = [(e.title, e.kernel_args) for e in boot_entries(recipe, profile, kernel, ids)]
    if recipe.layout.virtualization is Virtualization.HVM:
        cfg = parse_grub_cfg(text)
        # read back as written, nothing injected (GRUB's lexer drops the quotes of dyndbg="+p", as the kernel would)
        assert [(e.title, e.args) for e in cfg.entries] == [(t, " ".join(shlex.split(a))) for t, a in wanted], text
    else:  # read back by GRUB 0.97 itself (the shell lint runs), on a disk shaped as the layout's AKI sees it
        aki = recipe.layout.spec.aki
        assert aki is not None
        if recipe.boot.timeout == 0:  # the oracle picks entries while the menu counts down
            recipe = recipe.model_copy(update={"boot": recipe.boot.model_copy(update={"timeout": 1})})
            _, text = boot_config(recipe, profile, kernel, ids)
        entries = boot_entries(recipe, profile, kernel, ids)
        read = grub097_reads(text, aki, entry_files(entries), separate_boot=recipe.separate_boot)
        assert read.titles == tuple(t for t, _ in wanted), text
        assert read.commands == entry_commands(entries, aki.legacy_root), text
    fstab = [line for line in fstab_text(recipe, ids).splitlines() if not line.startswith("#")]
    assert all(len(line.split("\t")) == 6 for line in fstab), fstab


def check_one(raw: bytes) -> str:
    """'ok' or 'rejected'; anything else than a one-line RecipeError naming the file and a key fails."""
    path = write_recipe(raw)
    try:
        recipe = load_recipe(path)
    except RecipeError as exc:
        message = str(exc)
        assert message.isprintable(), repr(message)  # one line: no newline or other control character
        assert message.startswith(f"{path}: "), message
        if exc.key is None:
            assert message.startswith((f"{path}: not valid TOML", f"{path}: nested too deeply")), message
        else:
            assert exc.key and message.startswith(f"{path}: {exc.key}: "), message
        return "rejected"
    check_rendering(recipe)
    return "ok"


@pytest.mark.parametrize("base", sorted(BASES))
def test_bases_load(base: str) -> None:
    assert check_one(toml_document(BASES[base]).encode()) == "ok"


@settings(max_examples=FUZZ_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@with_issue_cases
@given(hostile_recipes())
def test_loader_never_raises_anything_else(raw: bytes) -> None:
    check_one(raw)


@pytest.mark.parametrize("n", range(len(ISSUE_CASES)))
def test_issue_cases_are_rejected(n: int) -> None:
    assert check_one(ISSUE_CASES[n]) == "rejected"


@settings(max_examples=CLI_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(hostile_recipes(strings_only=True))
def test_build_cli_rejects_with_one_line(raw: bytes) -> None:
    path = write_recipe(raw, "cli.toml")
    try:
        load_recipe(path)
    except RecipeError as exc:
        key = exc.key
    else:
        assume(False)
    out = WORKDIR / "cli-out"
    proc = run_imagekit("build", path, "-o", out / "x.img")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {path}: {key + ': ' if key else ''}"), proc.stderr
    assert proc.stdout == ""
    assert not out.exists()
