"""Next-use buckets: the score family's sparse path for pure next-use weights (``(0, 0, c < 0)``: belady)
over long runs of one-unit tokens (libCacheSim's case), in place of the heap.

The cached units sit in buckets of 2^sh consecutive next-use times (at most MAX_BUCKETS of them over the
run's range of next uses), each a doubly linked list, with a bit a bucket saying which are non-empty. A
hit moves its unit from one bucket to another: a few stores, where the heap moves an entry up its levels
with a hard-to-predict exit (``score._heap_ones``). The victim is in the highest non-empty bucket: the
unit there of the farthest next use, ties to the lower index, found by a scan of that bucket, which is
short (far next uses are few). The units whose next use is the largest of all (``hi``: "never again",
which many units share) are kept in a bitmap of units instead, and leave first, lowest index first.

The bucket of the current token and those below it are *not listed*: a unit whose next use falls there
goes to a bucket of its own (``head[nb + u]``, never read) instead of a list. On the stream's own next
uses every hit is such a unit (its next use is now), so a hit takes nothing out of a list, and the
half of the uses whose next use is near push nothing onto the one list they would all share (each push
there waited for the one before: +25 %). A bucket that becomes current keeps its list, unread. Its
units are not listed victims; they are the farthest only when no listed unit is left (a cache of fewer
units than a bucket has tokens, or next uses that are not the stream's own): then a scan of every
cached unit finds the victim and the run gives way to the heap.

Victims, hits and state are the heap's, token for token: the order is (next use, unit index) whatever
the next uses are. A bucket scan longer than SCAN_LIMIT (next uses bunched at the top of the range) ends
the run after its token, and the heap goes on from there with the same state.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT, NJIT_TOKEN
from simcore.engine.kernels.f16 import leading_zeros64, trailing_zeros64
from simcore.engine.kernels.radix import bit_length

MAX_BUCKETS = 4096
SCAN_LIMIT = 256  # units a victim's bucket scan may pass before the run gives way to the heap
ONE = np.uint64(1)
ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(**NJIT_TOKEN)
def _push(u, b, head, nx, pv, bits):
    """Put unit ``u`` (uint32) in bucket ``b`` (uint64) and mark the bucket non-empty."""
    h = head[b]
    nx[u] = h
    pv[u] = -1
    head[b] = u
    if h >= 0:
        pv[np.uint32(h)] = u
    else:  # it was empty: its bit is set only then (a store every push cost 3 %)
        bits[b >> np.uint64(6)] |= ONE << (b & np.uint64(63))


@njit(**NJIT_TOKEN)
def _unlink(u, b, head, nx, pv, bits):
    """Take unit ``u`` out of bucket ``b``; an emptied bucket loses its bit."""
    p, q = pv[u], nx[u]
    if p >= 0:
        nx[np.uint32(p)] = q
    else:
        head[b] = q
        if q < 0:
            bits[b >> np.uint64(6)] &= ~(ONE << (b & np.uint64(63)))
    if q >= 0:
        pv[np.uint32(q)] = p


@njit(**NJIT_TOKEN)
def _highest(top, bits):
    """The highest non-empty bucket at or below ``top`` (int64), or -1."""
    if top < 0:
        return np.int64(-1)
    w = top >> 6
    x = bits[w] & (ALL >> np.uint64(63 - (top & 63)))
    while x == 0:
        w -= 1
        if w < 0:
            return np.int64(-1)
        x = bits[w]
    return np.int64(w * 64 + 63 - np.int64(leading_zeros64(x)))


@njit(**NJIT_TOKEN)
def _lowest(far, k):
    """The lowest unit in the unit bitmap ``far`` (there is one), looking from word ``k`` on (no unit
    is below it). Returns the unit and its word."""
    while far[k] == 0:
        k += 1
    return np.uint32(k * 64 + np.int64(trailing_zeros64(far[k]))), k


@njit(**NJIT_TOKEN)
def _farthest(in_cache, next_use):
    """The cached unit of the farthest next use, ties to the lower index."""
    v, bv = np.uint32(0), np.int64(-1)
    for u in range(in_cache.shape[0]):
        if in_cache[u] and np.int64(next_use[u]) > bv:
            v, bv = np.uint32(u), np.int64(next_use[u])
    return v


@njit(**NJIT)
def run_ones(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, out_hits, min_run):
    """Replay the run of one-unit tokens from token ``t`` on (tokens t0 + t, ... of the trace) for the
    weights (0, 0, c < 0), as ``score._heap_run`` would, if it is at least ``min_run`` tokens long.
    Returns the first token not replayed: the end of the run, the token after a long bucket scan, or
    ``t`` itself (a shorter run; an occupancy that is not the number of cached units). ``in_cache`` ...
    ``state``: the score family's state, updated token by token; ``out_hits``: int32[T]."""
    T = ptr.shape[0] - 1
    n = in_cache.shape[0]
    end = t
    while end < T and ptr[end + 1] - ptr[end] == 1:
        end += 1
    if end - t < max(min_run, 1):
        return t
    a0 = ptr[t] - t  # token s of the run uses idx[a0 + s]
    occ = 0
    lo, hi = np.int64(nxt[a0 + t]), np.int64(nxt[a0 + t])
    for u in range(n):
        if in_cache[u]:
            occ += 1
            lo, hi = min(lo, np.int64(next_use[u])), max(hi, np.int64(next_use[u]))
    if occ != state[0]:
        return t
    for s in range(t, end):
        lo, hi = min(lo, np.int64(nxt[a0 + s])), max(hi, np.int64(nxt[a0 + s]))
    sh = np.int64(bit_length((hi - lo) // MAX_BUCKETS))  # buckets of 2^sh next uses: at most MAX_BUCKETS
    nb = ((hi - lo) >> sh) + 1
    head = np.full(nb + n, -1, np.int32)  # head[nb + u]: unit u's own bucket, where it goes while not listed
    nx = np.empty(n, np.int32)
    pv = np.empty(n, np.int32)
    bits = np.zeros((nb + n) // 64 + 1, np.uint64)
    far = np.zeros(n // 64 + 1, np.uint64)  # the units whose next use is hi
    n_far = 0
    far_k = np.int64(0)  # no unit of far is in a word below it
    top = np.int64(-1)  # no bucket above it is non-empty
    now = (t0 + t - lo) >> sh  # the bucket of the current token: it and those below it are not listed
    for u in range(n):
        if in_cache[u]:
            if next_use[u] == hi:
                far[u >> 6] |= ONE << np.uint64(u & 63)
                n_far += 1
            else:
                b = (np.int64(next_use[u]) - lo) >> sh
                if b > now:
                    _push(np.uint32(u), np.uint64(b), head, nx, pv, bits)
                    top = max(top, b)
    while t < end:
        i = np.uint64(a0 + t)
        u = np.uint32(idx[i])
        nu = np.int64(nxt[i])
        hit = in_cache[u]
        long_scan = False
        now = (t0 + t - lo) >> sh  # a bucket that becomes current is read no more: its list is left as it is
        if hit:  # out of its bucket (unless it is not listed), or out of far
            was = np.int64(next_use[u])
            if was == hi:
                far[u >> 6] &= ~(ONE << np.uint64(u & 63))
                n_far -= 1
            else:
                b = (was - lo) >> sh
                if b > now:  # only where the next uses are not the stream's own (which are now)
                    _unlink(u, np.uint64(b), head, nx, pv, bits)
        else:
            if occ == cap:  # the victim: lowest unit of far, else the farthest next use of the top bucket
                if n_far > 0:
                    v, far_k = _lowest(far, far_k)
                    far[v >> 6] &= ~(ONE << np.uint64(v & 63))
                    n_far -= 1
                else:
                    top = _highest(top, bits)
                    if top <= now:  # every cached unit is in a bucket not listed (rare: a cache of fewer
                        v = _farthest(in_cache, next_use)  # units than a bucket has tokens): scan them
                        long_scan = True  # all, then give way to the heap
                    else:
                        vb = np.uint64(top)
                        v = np.uint32(head[vb])
                        bv = next_use[v]
                        w = nx[v]
                        steps = 0
                        while w >= 0:
                            x = np.uint32(w)
                            xv = next_use[x]
                            if xv > bv or (xv == bv and x < v):
                                v, bv = x, xv
                            w = nx[x]
                            steps += 1
                        long_scan = steps > SCAN_LIMIT
                        _unlink(v, vb, head, nx, pv, bits)
                in_cache[v] = False
            else:
                occ += 1
            in_cache[u] = True
        count[u] += 1
        last[u] = t0 + t
        next_use[u] = nu
        if nu == hi:
            far[u >> 6] |= ONE << np.uint64(u & 63)
            n_far += 1
            far_k = min(far_k, np.int64(u >> 6))
        else:
            b = (nu - lo) >> sh
            _push(u, np.uint64(b if b > now else nb + np.int64(u)), head, nx, pv, bits)
            top = max(top, b)
        out_hits[np.uint64(t)] = hit
        t += 1
        if long_scan:
            break
    state[0] = occ
    return t
