"""The Flash read model (DESIGN.md, "How Flash is read"): a token's missed units become Flash requests.

Per token and (layer, kind), the cache kernels set one bit per missed unit at the unit's *position* in
Flash (``miss_bits``, uint64[T_b, ceil(U / 64)]; position = the unit index, or ``layout[u]`` when a
layout orders the units). ``kernels.reads_batch`` turns each token's bits into requests:

1. unit ``p`` occupies bytes ``[p * b, (p + 1) * b)`` of the kind's region (``b`` = unit bytes, which
   may be fractional at e.g. 4.125 bits per weight; the region starts on a page boundary);
2. consecutive missed units form runs; each run is rounded out to whole pages; runs whose pages touch
   or overlap are one request;
3. walking left to right, a request is merged with the one before it (the gap between them read and
   thrown away) when one larger request costs no more time than the two;
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

from typing import NamedTuple

import numpy as np

from simcore.engine.kernels.reads import reads_batch

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


class Reads:
    """Per-token Flash reads of one (layer, kind): requests (int32[T]), bytes read and seconds
    (float64[T]), filled batch by batch from the kernels' miss bits."""

    def __init__(self, spec: ReadSpec, n_units: int, T: int):
        self.spec, self.n = spec, n_units
        self.requests = np.zeros(T, np.int32)
        self.bytes_read = np.zeros(T, np.float64)
        self.seconds = np.zeros(T, np.float64)

    def bits(self, n_tokens: int) -> np.ndarray:
        """Zeroed miss bits for a batch of ``n_tokens`` tokens (uint64[n_tokens, W])."""
        return np.zeros((n_tokens, words(self.n)), np.uint64)

    def account(self, bits: np.ndarray, t0: int) -> None:
        """Turn the miss bits of tokens [t0, t0 + len(bits)) into requests."""
        sl = slice(t0, t0 + bits.shape[0])
        s = self.spec
        b = s.unit_bytes / s.pieces
        reads_batch(bits, b, s.page, s.curve, self.requests[sl], self.bytes_read[sl], self.seconds[sl])
        if s.pieces > 1:  # the same pattern in each matrix's region
            self.requests[sl] *= s.pieces
            self.bytes_read[sl] *= s.pieces
            self.seconds[sl] *= s.pieces
