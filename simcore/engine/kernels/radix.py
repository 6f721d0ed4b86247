"""Radix selection over integer keys: the k-th smallest key (``kth_key``), marking the k smallest
(``mark_smallest``, ties to the lower index), and vectorised helpers (counts of equal values, positions
of a mask)."""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT

FIRST_DIGIT_BITS = 11


HIST_SIZE = 1 << FIRST_DIGIT_BITS


CHUNK = 64


BLOCK = 2048


@njit(**NJIT)
def _bucket(hist, remaining):
    """The histogram bin holding the ``remaining``-th smallest key, and its rank inside that bin."""
    c = 0
    d = 0
    while c + hist[d] < remaining:
        c += hist[d]
        d += 1
    return d, remaining - c


@njit(**NJIT)
def _gather(keys, n, shift, d, cand):
    """``cand[:nc]`` = the positions p < n whose ``keys[p] >> shift == d``, ascending; returns nc. A
    vectorised count per chunk of CHUNK keys first, so chunks without one cost no scalar pass.
    ``shift`` and ``d`` must have the keys' dtype (mixed widths defeat vectorisation)."""
    nc = 0
    for c0 in range(0, n, CHUNK):
        kc = keys[c0 : min(c0 + CHUNK, n)]  # loops from 0 (see the module docstring)
        s = np.int32(0)
        for p in range(kc.shape[0]):
            s = np.int32(s + np.int32((kc[p] >> shift) == d))
        if s > 0:
            for p in range(kc.shape[0]):
                cand[nc] = c0 + p
                nc += (kc[p] >> shift) == d
    return nc


@njit(**NJIT)
def kth_key(keys, n, k, nbits, cand, hist):
    """Radix select: the (k+1)-th smallest ``v`` of the non-negative integer ``keys[:n]`` (each
    < 2^nbits). A histogram of the top bits (at most 11, about 8 keys a bin) over all keys finds the
    bin holding it; a bin of equal keys (ties are common in cache priorities) ends the search there.
    Otherwise the bin is gathered, and over the shrinking candidate list the bits that all candidates
    share are skipped and the next (at most 8) histogrammed, until the candidates are equal.
    ``cand`` (int32, length >= n) and ``hist`` (int32[HIST_SIZE]) are scratch. Requires 0 <= k < n.

    Returns (v, take): the k+1 smallest are all keys < v (v of the keys' dtype) plus the ``take``
    lowest positions among the keys equal to v.
    """
    kt = keys.dtype.type  # every operand of the passes over all keys has the keys' width
    width = min(max(nbits, 1), FIRST_DIGIT_BITS, max(bit_length(n) - 3, 1))  # about 8+ keys a bin
    shift = kt(max(nbits, 1) - width)
    hist[: 1 << width] = 0
    for p in range(n):
        hist[np.uint64(keys[p] >> shift)] += 1  # an unsigned index: no wrap-around test
    d, remaining = _bucket(hist, k + 1)
    dk = kt(d)
    if hist[d] > CHUNK:  # a large bin: if its keys are all equal, that is v (one vectorised pass)
        lo = kt(-1) if kt(-1) > 0 else kt(np.iinfo(np.int64).max)  # above every key
        hi = kt(0)
        for p in range(n):
            inside = (keys[p] >> shift) == dk
            lo = min(lo, keys[p] if inside else lo)
            hi = max(hi, keys[p] if inside else hi)
        if lo == hi:
            return lo, remaining
    nc = _gather(keys, n, shift, dk, cand)
    while True:
        lo = keys[cand[0]]
        hi = lo
        for j in range(nc):
            v = keys[cand[j]]
            lo = min(lo, v)
            hi = max(hi, v)
        if lo == hi:
            return lo, remaining
        sh = bit_length(np.int64(lo ^ hi))  # the candidates agree on every bit above sh
        width = min(sh, 8)
        shift = kt(sh - width)
        mask = kt((1 << width) - 1)
        hist[: 1 << width] = 0
        for j in range(nc):
            hist[np.uint64((keys[cand[j]] >> shift) & mask)] += 1
        d, remaining = _bucket(hist, remaining)
        dk = kt(d)
        m = 0
        for j in range(nc):
            q = cand[j]
            cand[m] = q
            m += ((keys[q] >> shift) & mask) == dk
        nc = m


@njit(**NJIT)
def _equal_in(a, v):
    """How many ``a[p] == v`` (one vectorised pass)."""
    s = np.int32(0)
    for p in range(a.shape[0]):
        s = np.int32(s + np.int32(a[p] == v))
    return s


@njit(**NJIT)
def _nth_equal(a, v, j):
    """The position of the ``j``-th p with ``a[p] == v`` (-1 if j < 1; the last position if there are
    fewer). Vectorised counts per block of BLOCK, then per chunk of CHUNK inside the block where it
    lies, and a scalar scan only inside that chunk: per-chunk counts alone over a whole array cost
    more in loop overhead than in counting."""
    if j < 1:
        return -1
    n = a.shape[0]
    seen = 0
    for b0 in range(0, n, BLOCK):
        s = _equal_in(a[b0 : min(b0 + BLOCK, n)], v)
        if seen + s < j:
            seen += s
            continue
        for c0 in range(b0, min(b0 + BLOCK, n), CHUNK):
            ac = a[c0 : min(c0 + CHUNK, n)]
            s = _equal_in(ac, v)
            if seen + s < j:
                seen += s
                continue
            for p in range(ac.shape[0]):
                seen += ac[p] == v
                if seen == j:
                    return c0 + p
    return n - 1


@njit(**NJIT)
def _positions(mask, out):
    """``out[:c]`` = the positions of True in ``mask`` (bool[n]), ascending; returns c. Reads the mask
    eight bytes at a time, so a sparse mask costs about n/8 word tests."""
    n = mask.shape[0]
    n8 = n - n % 8
    words = mask[:n8].view(np.uint64)
    c = 0
    for i in range(words.shape[0]):
        if words[i] != 0:
            for p in range(8 * i, 8 * i + 8):
                out[c] = p
                c += mask[p]
    for p in range(n8, n):
        out[c] = p
        c += mask[p]
    return c


@njit(**NJIT)
def bit_length(x):
    b = 0
    while x > 0:
        x >>= 1
        b += 1
    return b


@njit(**NJIT)
def mark_smallest(keys, n, k, nbits, mark, cand, hist):
    """Set ``mark[:n]`` to True at exactly the ``k`` positions of smallest ``keys`` (non-negative
    integers < 2^nbits; ties: lower position first) and False elsewhere. Returns min(k, n)."""
    if k <= 0:
        mark[:n] = False
        return 0
    if k >= n:
        mark[:n] = True
        return n
    v, take = kth_key(keys, n, k - 1, nbits, cand, hist)
    last = _nth_equal(keys[:n], v, take)
    for p in range(n):
        mark[p] = keys[p] < v
    for p in range(last + 1):
        mark[p] |= keys[p] == v
    return k
