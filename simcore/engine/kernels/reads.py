"""The Flash read model's kernels (``simcore.engine.flash`` explains the model): mark a token's missed
units at their Flash positions, close the gaps worth reading through, round the runs out to pages and
time the requests on the device's throughput-versus-request-size curve.

Speed: a token of a Mistral-7B down kind misses thousands of its 14,336 units, so nothing here works
per missed unit. Marks are packed 64 units to a word; gaps are closed with word shifts (a window OR by
doubling); only the runs that remain, few, are visited one by one; a request's time is a table lookup
by its size in pages.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT
from simcore.engine.kernels.f16 import trailing_zeros64

ONE = np.uint64(1)
ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


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
def _before(prev, cur, k):
    """For each bit i of word ``cur``: the OR of the k (1 <= k <= 32) positions before it, reaching into
    the word ``prev`` before (a window of at most 2k - 1 < 64 positions never reaches two words away)."""
    lc, lp = cur, prev
    span = 1
    while span < k:  # lc[i] = OR over the `span` positions ending at i, by doubling
        s = min(span, k - span)
        lc |= (lc << np.uint64(s)) | (lp >> np.uint64(64 - s))
        lp |= lp << np.uint64(s)
        span += s
    return (lc << ONE) | (lp >> np.uint64(63))


@njit(**NJIT)
def _after(cur, nxt, k):
    """For each bit i of word ``cur``: the OR of the k (1 <= k <= 32) positions after it."""
    rc, rn = cur, nxt
    span = 1
    while span < k:
        s = min(span, k - span)
        rc |= (rc >> np.uint64(s)) | (rn << np.uint64(64 - s))
        rn |= rn >> np.uint64(s)
        span += s
    return (rc >> ONE) | (rn << np.uint64(63))


@njit(**NJIT)
def _close_short(bits, g, xp, yp):
    """Fill every gap of at most g (1 <= g <= 64) positions between set bits of ``bits`` (uint64[W], in
    place): a morphological closing by an interval of g + 1 positions, a dilation (each set bit spreads
    a = ceil(g / 2) positions up and b = floor(g / 2) down, so a gap of at most a + b = g is covered)
    then an erosion by the same interval, which takes the ends of every run back where they were.
    ``xp``, ``yp``: uint64[W + 2] scratch, the bitmap and its dilation with a zero word on either side
    (the spread never reaches further than 32 positions)."""
    W = bits.shape[0]
    zero = np.uint64(0)
    a, b = (g + 1) // 2, g // 2
    xp[0] = zero
    xp[W + 1] = zero
    xp[1 : W + 1] = bits
    for w in range(W + 2):  # dilation
        prev = xp[w - 1] if w > 0 else zero
        nxt = xp[w + 1] if w + 1 < W + 2 else zero
        y = xp[w] | _before(prev, xp[w], a)
        if b > 0:
            y |= _after(xp[w], nxt, b)
        yp[w] = y
    for w in range(1, W + 1):  # erosion: keep a position whose a positions after and b before are all set
        hole = _after(~yp[w], ~yp[w + 1], a)
        if b > 0:
            hole |= _before(~yp[w - 1], ~yp[w], b)
        bits[w - 1] = yp[w] & ~hole


@njit(**NJIT)
def token_reads(bits, gap, first_page, end_page, page, table, curve, xp, yp, r0, r1):
    """The Flash requests of one token. ``bits`` (uint64[W]): bit p set for each missed unit at Flash
    position p; it is overwritten. Gaps of at most ``gap`` units between missed units are read through;
    each run of units p .. q is rounded out to the pages ``first_page[p]`` .. ``end_page[q]`` (int64[U]:
    the page holding a position's first byte, and one past the page holding its last); runs whose
    pages touch are one request; a request of k pages takes ``table[k]`` seconds (beyond the table: the
    curve's last throughput). Scratch: ``xp``, ``yp`` uint64[W + 2], ``r0``, ``r1`` int64[W * 32 + 1] (at
    most that many runs). Returns (requests, bytes read, seconds)."""
    W = bits.shape[0]
    if gap > 0:  # read the gaps of at most `gap` (<= 64) positions through
        _close_short(bits, gap, xp, yp)
    # the runs: their first and last positions, from the words' run-start and run-end bits
    n_runs = 0
    n_ends = 0
    prev = np.uint64(0)  # the word before (its last bit precedes this word's first)
    word = bits[0]
    for w in range(W):
        nxt = bits[w + 1] if w + 1 < W else np.uint64(0)
        if word != 0:
            starts = word & ~((word << ONE) | (prev >> np.uint64(63)))
            ends = word & ~((word >> ONE) | (nxt << np.uint64(63)))
            while starts != 0:
                r0[n_runs] = w * 64 + np.int64(trailing_zeros64(starts))
                starts &= starts - ONE
                n_runs += 1
            while ends != 0:
                r1[n_ends] = w * 64 + np.int64(trailing_zeros64(ends))
                ends &= ends - ONE
                n_ends += 1
        prev, word = word, nxt
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
    """:func:`token_reads` for each row of ``miss_bits`` (uint64[T_b, W], overwritten); outputs (T_b,):
    requests int32, bytes read and seconds float64."""
    W = miss_bits.shape[1]
    xp, yp = np.empty(W + 2, np.uint64), np.empty(W + 2, np.uint64)
    r0, r1 = np.empty(W * 32 + 1, np.int64), np.empty(W * 32 + 1, np.int64)
    for i in range(miss_bits.shape[0]):
        requests[i], bytes_read[i], seconds[i] = token_reads(
            miss_bits[i], gap, first_page, end_page, page, table, curve, xp, yp, r0, r1
        )


@njit(**NJIT)
def mark_missed(used, in_cache, pos, row):
    """Set the bits (``row``: uint64[W]) of the units ``used`` and not ``in_cache`` (bool[U]) at their
    Flash positions (``pos``: int32[U], or empty for position = unit index). Call before the cache
    accounts the token. In stored order the bits are packed 64 at a time, without branches."""
    n = used.shape[0]
    if pos.shape[0] == 0:
        for w in range(row.shape[0]):
            u0 = w * 64
            acc = np.uint64(0)
            for j in range(min(64, n - u0)):
                acc |= np.uint64(used[u0 + j] & ~in_cache[u0 + j]) << np.uint64(j)
            row[w] |= acc
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
