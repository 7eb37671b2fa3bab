"""Where imagekit keeps what it can reuse: bootstrapped root filesystems, GRUB images, probes.

`IMAGEKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/imagekit`, else `~/.cache/imagekit`.
Entries are content-addressed (a hash of their inputs), written under a temporary name and
renamed when complete, so an interrupted run never leaves a half-made entry under a real key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    env = os.environ.get("IMAGEKIT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imagekit"


def key_of(inputs: Any) -> str:
    """A stable hash of JSON-able inputs (dict keys sorted)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]
