"""Checks of the options given at submit, and of task and destination names.

A bad option is refused before anything is written: a `priority="high"` or a
NaN `delay` that reached the journal would stop every later claim. The checks
sit on the submit path, so the common case costs next to nothing: options left
at their defaults skip them, and a name is checked once, then remembered.
"""

from __future__ import annotations

import math
import re

#: How far from now `delay=` or `at=` may put a job: 100 years, in seconds. A time
#: beyond that is a unit mistake (milliseconds given as seconds), not a plan.
MAX_HORIZON = 100 * 365.25 * 86400.0
#: Priorities are 32-bit signed integers (what every backend stores natively).
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
#: Longest task or destination name, and longest `key=`, in characters.
MAX_NAME_CHARS = 255
MAX_KEY_CHARS = 1024

# Control characters (C0, DEL, C1) and surrogates: the latter cannot be stored as
# UTF-8 at all ("\udcff" is what os.fsdecode makes of an undecodable byte).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_checked_names: set[str] = set()
_MAX_REMEMBERED = 10_000  # dynamic destinations ("endpoint:42") must not grow this forever


def check_name(name: object, what: str = "name") -> str:
    """`name` if it can name a task or destination; `TypeError` or `ValueError` if not."""
    if isinstance(name, str) and name in _checked_names:
        return name
    text = _check_text(name, what, MAX_NAME_CHARS)
    if len(_checked_names) >= _MAX_REMEMBERED:
        _checked_names.clear()
    _checked_names.add(text)
    return text


def check_key(key: object) -> str:
    """`key` if it can be a job's idempotency key; `TypeError` or `ValueError` if not."""
    return _check_text(key, "key", MAX_KEY_CHARS)


def _check_text(text: object, what: str, limit: int) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    if not text:
        raise ValueError(f"{what} must not be empty")
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text)} characters long; at most {limit} are allowed")
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        kind = "a surrogate" if bad.group() >= "\ud800" else "a control character"
        raise ValueError(
            f"{what} {text[:60]!r} contains {kind} ({bad.group()!r} at index {bad.start()})"
        )
    return text


def check_priority(priority: object) -> int:
    """`priority` if it is an int within the 32-bit range (a bool is refused)."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}")
    return int(priority)  # an IntEnum member is stored as its value


def run_at(now: float, delay: object, at: object) -> float:
    """When a job given `delay=` (seconds from now) or `at=` (seconds since the epoch)
    is due; `ValueError` for a time that is not finite, negative or absurd."""
    if delay is None:
        if at is None:
            return now
        when = check_seconds(at, "at")
        if abs(when - now) > MAX_HORIZON:
            raise ValueError(f"at={when!r} is more than 100 years from now")
        return when
    if at is not None:
        raise ValueError("give delay= or at=, not both")
    seconds = check_seconds(delay, "delay")
    if seconds < 0:
        raise ValueError(f"delay must be >= 0 seconds, not {seconds!r}")
    if seconds > MAX_HORIZON:
        raise ValueError(f"delay={seconds!r} s is more than 100 years")
    return now + seconds


def check_seconds(value: object, what: str) -> float:
    """A finite number of seconds as a float: `TypeError` for a non-number (a bool
    included), `ValueError` for NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError(f"{what} must be a finite number of seconds, not {seconds!r}")
    return seconds
