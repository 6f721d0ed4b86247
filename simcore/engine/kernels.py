"""Numba kernels of the replay engine. They see only plain arrays (STYLE.md #3).

Vocabulary: ``U`` units of one kind in one layer (d input channels or d_int neurons); a token's
*selection* is the set of units its mask uses, stored as ascending unit indices ``sel[:m]`` and as
the boolean ``used[U]``. Cache state of one (layer, kind): ``in_cache[U]`` (bool), ``count[U]``,
``last[U]``, ``next_use[U]`` (int64: uses so far, last-use token, next-use token) and ``state[0]``
= occupancy. Order rules, everywhere: top-k takes the largest scores, ties to the lower unit
index; eviction drops the lowest policy priority, ties to the lower unit index first.

Per token (DESIGN.md, "Caches and eviction"): select; hits = selected units in cache; update the
policy state of the selected units; if the selection fits, evict the lowest-priority cached units
that this token does not use until the misses fit, and insert all misses; if it does not fit,
the cache keeps the ``cap`` selected units of highest priority and the rest streams past it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT

MODE_ALL, MODE_TOPK, MODE_THRESHOLD = 0, 1, 2
NEVER = np.int64(2**40)  # next-use time of a unit not yet seen (never compared: it is not cached)
LUT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
"""float16 bit pattern -> float32 value (NaN patterns map to NaN; magnitudes never hold them)."""


@njit(**NJIT)
def kth_key(keys, n, k, nbits, cand, hist):
    """Radix select: the (k+1)-th smallest of the non-negative integer ``keys[:n]`` (each < 2^nbits),
    and how many of the keys equal to it are among the k+1 smallest.

    Three passes over ``keys[:n]`` at most (a histogram of the top byte, a filter, then bytes of the
    shrinking candidate list); ``cand`` (int32, length >= n) and ``hist`` (int64[256]) are scratch.
    Requires 0 <= k < n. Returns (v, take): the k+1 smallest are all keys < v plus the ``take`` keys
    equal to v of lowest position.
    """
    shift = ((max(nbits, 1) - 1) // 8) * 8
    remaining = k + 1
    for d in range(256):
        hist[d] = 0
    for p in range(n):
        hist[(keys[p] >> shift) & 255] += 1
    c = 0
    d = 0
    while c + hist[d] < remaining:
        c += hist[d]
        d += 1
    remaining -= c
    hi = d
    nc = 0
    for p in range(n):
        if (keys[p] >> shift) == hi:
            cand[nc] = p
            nc += 1
    while shift > 0:
        shift -= 8
        for d in range(256):
            hist[d] = 0
        for j in range(nc):
            hist[(keys[cand[j]] >> shift) & 255] += 1
        c = 0
        d = 0
        while c + hist[d] < remaining:
            c += hist[d]
            d += 1
        remaining -= c
        hi = (hi << 8) | d
        m = 0
        for j in range(nc):
            if (keys[cand[j]] >> shift) == hi:
                cand[m] = cand[j]
                m += 1
        nc = m
    return hi, remaining


@njit(**NJIT)
def bit_length(x):
    b = 0
    while x > 0:
        x >>= 1
        b += 1
    return b


@njit(**NJIT)
def mark_smallest(keys, n, k, nbits, mark, cand, hist):
    """Set ``mark[p] = True`` for exactly the ``k`` positions p < n of smallest ``keys[p]`` (non-negative
    integers < 2^nbits; ties: lower position first). Returns k."""
    if k <= 0:
        return 0
    if k >= n:
        for p in range(n):
            mark[p] = True
        return n
    v, take = kth_key(keys, n, k - 1, nbits, cand, hist)
    for p in range(n):
        kp = keys[p]
        if kp < v:
            mark[p] = True
        elif kp == v and take > 0:
            mark[p] = True
            take -= 1
    return k


@njit(**NJIT)
def select_units(row, lut, mode, k, thr, aware, gamma_t, fixed_n, approx_m, in_cache, used, sel, keys, cand, hist, wbuf):
    """Compute one token's selection for one kind.

    Args:
        row: uint16[U], the float16 bit patterns of the magnitudes ranking the units (unused for
            MODE_ALL); ``lut`` (float32[65536]) maps a bit pattern to its value. Magnitudes are >= 0, so
            their bit patterns order like their values.
        mode: MODE_ALL / MODE_TOPK / MODE_THRESHOLD.
        k: units to select (MODE_TOPK). thr: threshold (MODE_THRESHOLD: value > thr).
        aware: cache-aware re-weighting (dip-ca): value * (1 if in_cache else gamma_t), in float32.
        fixed_n: the fixed_n largest raw values are exempt from re-weighting.
        approx_m: if > k, approximate selection: among the approx_m largest raw values take the cached
            units first (by value), then the uncached ones (by value).
        used: bool[U], all False on entry; set for the selection. sel: int32[U] out, ascending.
        keys: int64[U], cand: int32[U], hist: int64[256], wbuf: float32[U] scratch.
    Returns:
        m, the selection size; ``sel[:m]`` holds it.
    """
    n = row.shape[0]
    if mode == MODE_ALL:
        for u in range(n):
            used[u] = True
            sel[u] = u
        return n
    if mode == MODE_THRESHOLD:
        m = 0
        for u in range(n):
            if np.float64(lut[row[u]]) > thr:
                used[u] = True
                sel[m] = u
                m += 1
        return m
    if k <= 0:
        return 0
    nbits = 16
    for u in range(n):
        keys[u] = 65535 - np.int64(row[u])  # smallest key = largest magnitude
    if aware and approx_m > k:
        mark_smallest(keys, n, approx_m, 16, used, cand, hist)  # candidates, marked temporarily
        for u in range(n):
            if not used[u]:
                keys[u] = 1 << 17
            elif not in_cache[u]:
                keys[u] += 1 << 16  # cached candidates first, then uncached, each by magnitude
            used[u] = False
        nbits = 18
    elif aware:
        if fixed_n > 0:
            mark_smallest(keys, n, fixed_n, 16, used, cand, hist)  # exempt units, marked temporarily
        g = np.float32(gamma_t)
        for u in range(n):
            val = lut[row[u]]
            if not (in_cache[u] or used[u]):
                val = np.float32(val * g)
            used[u] = False
            wbuf[u] = val
        bits = wbuf.view(np.uint32)  # non-negative float32 bit patterns order like the values
        for u in range(n):
            keys[u] = 4294967295 - np.int64(bits[u])
        nbits = 32
    v, take = kth_key(keys, n, k - 1, nbits, cand, hist)
    m = 0
    for u in range(n):
        kp = keys[u]
        if kp < v or (kp == v and take > 0):
            if kp == v:
                take -= 1
            used[u] = True
            sel[m] = u
            m += 1
    return m


@njit(**NJIT)
def _priority_keys(units, c, count, last, next_use, pw, ckeys):
    """Policy priorities of ``units[:c]`` as non-negative int64 keys (minus their minimum) in
    ``ckeys[:c]``; returns the bit width of the largest key."""
    lo = np.int64(2**62)
    hi = -lo
    for j in range(c):
        u = units[j]
        p = np.int64(pw[0] * count[u] + pw[1] * last[u] + pw[2] * next_use[u])
        ckeys[j] = p
        lo = min(lo, p)
        hi = max(hi, p)
    for j in range(c):
        ckeys[j] -= lo
    return bit_length(hi - lo)


@njit(**NJIT)
def cache_step(sel, m, used, t, cap, in_cache, count, last, next_use, state, pw, cidx, ckeys, cmark, cand, hist):
    """Account one token's selection against one cache and update the cache.

    ``pw`` (float64[3]) is the policy's priority: ``pw . (count, last, next_use)``, higher is kept; it
    must be integer-valued. ``next_use[sel[:m]]`` must already hold the next-use times of this token's
    units when the policy needs them. ``cidx``, ``cand`` (int32[U]), ``ckeys`` (int64[U]), ``hist``
    (int64[256]) and ``cmark`` (bool[U], all False) are scratch. Returns the number of hits.
    """
    hits = 0
    for j in range(m):
        u = sel[j]
        if in_cache[u]:
            hits += 1
        count[u] += 1
        last[u] = t
    if cap <= 0:
        return hits
    occ = state[0]
    if m >= cap:
        # the cache keeps the `cap` selected units of highest priority; the rest streams past it
        for u in range(in_cache.shape[0]):
            in_cache[u] = False
        nbits = _priority_keys(sel, m, count, last, next_use, pw, ckeys)
        mark_smallest(ckeys, m, m - cap, nbits, cmark, cand, hist)  # the ones that do not stay
        for j in range(m):
            if cmark[j]:
                cmark[j] = False
            else:
                in_cache[sel[j]] = True
        state[0] = cap
        return hits
    misses = m - hits
    evict = occ + misses - cap
    if evict > 0:
        c = 0
        for u in range(in_cache.shape[0]):
            if in_cache[u] and not used[u]:
                cidx[c] = u
                c += 1
        nbits = _priority_keys(cidx, c, count, last, next_use, pw, ckeys)
        mark_smallest(ckeys, c, evict, nbits, cmark, cand, hist)
        for j in range(c):
            if cmark[j]:
                cmark[j] = False
                in_cache[cidx[j]] = False
        occ -= evict
    for j in range(m):
        in_cache[sel[j]] = True
    state[0] = occ + misses
    return hits


@njit(**NJIT)
def _mass(hrow, lut, used, has_mass, out_kept, out_tot, i):
    if has_mass:
        kept = 0.0
        tot = 0.0
        for u in range(hrow.shape[0]):
            v = np.float64(lut[hrow[u]])
            v2 = v * v
            tot += v2
            if used[u]:
                kept += v2
        out_kept[i] = kept
        out_tot[i] = tot


@njit(**NJIT)
def replay_batch(scores, hmag, lut, has_mass, mode, k, thr, aware, gamma, gamma_warmup, fixed_n, approx_m,
                 cap, t0, in_cache, count, last, next_use, state, pw, out_used, out_hits, out_kept, out_tot):
    """Replay a batch of tokens of one (layer, kind) with the cache in the loop (any policy without
    future knowledge; required for cache-aware masks).

    Args:
        scores: uint16[T_b, U] float16 bit patterns of the magnitudes ranking the units (any
            (T_b, *) for MODE_ALL); ``lut``: float32[65536] their values.
        hmag: uint16[T_b, U] |h| bit patterns for the kept-mass proxy when ``has_mass``.
        gamma, gamma_warmup: re-weighting factor and the number of tokens over which it falls
            linearly from 1 to gamma (0 = no warm-up); t0: global index of the batch's first token.
        out_used, out_hits: int32[T_b] selection size and hits per token; out_kept, out_tot: float64[T_b].
    """
    T = scores.shape[0]
    n = in_cache.shape[0]
    used = np.zeros(n, np.bool_)
    sel = np.empty(n, np.int32)
    keys = np.empty(n, np.int64)
    cand = np.empty(n, np.int32)
    hist = np.empty(256, np.int64)
    wbuf = np.empty(n, np.float32)
    cidx = np.empty(n, np.int32)
    ckeys = np.empty(n, np.int64)
    cmark = np.zeros(n, np.bool_)
    dummy = np.empty(n, np.uint16)
    for i in range(T):
        t = t0 + i
        g = gamma
        if gamma_warmup > 0 and t < gamma_warmup:
            g = 1.0 - (1.0 - gamma) * (t / gamma_warmup)
        row = scores[i] if mode != MODE_ALL else dummy
        m = select_units(row, lut, mode, k, thr, aware, g, fixed_n, approx_m, in_cache, used, sel, keys, cand, hist,
                         wbuf)
        out_used[i] = m
        out_hits[i] = cache_step(sel, m, used, t, cap, in_cache, count, last, next_use, state, pw,
                                 cidx, ckeys, cmark, cand, hist)
        _mass(hmag[i], lut, used, has_mass, out_kept, out_tot, i)
        for j in range(m):
            used[sel[j]] = False


@njit(**NJIT)
def mask_batch(scores, hmag, lut, has_mass, mode, k, thr, n_units, out_idx, out_used, out_kept, out_tot):
    """Selections of a batch of tokens for masks that do not depend on the cache.

    Writes the selections back to back into ``out_idx`` (int32, length >= T_b * U) and their sizes into
    ``out_used`` (int32[T_b]). Returns the total number of indices written.
    """
    T = scores.shape[0]
    used = np.zeros(n_units, np.bool_)
    sel = np.empty(n_units, np.int32)
    keys = np.empty(n_units, np.int64)
    cand = np.empty(n_units, np.int32)
    hist = np.empty(256, np.int64)
    wbuf = np.empty(n_units, np.float32)
    in_cache = np.zeros(n_units, np.bool_)
    dummy = np.empty(n_units, np.uint16)
    pos = 0
    for i in range(T):
        row = scores[i] if mode != MODE_ALL else dummy
        m = select_units(row, lut, mode, k, thr, False, 1.0, 0, 0, in_cache, used, sel, keys, cand, hist, wbuf)
        out_used[i] = m
        _mass(hmag[i], lut, used, has_mass, out_kept, out_tot, i)
        for j in range(m):
            out_idx[pos + j] = sel[j]
            used[sel[j]] = False
        pos += m
    return pos


@njit(**NJIT)
def next_use_times(idx, ptr, n_units):
    """For every access ``idx[ptr[t]:ptr[t+1]]`` of token t, the next token that uses the same unit, or
    T (the end of the trace) if none: one backward pass. Returns int64[len(idx)]."""
    T = ptr.shape[0] - 1
    nxt = np.empty(idx.shape[0], np.int64)
    seen = np.full(n_units, T, np.int64)
    for t in range(T - 1, -1, -1):
        for a in range(ptr[t], ptr[t + 1]):
            u = idx[a]
            nxt[a] = seen[u]
            seen[u] = t
    return nxt


@njit(**NJIT)
def replay_masks(idx, ptr, nxt, cap, in_cache, count, last, next_use, state, pw, out_hits):
    """Run precomputed selections (CSR ``idx``/``ptr``, next-use per access ``nxt``) through one cache.
    ``out_hits``: int32[T]."""
    T = ptr.shape[0] - 1
    n = in_cache.shape[0]
    used = np.zeros(n, np.bool_)
    cidx = np.empty(n, np.int32)
    cand = np.empty(n, np.int32)
    ckeys = np.empty(n, np.int64)
    hist = np.empty(256, np.int64)
    cmark = np.zeros(n, np.bool_)
    for t in range(T):
        a0 = ptr[t]
        m = ptr[t + 1] - a0
        sel = idx[a0:a0 + m]
        for j in range(m):
            u = sel[j]
            used[u] = True
            next_use[u] = nxt[a0 + j]
        out_hits[t] = cache_step(sel, m, used, t, cap, in_cache, count, last, next_use, state, pw,
                                 cidx, ckeys, cmark, cand, hist)
        for j in range(m):
            used[sel[j]] = False
