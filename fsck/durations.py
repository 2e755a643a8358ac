"""Durations as every option and policy file writes them: `168h`, `7d`, `1h30m`, `90s`, `2w` (the units
of the registry's own config, plus d and w). Pure."""

from __future__ import annotations

import re
from datetime import timedelta

LONGEST = timedelta(days=100 * 365)
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class DurationError(ValueError):
    """The text is no duration this tool takes; the message is one line for the user."""


def parse_duration(text: str, *, bare_zero: bool = False) -> timedelta:
    """`bare_zero`: a plain `0` is zero (no unit needed), as `--upload-age 0`."""
    compact = text.strip().replace(" ", "")
    if bare_zero and compact == "0":
        return timedelta(0)
    parts = _PART.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise DurationError(f"{text!r} is not a duration like 168h, 7d or 1h30m")
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds > LONGEST.total_seconds():
        raise DurationError(f"{text!r} is longer than this tool can count ({LONGEST.days} days at most)")
    return timedelta(seconds=seconds)
