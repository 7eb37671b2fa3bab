"""Modules imagekit imports only for some commands: a missing one is a one-line error with how to get it.

moto comes with the `local-cloud` extra; guestfs and parted are Debian's python3-guestfs and
python3-parted, which a venv sees only when made with --system-site-packages (scripts/setup does).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from imagekit.util.errors import UsageError

SYSTEM_HINT = ("apt-get install {package}, and make the venv from the system Python with "
               "`/usr/bin/python3 -m venv --system-site-packages` (scripts/setup does both)")
HINTS = {
    "moto.server": "pip install 'imagekit[local-cloud]' (moto[server] 5.2.5)",
    "guestfs": SYSTEM_HINT.format(package="python3-guestfs"),
    "parted": SYSTEM_HINT.format(package="python3-parted"),
}


def require(module: str, *, needed_by: str) -> ModuleType:
    """Import `module` for `needed_by` (e.g. "imagekit local-cloud"), or fail with exit 2 and the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or module).split(".")[0]  # the distribution to install, not a submodule
        raise UsageError(f"{needed_by} needs the Python module {missing}, which is not installed",
                         hint=HINTS.get(module)) from None
