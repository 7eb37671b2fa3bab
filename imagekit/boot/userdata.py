"""EC2 user-data: render a jinja2 template (a shell script or cloud-config) and hold it to EC2's limit.

EC2 takes at most 16384 bytes of user-data, counted before base64 (seed 001: Kumina's install
script, Puppet certificates, partitioning and hostname fit in about 3 KB of it). Over the limit the
render fails and says by how much; gzip (which cloud-init and the metadata service pass through
untouched) is used only when asked, and must fit as well. Output is deterministic: gzip without a
timestamp or file name.
"""

from __future__ import annotations

import gzip
import os
import shlex
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

from imagekit.util.errors import ImagekitError, UsageError

LIMIT = 16384  # bytes, raw (EC2 RunInstances UserData, before base64)
GZIP_MAGIC = b"\x1f\x8b"

# cloud-init's part types, by their first line (cloudinit/handlers): what the guest will do with it.
KINDS = (
    ("#!", "shell script"),
    ("#cloud-config-archive", "cloud-config archive"),
    ("#cloud-config", "cloud-config"),
    ("#cloud-boothook", "cloud boothook"),
    ("#include", "include list"),
    ("#part-handler", "part handler"),
    ("#upstart-job", "upstart job"),
    ("Content-Type: multipart/", "MIME multi-part"),
)


class OverLimit(ImagekitError):
    pass


@dataclass(frozen=True)
class UserData:
    data: bytes  # exactly what EC2 gets
    raw_size: int  # the rendered text's size before any gzip
    gzipped: bool
    kind: str

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def spare(self) -> int:
        return LIMIT - self.size


def parse_vars(values: tuple[str, ...] | list[str], base: Path | None = None) -> dict[str, str]:
    """`k=v` pairs; `k=@path` reads the value from a file (a certificate, a key)."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--var {value!r}: expected NAME=VALUE (or NAME=@FILE)")
        if val.startswith("@"):
            path = Path(val[1:])
            if base is not None and not path.is_absolute():
                path = base / path
            try:
                val = path.read_text()
            except OSError as exc:
                raise UsageError(f"--var {key}=@{val[1:]}: cannot read {path}: {exc.strerror}") from None
        out[key] = val
    return out


def _template_line(exc: BaseException, template: Path) -> tuple[str, int | None]:
    """(file, line) of the innermost template frame of a render error: jinja2 maps its frames to
    template lines, so an error in an included template names that template."""
    where: tuple[str, int | None] = (str(template), None)
    folder = os.fspath(template.parent)
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if name.startswith(folder) and not name.endswith(".py"):
            where = (name, lineno)
    return where


def render_template(template: Path, variables: dict[str, str]) -> str:
    """Render with StrictUndefined: a missing variable is an error naming the file and the line."""
    import jinja2

    if not template.is_file():
        raise UsageError(f"{template}: no such template")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(template.parent), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["gzip_b64"] = _gzip_b64
    env.filters["shquote"] = shlex.quote
    try:
        tmpl = env.get_template(template.name)
        return tmpl.render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or str(template)
        raise UsageError(f"{where}:{exc.lineno}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise UsageError(f"{template}: includes {exc.name!r}, which is not in {template.parent}") from None
    except jinja2.UndefinedError as exc:
        where, line = _template_line(exc, template)
        name = exc.message.split("'")[1] if exc.message and exc.message.count("'") >= 2 else None
        hint = f"pass it with --var {name}=VALUE" if name else None
        raise UsageError(f"{where}:{line or '?'}: {exc.message}", hint=hint) from None
    except Exception as exc:  # anything a template expression raises (a filter, 1/0, a bad int())
        where, line = _template_line(exc, template)
        raise UsageError(f"{where}:{line or '?'}: {type(exc).__name__}: {exc}") from None


def _gzip_b64(text: str) -> str:
    """A filter for templates that embed a file compressed (`{{ cert | gzip_b64 }}`)."""
    import base64

    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()


def kind_of(data: bytes) -> str:
    """What cloud-init (or a bootstrap script) will make of the data; "gzip (...)" when compressed."""
    if data.startswith(GZIP_MAGIC):
        try:
            inner = zlib.decompressobj(wbits=31).decompress(data, 4096)
        except zlib.error:
            return "gzip (corrupt)"
        return f"gzip ({kind_of(inner)})"
    head = data[:64].decode("utf-8", "replace")
    for prefix, kind in KINDS:
        if head.startswith(prefix):
            return kind
    return "unknown"


def compress(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _over(size: int) -> str:
    over = size - LIMIT
    return f"{over} byte{'s' if over != 1 else ''} over EC2's limit of {LIMIT} bytes"


def encode(text: str | bytes, *, use_gzip: bool, name: str) -> UserData:
    """The bytes EC2 gets, within the limit, or OverLimit saying by how much (and whether gzip would help)."""
    raw = text.encode() if isinstance(text, str) else text
    if use_gzip:
        packed = compress(raw)
        if len(packed) > LIMIT:
            raise OverLimit(f"{name}: user-data is {len(packed)} bytes gzipped ({len(raw)} raw), {_over(len(packed))}",
                            hint="move the bulk out of user-data: fetch it at boot from where the instance can reach")
        return UserData(packed, len(raw), True, kind_of(packed))
    if len(raw) > LIMIT:
        packed_size = len(compress(raw))
        if packed_size <= LIMIT:
            hint = f"gzipped it would be {packed_size} bytes, which fits: add --gzip"
        else:
            hint = f"even gzipped it is {packed_size} bytes: move the bulk out of user-data"
        raise OverLimit(f"{name}: user-data is {len(raw)} bytes, {_over(len(raw))}", hint=hint)
    return UserData(raw, len(raw), False, kind_of(raw))


def check_cloud_config(data: bytes, name: str) -> None:
    """A #cloud-config part must be YAML mapping; say where it is not."""
    import yaml  # PyYAML: a dependency (pyproject.toml), imported only when there is cloud-config to check

    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: cloud-config is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{name}{where}: cloud-config is not valid YAML: {problem}") from None
    if doc is not None and not isinstance(doc, dict):
        raise UsageError(f"{name}: cloud-config must be a YAML mapping (keys such as packages, runcmd)")


def check_data(data: bytes, name: str) -> UserData:
    """Check user-data as it would be sent: size (raw bytes, gzipped or not) and, for cloud-config, YAML."""
    if len(data) > LIMIT:
        hint = None
        if not data.startswith(GZIP_MAGIC):
            packed = len(compress(data))
            hint = f"gzipped it would be {packed} bytes" + (", which fits" if packed <= LIMIT else ", still too big")
        raise OverLimit(f"{name}: user-data is {len(data)} bytes, {_over(len(data))}", hint=hint)
    gzipped = data.startswith(GZIP_MAGIC)
    plain = data
    if gzipped:
        try:
            plain = zlib.decompressobj(wbits=31).decompress(data, 1 << 20)
        except zlib.error as exc:
            raise UsageError(f"{name}: starts like gzip but does not decompress: {exc}") from None
    ud = UserData(data, len(plain), gzipped, kind_of(data))
    if ud.kind.endswith("cloud-config") or ud.kind == "gzip (cloud-config)":
        check_cloud_config(plain, name)
    return ud
