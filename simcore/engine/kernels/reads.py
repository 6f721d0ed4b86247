"""The Flash read model's kernels (``simcore.engine.flash`` explains the model): mark a token's missed
units at their Flash positions, turn the marks into page-rounded, gap-merged requests and time them on
the device's throughput-versus-request-size curve."""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT
from simcore.engine.kernels.f16 import trailing_zeros64


@njit(**NJIT)
def request_seconds(nbytes, curve):
    """Time of one read request of ``nbytes`` bytes under ``curve`` (module docstring, rule 4)."""
    size, lg, bps = curve.size, curve.log2_size, curve.bps
    last = size.shape[0] - 1
    if nbytes <= size[0]:
        return size[0] / bps[0]
    if nbytes >= size[last]:
        return nbytes / bps[last]
    x = np.log2(nbytes)
    lo, hi = 0, last  # lg[lo] < x < lg[hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if lg[mid] <= x:
            lo = mid
        else:
            hi = mid
    f = (x - lg[lo]) / (lg[hi] - lg[lo])
    return nbytes / (bps[lo] + f * (bps[hi] - bps[lo]))


@njit(**NJIT)
def _runs(bits, r0, r1):
    """The runs of consecutive set bits of ``bits`` (uint64[W]), in order: run j is positions
    ``r0[j] .. r1[j]`` (int64 scratch of at least W * 32 + 1). Returns the number of runs."""
    n = 0
    prev = -2
    for w in range(bits.shape[0]):
        word = bits[w]
        while word != 0:
            p = w * 64 + np.int64(trailing_zeros64(word))
            word &= word - np.uint64(1)
            if p == prev + 1:
                r1[n - 1] = p
            else:
                r0[n] = p
                r1[n] = p
                n += 1
            prev = p
    return n


@njit(**NJIT)
def token_reads(bits, unit_bytes, page, curve, r0, r1, qs, qe):
    """The Flash requests of one token (module docstring): ``bits`` (uint64[W]) has bit p set for each
    missed unit at Flash position p; ``r0``, ``r1`` (int64) and ``qs``, ``qe`` (float64), each at least
    W * 32 + 1 long, are scratch. Returns (requests, bytes read, seconds)."""
    n = _runs(bits, r0, r1)
    m = 0  # runs rounded out to pages; those whose pages touch or overlap joined
    for j in range(n):
        lo = np.floor(r0[j] * unit_bytes / page) * page
        hi = np.ceil((r1[j] + 1) * unit_bytes / page) * page
        if m > 0 and lo <= qe[m - 1]:
            qe[m - 1] = max(qe[m - 1], hi)
        else:
            qs[m] = lo
            qe[m] = hi
            m += 1
    if m == 0:
        return 0, 0.0, 0.0
    n_req, nbytes, secs = 0, 0.0, 0.0
    ps, pe = qs[0], qe[0]
    pcost = request_seconds(pe - ps, curve)
    for j in range(1, m):
        cost = request_seconds(qe[j] - qs[j], curve)
        joined = request_seconds(qe[j] - ps, curve)
        if joined <= pcost + cost:  # reading the gap is cheaper than another request
            pe, pcost = qe[j], joined
        else:
            n_req, nbytes, secs = n_req + 1, nbytes + (pe - ps), secs + pcost
            ps, pe, pcost = qs[j], qe[j], cost
    return n_req + 1, nbytes + (pe - ps), secs + pcost


@njit(**NJIT)
def reads_batch(miss_bits, unit_bytes, page, curve, requests, bytes_read, seconds):
    """:func:`token_reads` for each row of ``miss_bits`` (uint64[T_b, W]); outputs (T_b,): requests
    int32, bytes read and seconds float64."""
    half = miss_bits.shape[1] * 32 + 1  # at most this many runs: every other bit
    r0, r1 = np.empty(half, np.int64), np.empty(half, np.int64)
    qs, qe = np.empty(half, np.float64), np.empty(half, np.float64)
    for i in range(miss_bits.shape[0]):
        requests[i], bytes_read[i], seconds[i] = token_reads(miss_bits[i], unit_bytes, page, curve, r0, r1, qs, qe)


@njit(**NJIT)
def mark_missed(used, in_cache, pos, row):
    """Set the bits (``row``: uint64[W]) of the units ``used`` and not ``in_cache`` (bool[U]) at their
    Flash positions (``pos``: int32[U], or empty for position = unit index). Call before the cache
    accounts the token."""
    ident = pos.shape[0] == 0
    for u in range(used.shape[0]):
        if used[u] and not in_cache[u]:
            p = u if ident else pos[u]
            row[p >> 6] |= np.uint64(1) << np.uint64(p & 63)


@njit(**NJIT)
def mark_unit(u, pos, row):
    """Set the bit of unit ``u``'s Flash position in ``row`` (see :func:`mark_missed`)."""
    p = u if pos.shape[0] == 0 else pos[u]
    row[p >> 6] |= np.uint64(1) << np.uint64(p & 63)
