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
NEVER = np.int64(2**62)  # next-use time of a unit that is never used again


@njit(**NJIT)
def kth_smallest(a, n, k):
    """The k-th smallest (0-based) of ``a[:n]``, found in place (Wirth's quickselect, median of
    three pivot); ``a[:n]`` is reordered. Requires 0 <= k < n."""
    lo = 0
    hi = n - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        # median of three into a[k]'s role as pivot value
        x0, x1, x2 = a[lo], a[mid], a[hi]
        if x0 > x1:
            x0, x1 = x1, x0
        if x1 > x2:
            x1 = x2
            if x0 > x1:
                x1 = x0
        x = x1
        i = lo
        j = hi
        while i <= j:
            while a[i] < x:
                i += 1
            while x < a[j]:
                j -= 1
            if i <= j:
                tmp = a[i]
                a[i] = a[j]
                a[j] = tmp
                i += 1
                j -= 1
        if j < k:
            lo = i
        if k < i:
            hi = j
    return a[k]


@njit(**NJIT)
def mark_smallest(keys, n, k, mark, buf):
    """Set ``mark[p] = True`` for exactly the ``k`` positions p < n of smallest ``keys[p]``
    (ties: lower position first). ``buf`` is float64 scratch of length >= n. Returns k."""
    if k <= 0:
        return 0
    if k >= n:
        for p in range(n):
            mark[p] = True
        return n
    for p in range(n):
        buf[p] = keys[p]
    v = kth_smallest(buf, n, k - 1)
    less = 0
    for p in range(n):
        if keys[p] < v:
            less += 1
    room = k - less
    for p in range(n):
        kp = keys[p]
        if kp < v:
            mark[p] = True
        elif kp == v and room > 0:
            mark[p] = True
            room -= 1
    return k


@njit(**NJIT)
def select_units(row, mode, k, thr, aware, gamma_t, fixed_n, approx_m, in_cache, used, sel, keys, buf):
    """Compute one token's selection for one kind.

    Args:
        row: float32[U] magnitudes ranking the units (unused for MODE_ALL).
        mode: MODE_ALL / MODE_TOPK / MODE_THRESHOLD.
        k: units to select (MODE_TOPK). thr: threshold (MODE_THRESHOLD: score > thr).
        aware: cache-aware re-weighting (dip-ca): score * (1 if in_cache else gamma_t).
        fixed_n: the fixed_n largest raw scores are exempt from re-weighting.
        approx_m: if > k, approximate selection: among the approx_m largest raw scores take the cached
            units first (by score), then the uncached ones (by score).
        used: bool[U], all False on entry; set for the selection. sel: int32[U] out, ascending.
        keys, buf: float64[U] scratch.
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
            if np.float64(row[u]) > thr:
                used[u] = True
                sel[m] = u
                m += 1
        return m
    for u in range(n):
        keys[u] = -np.float64(row[u])
    if aware:
        if approx_m > k:
            # candidates: top approx_m by raw score, marked in `used` temporarily
            mark_smallest(keys, n, approx_m, used, buf)
            big = 0.0
            for u in range(n):
                if -keys[u] > big:
                    big = -keys[u]
            big = big + 1.0
            for u in range(n):
                if not used[u]:
                    keys[u] = np.inf
                elif in_cache[u]:
                    keys[u] -= big  # cached candidates rank before all uncached ones
                used[u] = False
        else:
            if fixed_n > 0:
                mark_smallest(keys, n, fixed_n, used, buf)  # exempt units, marked temporarily
            for u in range(n):
                if used[u]:
                    used[u] = False
                elif not in_cache[u]:
                    keys[u] *= gamma_t
    mark_smallest(keys, n, k, used, buf)
    m = 0
    for u in range(n):
        if used[u]:
            sel[m] = u
            m += 1
    return m


@njit(**NJIT)
def cache_step(sel, m, used, t, cap, in_cache, count, last, next_use, state, pw, cand, ckeys, cmark, buf):
    """Account one token's selection against one cache and update the cache.

    ``pw`` (float64[3]) is the policy's priority: ``pw . (count, last, next_use)``, higher is kept.
    ``next_use[sel[:m]]`` must already hold the next-use times of this token's units when the policy
    needs them. ``cand`` (int32[U]), ``ckeys``/``buf`` (float64[U]) and ``cmark`` (bool[U], all False)
    are scratch. Returns the number of hits.
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
        for j in range(m):
            u = sel[j]
            ckeys[j] = pw[0] * count[u] + pw[1] * last[u] + pw[2] * next_use[u]
        mark_smallest(ckeys, m, m - cap, cmark, buf)  # the ones that do not stay
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
                cand[c] = u
                ckeys[c] = pw[0] * count[u] + pw[1] * last[u] + pw[2] * next_use[u]
                c += 1
        mark_smallest(ckeys, c, evict, cmark, buf)
        for j in range(c):
            if cmark[j]:
                cmark[j] = False
                in_cache[cand[j]] = False
        occ -= evict
    for j in range(m):
        in_cache[sel[j]] = True
    state[0] = occ + misses
    return hits


