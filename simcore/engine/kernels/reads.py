"""The Flash read model's kernels (``simcore.engine.flash`` explains the model): mark a token's missed
units at their Flash positions, read the short gaps through, round the runs out to pages and time the
requests on the device's throughput-versus-request-size curve.

Speed: a token of a Mistral-7B down kind misses thousands of its 14,336 units, so nothing here works
per missed unit. Marks are packed 64 units to a word (one byte compare and mask move per word); the run
starts and ends come from word shifts, and a gap short enough to read through is found by a window OR
over the run ends (by doubling, a pass over the words per step); only the runs that remain, few, are
visited one by one, each ending at the last run end before the next (a leading-zero count); a
request's time is a table lookup by its size in pages.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT
from simcore.engine.kernels.f16 import leading_zeros64, nonzero_bytes64, trailing_zeros64

ONE = np.uint64(1)


@njit(**NJIT)
def request_seconds(nbytes, curve):
    """Time of one read request of ``nbytes`` bytes under ``curve`` (``flash.Curve``): throughput
    interpolated linearly in log2 size; below the first size a request costs the first size's time,
    above the last it runs at the last throughput."""
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
def request_table(k_max, page, curve):
    """Seconds of a request of k pages of ``page`` bytes, k = 0 .. ``k_max`` (float64[k_max + 1]; 0 for
    k = 0), by :func:`request_seconds` (one call from Python for the whole table)."""
    out = np.zeros(k_max + 1)
    for k in range(1, k_max + 1):
        out[k] = request_seconds(k * page, curve)
    return out


NO_RC = dict(NJIT, _nrt=False)
"""The per-token kernels: without reference counting (with it, every call and every row view is a pair of
atomic updates per array, each draining the store buffer: about 1 us a token on a 14,336-unit kind)."""


MARK = dict(NO_RC, forceinline=True)
"""The marking and request helpers run inside the kernels' token loops: inlined, and without reference
counting (:data:`NO_RC`)."""


@njit(**NO_RC)
def _window_back(yp, k, a, a2):
    """The window OR over the whole bitmap ``yp`` (uint64[n], bit i of word w at position 64 w + i): at
    each position, the OR of the k positions ending there (1 <= k <= 32). By doubling, one pass over the
    words per step (a window reaches at most one word back); ``a``, ``a2``: scratch uint64[n]. Returns
    where the result is: 0 in ``yp`` itself (k = 1), 1 in ``a``, 2 in ``a2``."""
    n = yp.shape[0]
    at = 0
    span = 1
    while span < k:
        s = np.uint64(min(span, k - span))
        r = np.uint64(64) - s
        src = yp if at == 0 else (a if at == 1 else a2)
        dst = a2 if at == 1 else a
        dst[0] = src[0] | (src[0] << s)
        for w in range(1, n):
            dst[w] = src[w] | (src[w] << s) | (src[w - 1] >> r)
        at = 2 if at == 1 else 1
        span += s
    return at


@njit(**MARK)
def _request(cs, ce, n_req, pages, secs, table, page_secs):
    """The totals (requests, pages, seconds) with the request of pages [cs, ce) added (none: cs < 0); a
    request of k pages takes ``table[k]`` seconds, beyond the table k pages at ``page_secs`` each."""
    if cs < 0:
        return n_req, pages, secs
    k = ce - cs
    return n_req + 1, pages + k, secs + (table[k] if k < table.shape[0] else k * page_secs)


@njit(**MARK)
def _join(lo, hi, cs, ce, n_req, pages, secs, table, page_secs):
    """A run of pages [lo, hi) after the current request [cs, ce): the same request when their pages
    touch, else the current one is counted (:func:`_request`) and the run starts the next. Returns
    (cs, ce, requests, pages, seconds)."""
    if lo <= ce:
        return cs, max(ce, hi), n_req, pages, secs
    n_req, pages, secs = _request(cs, ce, n_req, pages, secs, table, page_secs)
    return lo, hi, n_req, pages, secs


@njit(**NO_RC)
def token_reads(miss_bits, t, gap, first_page, end_page, page, table, curve, xp, yp, wa, wa2):
    """The Flash requests of token ``t``. ``miss_bits[t]`` (uint64[W]): bit p set for each missed unit at
    Flash position p. Gaps of at most ``gap`` (<= 31) units between missed units are read through;
    each run of units p .. q is rounded out to the pages ``first_page[p]`` .. ``end_page[q]`` (int64[U]:
    the page holding a position's first byte, and one past the page holding its last); runs whose
    pages touch are one request; a request of k pages takes ``table[k]`` seconds (beyond the table: the
    curve's last throughput). Scratch: ``xp``, ``yp`` uint64[W + 2] (the run-start and run-end bits),
    ``wa``, ``wa2`` uint64[W + 2] (:func:`_window_back`). Returns (requests, bytes read, seconds)."""
    W = miss_bits.shape[1]
    zero = np.uint64(0)
    top = np.uint64(63)
    # each word's run-start and run-end bits (xp, yp), with a zero word on either side
    xp[0] = yp[0] = xp[W + 1] = yp[W + 1] = zero
    prev = zero  # the word before (its last bit precedes this word's first)
    for w in range(W):
        word = miss_bits[t, w]
        nxt = miss_bits[t, w + 1] if w + 1 < W else zero
        xp[w + 1] = word & ~((word << ONE) | (prev >> top))
        yp[w + 1] = word & ~((word >> ONE) | (nxt << top))
        prev = word
    # a gap of at most `gap` positions is read through: a run start with a run end at most gap + 1
    # positions before it is no boundary (the positions between are all unset). The starts that remain
    # begin the runs read; each such run ends at the last run end before the next one begins.
    at = _window_back(yp, gap + 1, wa, wa2)
    win = yp if at == 0 else (wa if at == 1 else wa2)
    n_req, pages, secs = 0, 0, 0.0
    page_secs = page / curve.bps[curve.bps.shape[0] - 1]  # a page beyond the table
    cs, ce = -1, -1  # the current request's pages [cs, ce)
    p = -1  # the start of the run being read (-1: none yet)
    last_end = -1  # the last run end in the words before this one
    for w in range(1, W + 1):
        starts, ends = xp[w], yp[w]
        if (starts | ends) == 0:
            continue
        if gap > 0:
            starts &= ~((win[w] << ONE) | (win[w - 1] >> top))
        base = (w - 1) * 64
        while starts != 0:
            b = trailing_zeros64(starts)
            starts &= starts - ONE
            if p >= 0:  # the run being read ends at the last run end before this start
                below = ends & ((ONE << b) - ONE)
                q = base + 63 - np.int64(leading_zeros64(below)) if below != 0 else last_end
                cs, ce, n_req, pages, secs = _join(
                    first_page[p], end_page[q], cs, ce, n_req, pages, secs, table, page_secs
                )
            p = base + np.int64(b)
        if ends != 0:
            last_end = base + 63 - np.int64(leading_zeros64(ends))
    if p >= 0:  # the last run ends at the last run end
        cs, ce, n_req, pages, secs = _join(
            first_page[p], end_page[last_end], cs, ce, n_req, pages, secs, table, page_secs
        )
    n_req, pages, secs = _request(cs, ce, n_req, pages, secs, table, page_secs)
    return n_req, pages * page, secs


@njit(**NJIT)
def reads_batch(miss_bits, gap, first_page, end_page, page, table, curve, requests, bytes_read, seconds):
    """:func:`token_reads` for each row of ``miss_bits`` (uint64[T_b, W]); outputs (T_b,):
    requests int32, bytes read and seconds float64."""
    W = miss_bits.shape[1]
    xp, yp = np.empty(W + 2, np.uint64), np.empty(W + 2, np.uint64)
    wa, wa2 = np.empty(W + 2, np.uint64), np.empty(W + 2, np.uint64)
    for i in range(miss_bits.shape[0]):
        requests[i], bytes_read[i], seconds[i] = token_reads(
            miss_bits, i, gap, first_page, end_page, page, table, curve, xp, yp, wa, wa2
        )


@njit(**MARK)
def mark_missed(used, in_cache, pos, bits, t):
    """Set the bits (row ``t`` of ``bits``: uint64[T_b, W]) of the units ``used`` and not ``in_cache``
    (bool[U]) at their Flash positions (``pos``: int32[U], or empty for position = unit index). Call
    before the cache accounts the token. In stored order 64 flags become a word at once."""
    n = used.shape[0]
    if pos.shape[0] == 0:
        full = n // 64
        for w in range(full):
            bits[t, w] |= nonzero_bytes64(used, w * 64) & ~nonzero_bytes64(in_cache, w * 64)
        for u in range(full * 64, n):
            if used[u] and not in_cache[u]:
                bits[t, u >> 6] |= ONE << np.uint64(u & 63)
        return
    for u in range(n):
        if used[u] and not in_cache[u]:
            p = pos[u]
            bits[t, p >> 6] |= ONE << np.uint64(p & 63)


@njit(**MARK)
def mark_unit(u, pos, bits, t):
    """Set the bit of unit ``u``'s Flash position in row ``t`` of ``bits`` (see :func:`mark_missed`)."""
    p = u if pos.shape[0] == 0 else pos[u]
    bits[t, p >> 6] |= ONE << np.uint64(p & 63)
