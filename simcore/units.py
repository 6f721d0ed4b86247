"""Parsing of sizes and bandwidths given by users.

Sizes: ``4GB`` (10^9 bytes), ``4GiB`` (2^30), ``512MB``, ``512MiB``, ``1.5TB``, ``100kB`` / ``100KiB``,
``123B`` or a bare number of bytes. Bandwidths: a number of GB/s (``60``) or ``60GB/s``,
``500MB/s``, ``1GiB/s``. Anything else is a ConfigError naming the value and the accepted forms.
"""

from __future__ import annotations

import math
import re

from simcore.errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
MAX_BYTES = 1e18
"""Largest size accepted (1 EB): far beyond any device, small enough that byte counts stay exact."""
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int | float, what: str = "size") -> int:
    """Bytes in a size such as ``4GB`` or ``3.5GiB`` (GB = 10^9 bytes, GiB = 2^30)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"{what} must not be negative, got {text}")
        if not text < MAX_BYTES:  # also NaN and infinity
            raise ConfigError(f"{what} must be a finite number of bytes below 10^18, got {text}")
        return int(text)
    m = _SIZE_RE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m and str(text).strip().startswith("-"):
        raise ConfigError(f"{what} must not be negative, got {text!r}")
    if not m or unit not in _UNITS:
        raise ConfigError(
            f"cannot read {what} {text!r}: write a number with a unit such as 4GB, 512MB or 4GiB "
            "(GB = 10^9 bytes, GiB = 2^30 bytes)"
        )
    value = float(m.group(1)) * _UNITS[unit]
    if not value < MAX_BYTES:  # 1e400 reads as inf
        raise ConfigError(f"{what} {text!r} is too large: sizes go up to 1 EB (10^18 bytes)")
    return int(round(value))


def parse_bandwidth(text: str | int | float, what: str = "bandwidth") -> float:
    """Bandwidth in GB/s (10^9 bytes/s) from ``60``, ``60GB/s``, ``500MB/s`` or ``1GiB/s``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        if s.lower().endswith("/s"):
            try:
                value = parse_size(s[:-2], what) / 1e9 if s[:-2].strip()[-1:].isalpha() else None
            except ConfigError:
                value = float("inf") if _SIZE_RE.match(s[:-2]) else None  # a size too large to read
            if value is None:
                raise ConfigError(
                    f"cannot read {what} {text!r}: write GB/s as a number (60) or with a unit (60GB/s, 500MB/s)"
                )
        else:
            try:
                value = float(s)
            except ValueError:
                raise ConfigError(
                    f"cannot read {what} {text!r}: write GB/s as a number (60) or with a unit (60GB/s, 500MB/s)"
                ) from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{what} must be a positive, finite number of GB/s, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """Human-readable decimal size: 1.23 GB, 456 MB, 12.0 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}" if abs(n) / scale < 100 else f"{n / scale:.0f} {unit}"
    return f"{n:.0f} B"