@njit(**NJIT)
def _mass(hrow, used, has_mass, out_kept, out_tot, i):
    if has_mass:
        kept = 0.0
        tot = 0.0
        for u in range(hrow.shape[0]):
            v = np.float64(hrow[u])
            v2 = v * v
            tot += v2
            if used[u]:
                kept += v2
        out_kept[i] = kept
        out_tot[i] = tot


@njit(**NJIT)
def replay_batch(scores, hmag, has_mass, mode, k, thr, aware, gamma, gamma_warmup, fixed_n, approx_m,
                 cap, t0, in_cache, count, last, next_use, state, pw,
                 out_used, out_hits, out_kept, out_tot):
    """Replay a batch of tokens of one (layer, kind) with the cache in the loop (any policy without
    future knowledge; required for cache-aware masks).

    Args:
        scores: float32[T_b, U] magnitudes ranking the units (any shape (T_b, *) for MODE_ALL).
        hmag: float32[T_b, U] |h| for the kept-mass proxy when ``has_mass``.
        gamma, gamma_warmup: re-weighting factor and the number of tokens over which it falls
            linearly from 1 to gamma (0 = no warm-up); t0: global index of the batch's first token.
        out_used, out_hits: int32[T_b] selection size and hits per token; out_kept, out_tot: float64[T_b].
    """
    T = scores.shape[0]
    n = in_cache.shape[0]
    used = np.zeros(n, np.bool_)
    sel = np.empty(n, np.int32)
    keys = np.empty(n, np.float64)
    buf = np.empty(n, np.float64)
    cand = np.empty(n, np.int32)
    ckeys = np.empty(n, np.float64)
    cmark = np.zeros(n, np.bool_)
    dummy = np.empty(n, np.float32)
    for i in range(T):
        t = t0 + i
        g = gamma
        if gamma_warmup > 0 and t < gamma_warmup:
            g = 1.0 - (1.0 - gamma) * (t / gamma_warmup)
        row = scores[i] if mode != MODE_ALL else dummy
        m = select_units(row, mode, k, thr, aware, g, fixed_n, approx_m, in_cache, used, sel, keys, buf)
        out_used[i] = m
        out_hits[i] = cache_step(sel, m, used, t, cap, in_cache, count, last, next_use, state, pw,
                                 cand, ckeys, cmark, buf)
        _mass(hmag[i], used, has_mass, out_kept, out_tot, i)
        for j in range(m):
            used[sel[j]] = False


@njit(**NJIT)
def mask_batch(scores, hmag, has_mass, mode, k, thr, n_units, out_idx, out_used, out_kept, out_tot):
    """Selections of a batch of tokens for masks that do not depend on the cache.

    Writes the selections back to back into ``out_idx`` (int32, length >= T_b * U) and their sizes into
    ``out_used`` (int32[T_b]). Returns the total number of indices written.
    """
    T = scores.shape[0]
    used = np.zeros(n_units, np.bool_)
    sel = np.empty(n_units, np.int32)
    keys = np.empty(n_units, np.float64)
    buf = np.empty(n_units, np.float64)
    in_cache = np.zeros(n_units, np.bool_)
    dummy = np.empty(n_units, np.float32)
    pos = 0
    for i in range(T):
        row = scores[i] if mode != MODE_ALL else dummy
        m = select_units(row, mode, k, thr, False, 1.0, 0, 0, in_cache, used, sel, keys, buf)
        out_used[i] = m
        _mass(hmag[i], used, has_mass, out_kept, out_tot, i)
        for j in range(m):
            out_idx[pos + j] = sel[j]
            used[sel[j]] = False
        pos += m
    return pos


@njit(**NJIT)
def next_use_times(idx, ptr, n_units):
    """For every access ``idx[ptr[t]:ptr[t+1]]`` of token t, the next token that uses the same unit
    (NEVER if none): one backward pass. Returns int64[len(idx)]."""
    T = ptr.shape[0] - 1
    nxt = np.empty(idx.shape[0], np.int64)
    seen = np.full(n_units, NEVER, np.int64)
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
    cand = np.empty(n, np.int32)
    ckeys = np.empty(n, np.float64)
    buf = np.empty(n, np.float64)
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
                                 cand, ckeys, cmark, buf)
        for j in range(m):
            used[sel[j]] = False
