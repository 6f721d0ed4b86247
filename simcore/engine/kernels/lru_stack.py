"""LRU at many capacities in one pass (a stack algorithm: the cache of capacity C holds the C most
recently used units, ties to the higher index), token by token (``lru_multi_batch``) or over
precomputed selections (``lru_stack_hits_at``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT
from simcore.engine.kernels.f16 import f16_pattern_at_most
from simcore.engine.kernels.radix import CHUNK, _equal_in
from simcore.engine.kernels.score import _at_most
from simcore.engine.kernels.select import MODE_ALL, _mass, _selection_scratch, select_units


@njit(**NJIT)
def _count_equal2(a, b, v):
    """(how many ``a[p] == v``, how many ``b[p] == v``) over two int32 arrays of one length."""
    c = np.int32(0)
    d = np.int32(0)
    for p in range(a.shape[0]):
        c = np.int32(c + np.int32(a[p] == v))
        d = np.int32(d + np.int32(b[p] == v))
    return c, d


@njit(**NJIT)
def _max_below(a, v):
    """The largest ``a[p] < v``, or -1 (a: int32 >= -1)."""
    m = np.int32(-1)
    for p in range(a.shape[0]):
        x = a[p]
        m = max(m, x if x < v else np.int32(-1))
    return m


@njit(**NJIT)
def _chunk_counts(a, b, v, ca, cb):
    """``ca[c]``, ``cb[c]`` = how many ``a == v``, ``b == v`` in chunk c of CHUNK elements (the last,
    shorter one included). The inner loop has a constant trip count, so it compiles to straight
    vector code without the per-chunk set-up that a loop over a variable slice costs."""
    n = a.shape[0]
    nc = n // CHUNK
    for c in range(nc):
        ac, bc = a[c * CHUNK : c * CHUNK + CHUNK], b[c * CHUNK : c * CHUNK + CHUNK]
        x = np.int32(0)
        y = np.int32(0)
        for j in range(CHUNK):
            x = np.int32(x + np.int32(ac[j] == v))
            y = np.int32(y + np.int32(bc[j] == v))
        ca[c] = x
        cb[c] = y
    at, bt = a[nc * CHUNK :], b[nc * CHUNK :]
    x = np.int32(0)
    y = np.int32(0)
    for j in range(at.shape[0]):
        x = np.int32(x + np.int32(at[j] == v))
        y = np.int32(y + np.int32(bt[j] == v))
    ca[nc] = x
    cb[nc] = y


@njit(**NJIT)
def _lru_group(last, ulast, s, caps_sorted, b0, cum, ranks, pos, before, ccount):
    """One recency group: the units whose last use is token ``s``, newer groups holding ``cum``
    units. Returns (g, nr, inside): its size, how many capacities from ``caps_sorted[b0]`` on end
    inside it (those <= cum + g), and how many of this token's units (``ulast == s``) it holds. For
    each such capacity (rank j = g - (capacity - cum) + 1 in index order, ascending in ``ranks``),
    ``pos`` receives the position of the group's j-th unit and ``before`` how many of this token's
    units of the group lie before it. One vectorised pass of per-chunk counts (``ccount``: int32
    [2, U // CHUNK + 1] scratch), then a scalar scan only inside the chunks where a rank falls."""
    n = last.shape[0]
    _chunk_counts(last, ulast, s, ccount[0], ccount[1])
    nch = n // CHUNK + 1
    g = 0
    inside = 0
    for c in range(nch):
        g += ccount[0, c]
        inside += ccount[1, c]
    nr = 0
    while b0 + nr < caps_sorted.shape[0] and caps_sorted[b0 + nr] <= cum + g:
        nr += 1
    for j in range(nr):  # the lowest unit each capacity keeps, by rank in index order; ascending
        ranks[j] = g - (caps_sorted[b0 + nr - 1 - j] - cum) + 1
    seen = 0
    useen = 0
    ri = 0
    for c in range(nch):
        if ri >= nr:
            break
        if seen + ccount[0, c] >= ranks[ri]:
            lc, uc = last[c * CHUNK : min(c * CHUNK + CHUNK, n)], ulast[c * CHUNK : min(c * CHUNK + CHUNK, n)]
            while ri < nr and seen + ccount[0, c] >= ranks[ri]:
                want = ranks[ri] - seen  # the want-th member of this chunk: branch-free scans
                k = 0
                at = 0
                for p in range(lc.shape[0]):
                    e = lc[p] == s
                    k += e
                    at = p if e & (k == want) else at
                pos[ri] = c * CHUNK + at
                before[ri] = useen + _equal_in(uc[:at], s)
                ri += 1
        seen += ccount[0, c]
        useen += ccount[1, c]
    return g, nr, inside


@njit(**NJIT)
def _lru_deep(last, ulast, t, c, hint, ranks, pos, before, ccount):
    """Hits of this token at one capacity ``c`` (less than the units used so far) whose cache reaches
    past the newest groups: the group s holding its boundary is the largest s with at least c units
    last used at s or later, searched by counting passes galloping from ``hint`` (the previous
    token's s for this capacity). Returns (hits, s)."""
    n = last.shape[0]
    # at_least(s) = n - _at_most(last, s - 1): non-increasing in s; at_least(0) >= c > at_least(t) = 0
    lo, hi = 0, t
    h = min(max(hint, 0), t - 1)
    if n - _at_most(last, np.int32(h - 1)) >= c:
        lo, step = h, 1
        while lo + step < hi:
            if n - _at_most(last, np.int32(lo + step - 1)) >= c:
                lo = lo + step
                step *= 2
            else:
                hi = lo + step
                break
    else:
        hi, step = h, 1
        while hi - step > lo:
            if n - _at_most(last, np.int32(hi - step - 1)) >= c:
                lo = hi - step
                break
            hi = hi - step
            step *= 2
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        if n - _at_most(last, np.int32(mid - 1)) >= c:
            lo = mid
        else:
            hi = mid
    s = np.int32(lo)
    newer = n - _at_most(last, s)  # units last used after s
    cap1 = np.full(1, c, np.int64)
    _, _, inside = _lru_group(last, ulast, s, cap1, 0, newer, ranks, pos, before, ccount)
    above = n - _at_most(ulast, s)  # this token's units last used after s
    return above + inside - before[0], lo


@njit(**NJIT)
def lru_multi_step(used, t, last, ulast, caps_sorted, order, scratch, ccount, lstate, out_col):
    """LRU hits of one token's selection ``used`` (bool[U]) at every capacity at once, then the
    recency update. ``last`` (int32[U]): each unit's last-use token, -1 if never used; ``ulast``
    (int32[U]) scratch; ``caps_sorted`` (int64[B], ascending) and ``order`` (its argsort) give
    ``out_col[order[b]]`` = the hits at capacity ``caps_sorted[b]``; ``scratch`` int64[3, B] and
    ``ccount`` int32[2, U // CHUNK + 1] are scratch; ``lstate`` int64[B + 1] carries, from token to
    token, each capacity's boundary group (a search hint) and the number of units used so far.

    LRU under simcore's rules is a stack algorithm: the cache of capacity C always holds the C units
    of largest (last use, unit index) (a token's units enter together, the higher index more recent,
    and a selection larger than C keeps its C highest indices). So the caches of all capacities are
    read off the recency groups, newest first: a capacity inside group s holds every unit of the
    newer groups and the group's highest indices. The newest few groups are walked with a pass or
    two each, whatever the number of capacities; a capacity reaching further back finds its group
    by a galloping search, so no token costs more than a few dozen passes."""
    n = used.shape[0]
    B = caps_sorted.shape[0]
    for u in range(n):
        ulast[u] = last[u] if used[u] else np.int32(-2)
    ever = lstate[B]
    ranks, pos, before = scratch[0], scratch[1], scratch[2]
    bi = 0
    while bi < B and caps_sorted[bi] <= 0:
        out_col[order[bi]] = 0
        bi += 1
    cum = 0  # units in the groups newer than s
    above = 0  # this token's units among them
    s = np.int32(t)
    walked = 0
    while bi < B and caps_sorted[bi] < ever and walked < 8:
        s_next = np.int32(s - 1)
        g, nr, inside = _lru_group(last, ulast, s_next, caps_sorted, bi, cum, ranks, pos, before, ccount)
        if g == 0:  # an empty group (all its units used again since): find the next one down
            s_next = _max_below(last, s)
            g, nr, inside = _lru_group(last, ulast, s_next, caps_sorted, bi, cum, ranks, pos, before, ccount)
        for j in range(nr):
            out_col[order[bi + nr - 1 - j]] = above + inside - before[j]
            lstate[bi + nr - 1 - j] = s_next
        above += inside
        cum += g
        bi += nr
        s = s_next
        walked += 1
    everything = n - _at_most(ulast, np.int32(-1))  # this token's units used before
    while bi < B:
        if caps_sorted[bi] >= ever:  # the cache holds every unit used so far
            out_col[order[bi]] = everything
        else:
            out_col[order[bi]], lstate[bi] = _lru_deep(
                last, ulast, t, caps_sorted[bi], lstate[bi], ranks, pos, before, ccount
            )
        bi += 1
    m = n - _at_most(ulast, np.int32(-2))  # this token's units
    lstate[B] = ever + m - everything  # units used for the first time now
    tl = np.int32(t)
    for u in range(n):
        last[u] = tl if used[u] else last[u]


@njit(**NJIT)
def lru_multi_batch(
    scores,
    hmag,
    has_mass,
    mode,
    k,
    thr,
    n_units,
    caps_sorted,
    order,
    last,
    lstate,
    t0,
    out_used,
    out_hits,
    out_kept,
    out_tot,
):
    """A batch of tokens of one (layer, kind) under LRU at several capacities at once, for masks that
    do not depend on the cache: each token's selection (as ``mask_bits_batch``) goes straight into
    ``lru_multi_step``, with no index list in between. ``last`` (int32[U]) and ``lstate``
    (int64[B + 1]) carry the recency state from batch to batch; ``out_hits`` int32[B, T_b], row
    ``order[b]`` for capacity ``caps_sorted[b]``; the other outputs as in ``replay_batch``."""
    T = scores.shape[0]
    B = caps_sorted.shape[0]
    used, keys, cand, hist, wbuf, qbuf, state, dummy = _selection_scratch(n_units)
    in_cache = np.zeros(n_units, np.bool_)  # the masks do not look at it
    ulast = np.empty(n_units, np.int32)
    scratch = np.empty((3, B), np.int64)
    ccount = np.empty((2, n_units // CHUNK + 1), np.int32)
    col = np.empty(B, np.int64)
    pthr = f16_pattern_at_most(thr)
    for i in range(T):
        row = scores[i] if mode != MODE_ALL else dummy
        out_used[i] = select_units(
            row, mode, k, pthr, False, 1.0, 0, 0, in_cache, used, keys, cand, hist, wbuf, qbuf, state
        )
        _mass(hmag[i], used, has_mass, wbuf, out_kept, out_tot, i)
        lru_multi_step(used, t0 + i, last, ulast, caps_sorted, order, scratch, ccount, lstate, col)
        for b in range(B):
            out_hits[b, i] = col[b]


@njit(**NJIT)
def lru_stack_hits(idx, ptr, n_units, caps, out_hits):
    """LRU hits of precomputed selections (CSR ``idx``/``ptr``) at every capacity in ``caps``
    (int64[B]) at once: ``out_hits`` int32[B, T]. See ``lru_multi_step``."""
    order = np.argsort(caps, kind="mergesort")
    last = np.full(n_units, -1, np.int32)
    lstate = np.zeros(caps.shape[0] + 1, np.int64)
    lru_stack_hits_at(idx, ptr, 0, caps[order], order, last, lstate, out_hits)


@njit(**NJIT)
def lru_stack_hits_at(idx, ptr, t0, caps_sorted, order, last, lstate, out_hits):
    """``lru_stack_hits`` for tokens t0, t0 + 1, ... of a longer trace (CSR of these tokens only), the
    recency state ``last`` (int32[U], -1 = never used) and ``lstate`` (int64[B + 1]) carried over from
    the tokens before (see ``lru_multi_step``); ``caps_sorted`` ascending, ``order`` its argsort:
    ``out_hits[order[b]]`` (int32[B, T_c]) are the hits at capacity ``caps_sorted[b]``."""
    T = ptr.shape[0] - 1
    B = caps_sorted.shape[0]
    n_units = last.shape[0]
    ulast = np.empty(n_units, np.int32)
    used = np.zeros(n_units, np.bool_)
    scratch = np.empty((3, B), np.int64)
    ccount = np.empty((2, n_units // CHUNK + 1), np.int32)
    col = np.empty(B, np.int64)
    for t in range(T):
        it = idx[ptr[t] : ptr[t + 1]]
        for a in range(it.shape[0]):
            used[it[a]] = True
        lru_multi_step(used, t0 + t, last, ulast, caps_sorted, order, scratch, ccount, lstate, col)
        for b in range(B):
            out_hits[b, t] = col[b]
        for a in range(it.shape[0]):
            used[it[a]] = False
