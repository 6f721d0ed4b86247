"""The Flash read model (DESIGN.md, "How Flash is read"): a token's missed units become Flash requests.

Per token and (layer, kind), the cache kernels set one bit per missed unit at the unit's *position* in
Flash (``miss_bits``, uint64[T_b, ceil(U / 64)]; position = the unit index, or ``layout[u]`` when a
layout orders the units). ``kernels.reads_batch`` turns each token's bits into requests:

1. unit ``p`` occupies bytes ``[p * b, (p + 1) * b)`` of the kind's region (``b`` = unit bytes, which
   may be fractional at e.g. 4.125 bits per weight; the region starts on a page boundary);
2. a gap between missed units is read through (its bytes read and thrown away) when it is at most
   ``gap`` units long: a page's worth, or more where the curve makes reading it cheaper than another
   request (:func:`gap_units`: the most pages g for which one request over 2 + g pages is no slower
   than two one-page requests; at most 31 units);
3. each resulting run of units is rounded out to whole pages; runs whose pages touch are one request;
4. a request of ``s`` bytes takes ``s / bw(s)`` seconds, ``bw`` the device's throughput-versus-request-
   size curve at its queue depth, interpolated linearly in log2(size); below the curve's first size a
   request costs what a request of that size costs (the device is then bound by requests per second,
   not bytes); above its last size it runs at the last point's throughput.

Where the units are stored: each (layer, kind) in its own region, in unit order (or a layout's order).
dip's input unit (a W_u column and a W_g column, both indexed by the input channel) is stored bundled,
as the DIP paper assumes; a neuron unit that spans several matrices (``up_down``: a W_u row and a W_d
column) is stored in each matrix's own region unless ``--flash-bundle`` stores a neuron's slices
together, as "LLM in a Flash" does (``ReadSpec.pieces``).

The constant model (``--flash-model constant``, the DIP paper's) is ``missed bytes / flash_bw_gbps``;
it needs none of this and its figures are unchanged.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from simcore.engine.kernels.reads import reads_batch, request_seconds, request_table  # noqa: F401 (re-exported)

MODELS = ("constant", "curve")


class Curve(NamedTuple):
    """A device's random-read curve as the kernels take it: request sizes (float64[P], bytes,
    increasing), their log2 and the throughput at each (float64[P], bytes per second)."""

    size: np.ndarray
    log2_size: np.ndarray
    bps: np.ndarray


def curve_of(points) -> Curve:
    """The kernels' :class:`Curve` from a profile's ``flash_curve`` ([[request bytes, GB/s], ...])."""
    a = np.asarray(points, np.float64).reshape(-1, 2)
    return Curve(np.ascontiguousarray(a[:, 0]), np.log2(a[:, 0]), np.ascontiguousarray(a[:, 1] * 1e9))


def words(n_units: int) -> int:
    """uint64 words of one token's miss bits."""
    return (n_units + 63) // 64


class ReadSpec(NamedTuple):
    """How one (layer, kind)'s misses are read: unit bytes, page bytes, the curve, the unit positions
    (int32[U], a layout; empty: position = unit index) and the pieces of a unit: a unit made of slices
    of several matrices stored each in its own region (a neuron's W_u row and W_d column, unless
    bundled) is read as that many requests patterns, one per region, of ``unit_bytes / pieces``."""

    unit_bytes: float
    page: float
    curve: Curve
    pos: np.ndarray
    pieces: int = 1


def cost_table(curve: Curve, page: float) -> np.ndarray:
    """Seconds of a request of k pages, k = 0 .. the curve's last size in pages (float64[K + 1]); beyond,
    requests run at the last throughput."""
    return request_table(int(np.ceil(curve.size[-1] / page)) + 1, float(page), curve)


MAX_GAP_UNITS = 31
"""Gaps are read through up to this many units (the kernels look for the run end before a run start a
word at a time, within 32 positions)."""


def gap_units(table: np.ndarray, page: float, unit_bytes: float) -> int:
    """The longest gap, in units, that is read through rather than skipped: a page, or the most pages g
    for which one request over two pages and the gap between them is no slower than two one-page
    requests, whichever is more; at most MAX_GAP_UNITS."""
    g = 0
    while g + 3 < table.shape[0] and table[g + 3] <= 2 * table[1]:
        g += 1
    return min(int(max(page, g * page) // unit_bytes), MAX_GAP_UNITS)


_BUFFERS = threading.local()
"""Each thread's miss-bit buffer (``Reads.bits``), reused batch after batch."""

_STATIC: dict = {}
"""Reads' arrays that depend only on the unit count, unit and page bytes and the curve (read-only)."""


class Reads:
    """Per-token Flash reads of one (layer, kind): requests (int32[T]), bytes read and seconds
    (float64[T]), filled batch by batch from the kernels' miss bits."""

    def __init__(self, spec: ReadSpec, n_units: int, T: int):
        self.spec, self.n = spec, n_units
        self.piece = spec.unit_bytes / spec.pieces  # bytes of a unit in one matrix's region
        key = (n_units, self.piece, spec.page, spec.curve.size.tobytes(), spec.curve.bps.tobytes())
        got = _STATIC.get(key)
        if got is None:  # every layer of a model has the same: computed once
            table = cost_table(spec.curve, spec.page)
            p = np.arange(n_units + 1, dtype=np.float64) * self.piece / spec.page  # unit boundaries, in pages
            first_page = np.floor(p[:-1]).astype(np.int64)  # the page of each position's first byte
            end_page = np.ceil(p[1:]).astype(np.int64)  # one past the page of its last byte
            if len(_STATIC) > 64:
                _STATIC.clear()
            got = _STATIC[key] = (table, gap_units(table, spec.page, self.piece), first_page, end_page)
        self.table, self.gap, self.first_page, self.end_page = got
        self.requests = np.zeros(T, np.int32)
        self.bytes_read = np.zeros(T, np.float64)
        self.seconds = np.zeros(T, np.float64)

    def bits(self, n_tokens: int) -> np.ndarray:
        """Zeroed miss bits for a batch of ``n_tokens`` tokens (uint64[n_tokens, W]): this thread's buffer,
        valid until its next call (fresh memory would cost a page fault every 4 KiB, batch after batch)."""
        w = words(self.n)
        buf = getattr(_BUFFERS, "bits", None)
        if buf is None or buf.size < n_tokens * w:
            buf = _BUFFERS.bits = np.empty(n_tokens * w, np.uint64)
        out = buf[: n_tokens * w].reshape(n_tokens, w)
        out.fill(0)
        return out

    def account(self, bits: np.ndarray, t0: int) -> None:
        """Turn the miss bits of tokens [t0, t0 + len(bits)) into requests."""
        sl = slice(t0, t0 + bits.shape[0])
        s = self.spec
        reads_batch(
            bits,
            self.gap,
            self.first_page,
            self.end_page,
            s.page,
            self.table,
            s.curve,
            self.requests[sl],
            self.bytes_read[sl],
            self.seconds[sl],
        )
        if s.pieces > 1:  # the same pattern in each matrix's region
            self.requests[sl] *= s.pieces
            self.bytes_read[sl] *= s.pieces
            self.seconds[sl] *= s.pieces
