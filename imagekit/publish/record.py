"""The publish record: what was published where, as JSON, and the query behind `imagekit published`.

Each publish writes `<image>.publish.json` beside the image and updates the record store
(IMAGEKIT_PUBLISHED, default `$XDG_DATA_HOME/imagekit/published.json`): one entry per AMI
name, replaced when the name is published again. Both are written to a temp file and renamed.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagekit.util.atomic import write_bytes
from imagekit.util.errors import UsageError

SCHEMA = "imagekit.publish/1"


def default_store() -> Path:
    if env := os.environ.get("IMAGEKIT_PUBLISHED"):
        return Path(env)
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "imagekit" / "published.json"


def publish_manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".publish.json")


def write_json(path: Path, data: Any) -> None:
    """A reader never sees half a file (util/atomic)."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_store(store: Path) -> list[dict[str, Any]]:
    if not store.exists():
        return []
    try:
        data = json.loads(store.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{store}: cannot read the publish record: {exc}") from exc
    entries = data.get("published", []) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UsageError(f"{store}: not an imagekit publish record (no 'published' list)")
    return entries


@contextmanager
def locked(store: Path) -> Iterator[None]:
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_name(store.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def add_record(store: Path, record: dict[str, Any]) -> None:
    """Insert or replace (by name) the record, merging the regions already recorded for that name."""
    with locked(store):
        entries = read_store(store)
        old = next((e for e in entries if e.get("name") == record["name"]), None)
        if old is not None and old.get("image", {}).get("id") == record.get("image", {}).get("id"):
            record = {**record, "regions": {**old.get("regions", {}), **record.get("regions", {})}}
        entries = [e for e in entries if e.get("name") != record["name"]] + [record]
        write_json(store, {"schema": SCHEMA, "published": entries})


def query(store: Path, name: str | None = None, region: str | None = None) -> list[dict[str, Any]]:
    """Records whose name matches the glob `name` (and that have `region`), oldest first."""
    found = []
    for entry in read_store(store):
        if name and not fnmatch.fnmatchcase(str(entry.get("name", "")), name):
            continue
        if region and region not in entry.get("regions", {}):
            continue
        found.append(entry)
    return sorted(found, key=lambda e: str(e.get("published_at", "")))
