"""Bounded waits and retries: every poll has a deadline and an error state that is final.

`poll()` calls a probe until it returns a value, raises, or the deadline passes;
`retry()` repeats a call on a transient error with exponential backoff and jitter.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from imagekit.util.errors import ImagekitError

T = TypeVar("T")


class WaitTimeout(ImagekitError):
    """A bounded wait ran out of time."""


class Interrupted(ImagekitError):
    """Ctrl-C (SIGINT) during a publish, with what was left behind named; exit 130 like any interrupt."""

    exit_code = 130


@dataclass(frozen=True)
class Backoff:
    """Delays base, 2*base, 4*base ... capped at `cap`, with full jitter; `attempts` tries in all."""

    attempts: int = 8
    base: float = 0.25
    cap: float = 20.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


def poll(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 5.0,
    max_interval: float = 30.0,
    hint: str | None = None,
) -> T:
    """Call `probe` until it returns non-None; it raises for a final error state.

    The interval grows by half each round up to `max_interval`; after `timeout` seconds,
    WaitTimeout names `what`.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        result = probe()
        if result is not None:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"gave up waiting for {what} after {timeout:.0f}s", hint=hint)
        time.sleep(min(delay, left))
        delay = min(max_interval, delay * 1.5)


def retry(
    call: Callable[[], T],
    *,
    retryable: Callable[[BaseException], bool],
    backoff: Backoff = Backoff(),
) -> T:
    """Run `call`; on an exception `retryable` accepts, sleep and try again, up to backoff.attempts."""
    for attempt in range(backoff.attempts):
        try:
            return call()
        except Exception as exc:
            if not retryable(exc) or attempt == backoff.attempts - 1:
                raise
            time.sleep(backoff.delay(attempt))
    raise AssertionError("unreachable")


def snapshot_completed(ec2: Any, snapshot_id: str, *, timeout: float, interval: float) -> None:
    """Wait for `completed`; `error` is final."""

    def probe() -> bool | None:
        snaps = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        state = snaps[0]["State"] if snaps else "missing"
        if state == "completed":
            return True
        if state in {"error", "missing", "recoverable"}:
            reason = snaps[0].get("StateMessage", "") if snaps else ""
            raise ImagekitError(f"snapshot {snapshot_id} is in state {state}" + (f": {reason}" if reason else ""))
        return None

    poll(probe, what=f"snapshot {snapshot_id} to complete", timeout=timeout, interval=interval)


def image_available(ec2: Any, image_id: str, *, timeout: float, interval: float) -> dict[str, Any]:
    """Wait for `available`; `failed`, `invalid`, `deregistered` and `error` are final. Returns the image."""

    def probe() -> dict[str, Any] | None:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
        state = images[0]["State"] if images else "missing"
        if state == "available":
            return dict(images[0])
        if state in {"failed", "invalid", "deregistered", "error", "missing"}:
            reason = (images[0].get("StateReason") or {}).get("Message", "") if images else ""
            raise ImagekitError(f"image {image_id} is in state {state}{': ' + reason if reason else ''}")
        return None

    return poll(probe, what=f"image {image_id} to become available", timeout=timeout, interval=interval)
