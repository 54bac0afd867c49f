"""Timestamp and date attributes: stored as int64 counts of their Arrow unit since the Unix
epoch (UTC), compared exactly in that unit.

Filter operands are ISO-8601 strings (``"2024-05-01"``, ``"2024-05-01T12:00:00Z"``,
``"2024-05-01T14:00+02:00"``; no offset means UTC) or epoch seconds (int or float). An
operand is converted to the column's unit as an exact fraction, so ``$gt`` on a
nanosecond column never rounds the wrong way.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from fractions import Fraction

import numpy as np

#: Ticks of each unit per second (``D``: date columns, counted in days).
PER_SECOND: dict[str, Fraction] = {
    "s": Fraction(1),
    "ms": Fraction(1000),
    "us": Fraction(10**6),
    "ns": Fraction(10**9),
    "D": Fraction(1, 86400),
}
UNITS = tuple(PER_SECOND)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_instant(value: str) -> Fraction:
    """Epoch seconds (exact) of an ISO-8601 date or date-time; ValueError when it does not parse."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if len(text) == 10:  # a date: midnight UTC
        d = date.fromisoformat(text)
        moment = datetime(d.year, d.month, d.day, tzinfo=UTC)
    else:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return Fraction(delta.days * 86400 + delta.seconds) + Fraction(delta.microseconds, 10**6)


def to_ticks(value: int | float | str, unit: str) -> Fraction:
    """An operand (ISO string or epoch seconds) as an exact count of ``unit`` ticks."""
    seconds = parse_instant(value) if isinstance(value, str) else Fraction(value)
    return seconds * PER_SECOND[unit]


def iso_strings(ticks: np.ndarray, unit: str) -> list[str]:
    """ISO-8601 text of int64 ticks: dates as ``YYYY-MM-DD``, instants in UTC with ``Z``."""
    if unit == "D":
        return np.datetime_as_string(ticks.astype("datetime64[D]")).tolist()
    return np.datetime_as_string(ticks.astype(f"datetime64[{unit}]"), timezone="UTC").tolist()
