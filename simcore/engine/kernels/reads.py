"""The Flash read model's kernels (``simcore.engine.flash`` explains the model): mark a token's missed
units at their Flash positions, read the short gaps through, round the runs out to pages and time the
requests on the device's throughput-versus-request-size curve.

Speed: a token of a Mistral-7B down kind misses thousands of its 14,336 units, so nothing here works
per missed unit. Marks are packed 64 units to a word; the run starts and ends come from word shifts,
and a gap short enough to read through is found by window ORs over them (by doubling, a pass over the
words per step);
only the runs that remain, few, are visited one by one; a request's time is a table lookup by its size
in pages.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT
from simcore.engine.kernels.f16 import trailing_zeros64

ONE = np.uint64(1)
PACK8 = np.uint64(0x0102040810204080)  # (x * PACK8) >> 56 gathers the low bits of x's 8 bytes, byte i to bit i


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


@njit(**NJIT)
def _windows(xp, yp, k, a, b, a2, b2):
    """Window ORs over the whole bitmap (words 0 .. n - 1, bit i of word w at position 64 w + i): ``a``
    receives at each position the OR of ``yp`` over the k positions ending there, ``b`` the OR of ``xp``
    over the k positions starting there (1 <= k <= 32). By doubling, one pass over the words per step
    (a position's window reaches at most one word back or ahead); ``a2``, ``b2``: scratch. Returns the
    arrays holding the results (a, b or the scratch ones), each uint64[n]."""
    n = xp.shape[0]
    a[:] = yp
    b[:] = xp
    span = 1
    while span < k:
        s = np.uint64(min(span, k - span))
        r = np.uint64(64) - s
        a2[0] = a[0] | (a[0] << s)
        for w in range(1, n):
            a2[w] = a[w] | (a[w] << s) | (a[w - 1] >> r)
        for w in range(n - 1):
            b2[w] = b[w] | (b[w] >> s) | (b[w + 1] << r)
        b2[n - 1] = b[n - 1] | (b[n - 1] >> s)
        a, a2 = a2, a
        b, b2 = b2, b
        span += s
    return a, b


@njit(**NJIT)
def token_reads(bits, gap, first_page, end_page, page, table, curve, xp, yp, r0, r1, wa, wb, wa2, wb2):
    """The Flash requests of one token. ``bits`` (uint64[W]): bit p set for each missed unit at Flash
    position p. Gaps of at most ``gap`` (<= 31) units between missed units are read through;
    each run of units p .. q is rounded out to the pages ``first_page[p]`` .. ``end_page[q]`` (int64[U]:
    the page holding a position's first byte, and one past the page holding its last); runs whose
    pages touch are one request; a request of k pages takes ``table[k]`` seconds (beyond the table: the
    curve's last throughput). Scratch: ``xp``, ``yp`` uint64[W + 2] (the run-start and run-end bits),
    ``r0``, ``r1`` int64[W * 32 + 1] (at most that many runs), ``wa``, ``wb``, ``wa2``, ``wb2``
    uint64[W + 2] (:func:`_windows`). Returns (requests, bytes read, seconds)."""
    W = bits.shape[0]
    zero = np.uint64(0)
    # each word's run-start and run-end bits (xp, yp), with a zero word on either side
    xp[0] = yp[0] = xp[W + 1] = yp[W + 1] = zero
    prev = zero  # the word before (its last bit precedes this word's first)
    for w in range(W):
        word = bits[w]
        nxt = bits[w + 1] if w + 1 < W else zero
        xp[w + 1] = word & ~((word << ONE) | (prev >> np.uint64(63)))
        yp[w + 1] = word & ~((word >> ONE) | (nxt << np.uint64(63)))
        prev = word
    # a gap of at most `gap` positions is read through: a run start with a run end at most gap + 1
    # positions before it, and that run end, are no boundaries (the positions between are all unset)
    win_a, win_b = wa, wb
    if gap > 0:
        win_a, win_b = _windows(xp, yp, gap + 1, wa, wb, wa2, wb2)
    n_runs = 0
    n_ends = 0
    for w in range(1, W + 1):
        starts, ends = xp[w], yp[w]
        if starts == 0 and ends == 0:
            continue
        if gap > 0:  # a run end among the gap + 1 positions before a start; a start among those after an end
            starts &= ~((win_a[w] << ONE) | (win_a[w - 1] >> np.uint64(63)))
            ends &= ~((win_b[w] >> ONE) | (win_b[w + 1] << np.uint64(63)))
        base = (w - 1) * 64
        while starts != 0:
            r0[n_runs] = base + np.int64(trailing_zeros64(starts))
            starts &= starts - ONE
            n_runs += 1
        while ends != 0:
            r1[n_ends] = base + np.int64(trailing_zeros64(ends))
            ends &= ends - ONE
            n_ends += 1
    n_req, pages, secs = 0, 0, 0.0
    page_secs = page / curve.bps[curve.bps.shape[0] - 1]  # a page beyond the table
    cs, ce = -1, -1  # the current request's pages [cs, ce)
    for j in range(n_runs):
        lo, hi = first_page[r0[j]], end_page[r1[j]]
        if cs >= 0 and lo <= ce:  # its pages touch the current request's
            ce = max(ce, hi)
            continue
        if cs >= 0:
            k = ce - cs
            n_req += 1
            pages += k
            secs += table[k] if k < table.shape[0] else k * page_secs
        cs, ce = lo, hi
    if cs >= 0:
        k = ce - cs
        n_req += 1
        pages += k
        secs += table[k] if k < table.shape[0] else k * page_secs
    return n_req, pages * page, secs


@njit(**NJIT)
def reads_batch(miss_bits, gap, first_page, end_page, page, table, curve, requests, bytes_read, seconds):
    """:func:`token_reads` for each row of ``miss_bits`` (uint64[T_b, W]); outputs (T_b,):
    requests int32, bytes read and seconds float64."""
    W = miss_bits.shape[1]
    xp, yp = np.empty(W + 2, np.uint64), np.empty(W + 2, np.uint64)
    r0, r1 = np.empty(W * 32 + 1, np.int64), np.empty(W * 32 + 1, np.int64)
    wa, wb = np.empty(W + 2, np.uint64), np.empty(W + 2, np.uint64)
    wa2, wb2 = np.empty(W + 2, np.uint64), np.empty(W + 2, np.uint64)
    for i in range(miss_bits.shape[0]):
        requests[i], bytes_read[i], seconds[i] = token_reads(
            miss_bits[i], gap, first_page, end_page, page, table, curve, xp, yp, r0, r1, wa, wb, wa2, wb2
        )


@njit(**NJIT)
def mark_missed(used, in_cache, pos, row):
    """Set the bits (``row``: uint64[W]) of the units ``used`` and not ``in_cache`` (bool[U]) at their
    Flash positions (``pos``: int32[U], or empty for position = unit index). Call before the cache
    accounts the token. In stored order the bits are packed 64 at a time, without branches."""
    n = used.shape[0]
    if pos.shape[0] == 0:
        full = n // 64
        u8 = used[: full * 64].view(np.uint64)  # 8 flags (bytes of 0 or 1) to a word
        c8 = in_cache[: full * 64].view(np.uint64)
        for w in range(full):
            acc = np.uint64(0)
            for j in range(8):  # used and not cached, 8 bytes -> 8 bits by one multiplication
                m = u8[w * 8 + j] & ~c8[w * 8 + j]
                acc |= ((m * PACK8) >> np.uint64(56)) << np.uint64(8 * j)
            row[w] |= acc
        for u in range(full * 64, n):
            if used[u] and not in_cache[u]:
                row[u >> 6] |= ONE << np.uint64(u & 63)
        return
    for u in range(n):
        if used[u] and not in_cache[u]:
            p = pos[u]
            row[p >> 6] |= ONE << np.uint64(p & 63)


@njit(**NJIT)
def mark_unit(u, pos, row):
    """Set the bit of unit ``u``'s Flash position in ``row`` (see :func:`mark_missed`)."""
    p = u if pos.shape[0] == 0 else pos[u]
    row[p >> 6] |= ONE << np.uint64(p & 63)
