"""The score-family cache (lru, lfu, belady): a policy's priority is ``weights . (use count, last use,
next use)``; ``cache_step`` accounts one token's selection against a cache and evicts the cached units
of lowest priority that the token does not use, by radix selection; ``replay_masks_at`` replays
precomputed selections.

``cache_step`` costs O(U) a token, whatever its size. ``replay_masks_at`` therefore replays runs of at
least SPARSE_RUN *sparse* tokens (m units, m < cap and m * factor <= U) on a sparse path instead: a
structure of the cached units, built from ``in_cache`` when the run starts and dropped when it ends
(the cache state stays in the same arrays), gives the same hits, victims and state, token for token:

  * pure recency (weights (0, w > 0, 0): lru): a doubly linked list in (last use, unit index) order,
    O(1) a use; a token's units move to the front in ascending index order, victims leave the back;
  * any other weights (lfu, belady, ...): an indexed binary min-heap on (priority, unit index), O(log C)
    a use; only the keys of a token's units change, so those of the other cached units stay valid;
  * pure next use (weights (0, 0, c < 0): belady) over a run of at least U one-unit tokens: buckets of
    next-use times instead of the heap (``kernels/next_use.py``; 1.3x faster on libCacheSim's case).

All take victims among the cached units the token does not use, lowest priority first, ties to the
lower index, as ``cache_step``. One-unit tokens (libCacheSim's case) replay 70x (belady) to 350x
(lfu) faster than by dense steps at U = 4096, C = 2048 (``benchmarks/policies.py``). Tokens of m >= cap
units stay dense."""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT, NJIT_LEAF, NJIT_TOKEN
from simcore.engine.kernels.next_use import run_ones
from simcore.engine.kernels.radix import FIRST_DIGIT_BITS, HIST_SIZE, _nth_equal, bit_length, mark_smallest
from simcore.engine.kernels.reads import mark_unit

NEVER = np.int32(2**31 - 1)  # next-use time of a unit not yet seen (never compared: it is not cached)


def priority_weights(weights, n_tokens: int) -> np.ndarray:
    """A policy's integer weights (w_count, w_last, w_next) for a trace of ``n_tokens`` tokens, with a
    bound on |priority| appended; int32 when every priority fits in 30 bits, else int64."""
    bound = (sum(abs(int(w)) for w in weights) + 1) * (n_tokens + 1)
    if bound < 2**30:
        return np.array([*map(int, weights), 2**30], np.int32)
    return np.array([*map(int, weights), 2**62], np.int64)


@njit(**NJIT)
def _priority_keys(mask, n, count, last, next_use, pw, ckeys):
    """Policy priorities of the units where ``mask`` is True as non-negative integer keys (minus
    their minimum) in ``ckeys`` (of pw's dtype); elsewhere a key above them all. Returns the keys'
    bit width. ``pw`` = (w_count, w_last, w_next, big) with |priority| < big; int32 when priorities
    fit (the multiplies then vectorise), int64 otherwise. Branch-free."""
    kt = ckeys.dtype.type  # all arithmetic at pw's width, so that the loops vectorise
    a, b, c, big = pw[0], pw[1], pw[2], pw[3]
    for u in range(n):
        ckeys[u] = kt(a * count[u] + b * last[u] + c * next_use[u])
    lo = big
    hi = kt(-big)
    for u in range(n):
        x = ckeys[u]
        lo = min(lo, x if mask[u] else big)
        hi = max(hi, x if mask[u] else kt(-big))
    top = kt(hi - lo + 1)
    for u in range(n):
        ckeys[u] = kt(ckeys[u] - lo) if mask[u] else top
    return bit_length(top)


@njit(**NJIT)
def _at_most(key, v):
    """How many ``key[u] <= v`` (v of the keys' type). int32 keys count in int32 (8 lanes); int16
    keys in uint16 per chunk of 32768 (16 lanes)."""
    n = key.shape[0]
    if key.itemsize == 2:
        s = 0
        for c0 in range(0, n, 32768):
            kc = key[c0 : min(c0 + 32768, n)]
            acc = np.uint16(0)
            for u in range(kc.shape[0]):
                acc = np.uint16(acc + np.uint16(kc[u] <= v))
            s += acc
        return s
    s32 = np.int32(0)
    for u in range(n):
        s32 = np.int32(s32 + np.int32(key[u] <= v))
    return s32


@njit(**NJIT)
def _drop_smallest(ukey, unused, r, floor, in_cache, state):
    """``in_cache`` = the units whose key is above ``floor`` less the ``r`` of them with the smallest
    keys, ties to the lower index; ``unused`` keys equal ``floor`` (the units not used), the others
    are above it. The threshold key is searched by counting passes over ``ukey`` (int16 or int32),
    galloping from the previous token's (``state[1]``): use counts grow by at most one a token and
    next uses move little, so it is rarely more than a few steps away."""
    kt = ukey.dtype.type
    # v = the least key with at_most(v) >= r, at_most(v) = used units with key <= v
    #   = _at_most(ukey, v) - unused for v >= floor; invariant: at_most(lo) = below < r <= at_most(hi)
    v = kt(max(state[1], floor + 1))
    c = _at_most(ukey, v) - unused
    if c >= r:
        hi, step = v, 1
        lo, below = kt(floor), 0  # at_most(floor) = 0
        while hi - step > floor:
            c = _at_most(ukey, kt(hi - step)) - unused
            if c < r:
                lo, below = kt(hi - step), c
                break
            hi = kt(hi - step)
            step *= 2
    else:
        lo, below, step = v, c, 1
        hi = kt(lo + step)
        while True:  # ends: at_most(the largest key) = every used unit >= r
            c = _at_most(ukey, hi) - unused
            if c >= r:
                break
            lo, below = hi, c
            step *= 2
            hi = kt(min(np.int64(lo) + step, np.iinfo(ukey.dtype).max))
    while hi - lo > 1:
        mid = kt(lo + (hi - lo) // 2)
        c = _at_most(ukey, mid) - unused
        if c >= r:
            hi = mid
        else:
            lo, below = mid, c
    v = hi
    state[1] = v
    pos = _nth_equal(ukey, v, r - below)  # the last one dropped at key v
    for u in range(ukey.shape[0]):
        in_cache[u] = ukey[u] > v  # v > floor: no unused unit
    ic, uk = in_cache[pos + 1 :], ukey[pos + 1 :]
    for u in range(ic.shape[0]):
        ic[u] |= uk[u] == v


@njit(**NJIT)
def _keep_most_used(used, m, r, count, by_count, in_cache, state, ukey):
    """``in_cache`` = the used units less the ``r`` of them with the lowest use count, ties to the
    lower index (all tied when not ``by_count``); ``m`` units are used. ``ukey`` (int16[U] while
    counts fit, else int32[U]) is scratch for the keys: the count of a used unit (>= 1), -1 for the
    others."""
    n = used.shape[0]
    if r <= 0:
        for u in range(n):
            in_cache[u] = used[u]
        return
    if not by_count:
        pos = _nth_equal(used, True, r)
        in_cache[: pos + 1] = False
        in_cache[pos + 1 :] = used[pos + 1 :]
        return
    kt = ukey.dtype.type
    for u in range(n):
        ukey[u] = kt(count[u]) if used[u] else kt(-1)
    _drop_smallest(ukey, n - m, r, kt(-1), in_cache, state)


@njit(**NJIT)
def _keep_soonest_used(used, m, r, next_use, in_cache, state, ukey):
    """``in_cache`` = the used units less the ``r`` of them used again last (Belady), ties to the lower
    index; ``ukey`` (int32[U]) is scratch for the keys: minus the next use of a used unit, the
    int32 minimum for the others."""
    n = used.shape[0]
    if r <= 0:
        for u in range(n):
            in_cache[u] = used[u]
        return
    floor = np.int32(-(2**31))
    for u in range(n):
        ukey[u] = np.int32(np.int32(0) - next_use[u]) if used[u] else floor
    _drop_smallest(ukey, n - m, r, floor, in_cache, state)


@njit(**NJIT)
def cache_step(used, m, t, cap, in_cache, count, last, next_use, state, pw, ckeys, cmark, cand, hist, sbuf):
    """Account one token's selection ``used`` (bool[U], m units) against one cache, then update it.

    ``pw`` is the policy's priority: ``pw[:3] . (count, last, next_use)``, higher is kept, and
    ``pw[3]`` a bound on its magnitude (see ``priority_weights``). ``next_use`` must already hold the
    next-use times of this token's units when the policy needs them. ``state`` (int64[STATE_SIZE]):
    see the module docstring. ``ckeys`` (pw's dtype, [U]), ``cmark`` (bool[U]), ``cand`` (int32[U]),
    ``hist`` and ``sbuf`` (int16[U]) are scratch. Returns the number of hits.
    """
    n = used.shape[0]
    hits = np.int32(0)
    tl = last.dtype.type(t)  # t at last's width: a wider operand would halve the lanes
    for u in range(n):
        x = used[u]
        hits = np.int32(hits + np.int32(x & in_cache[u]))
        count[u] = count.dtype.type(count[u] + x)
        last[u] = tl if x else last[u]
    if cap <= 0:
        return hits
    occ = state[0]
    if m >= cap:
        # the cache keeps the `cap` selected units of highest priority; the rest streams past it
        if pw[2] == 0 and pw[0] >= 0:
            # all of them were last used now: the priority order among them is the use count's
            if t < 32000:  # every count <= t + 1 fits int16: counting passes twice as wide
                _keep_most_used(used, m, m - cap, count, pw[0] > 0, in_cache, state, sbuf)
            else:
                _keep_most_used(used, m, m - cap, count, pw[0] > 0, in_cache, state, cand)
            state[0] = cap
            return hits
        if pw[0] == 0 and pw[1] == 0 and pw[2] < 0:  # Belady: the soonest next uses stay
            _keep_soonest_used(used, m, m - cap, next_use, in_cache, state, cand)
            state[0] = cap
            return hits
        nbits = _priority_keys(used, n, count, last, next_use, pw, ckeys)
        mark_smallest(ckeys, n, m - cap, nbits, cmark, cand, hist)  # the ones that do not stay
        for u in range(n):
            in_cache[u] = used[u] > cmark[u]  # used and not dropped; bool operators, no branches
        state[0] = cap
        return hits
    misses = m - hits
    evict = occ + misses - cap
    if evict > 0:
        for u in range(n):
            cmark[u] = in_cache[u] > used[u]  # eviction candidates: cached and not used
        nbits = _priority_keys(cmark, n, count, last, next_use, pw, ckeys)
        mark_smallest(ckeys, n, evict, nbits, cmark, cand, hist)  # the victims
        for u in range(n):
            in_cache[u] = (in_cache[u] > cmark[u]) | used[u]
        occ -= evict
    else:
        for u in range(n):
            in_cache[u] = in_cache[u] | used[u]
    state[0] = occ + misses
    return hits


# --- the sparse path: runs of tokens of a few units, against a structure of the cached units ------

SPARSE_FACTOR_LRU = 4
SPARSE_FACTOR_HEAP = 32
"""A token of ``m`` units is sparse when ``m < cap`` and ``m * factor <= U``, the factor of the
structure: the recency list's O(1) a unit beats the dense step up to m = U / 2 or so, the heap's
O(log C) up to U / 16 to U / 32 (less when most units hit); measured with U = 4096 and 32768."""

SPARSE_RUN = 8
"""The sparse path takes runs of at least this many sparse tokens: building its structure costs O(U)
(U = 4096, C = 2048: 8 us the heap, 12 us the list), some 5 to 10 dense one-unit steps; the tokens of
a shorter run stay on the dense path."""


@njit(**NJIT_TOKEN)
def _sparse(m, cap, n, f):
    """Whether a token of ``m`` units is sparse (for a cache of ``cap`` of ``n`` units, factor ``f``)."""
    return m < cap and m * f <= n


@njit(**NJIT_TOKEN)
def _sparse_run(ptr, t, cap, n, f):
    """How many sparse tokens follow from token ``t`` on, counted up to SPARSE_RUN."""
    T = ptr.shape[0] - 1
    r = 0
    while r < SPARSE_RUN and t + r < T and _sparse(ptr[t + r + 1] - ptr[t + r], cap, n, f):
        r += 1
    return r


@njit(**NJIT_TOKEN)
def _use(u, tt, nu, count, last, next_use):
    """The policy state of unit ``u`` used at token ``tt`` (next use ``nu``), as ``cache_step`` sets it."""
    count[u] += 1
    last[u] = tt
    next_use[u] = nu


# the heap: any weights. Only the keys of a token's units change, so the others' stay valid.


@njit(**NJIT_TOKEN)
def _key(u, count, last, next_use, a, b, c):
    """Unit ``u``'s priority, exact in int64 (``a``, ``b``, ``c``: the weights as int64)."""
    return a * np.int64(count[u]) + b * np.int64(last[u]) + c * np.int64(next_use[u])


@njit(**NJIT_TOKEN)
def _use_key(u, tt, nu, count, last, next_use, a, b, c):
    """``_use``, then ``_key`` (from the values stored, not read back)."""
    cu, lu, nu = count.dtype.type(count[u] + 1), last.dtype.type(tt), next_use.dtype.type(nu)
    count[u], last[u], next_use[u] = cu, lu, nu
    return a * np.int64(cu) + b * np.int64(lu) + c * np.int64(nu)


@njit(**NJIT_TOKEN)
def _before(k, u, k2, u2):
    """Whether the entry (key ``k``, unit ``u``) comes before (``k2``, ``u2``): it is evicted first."""
    return k < k2 or (k == k2 and u < u2)


@njit(**NJIT_TOKEN)
def _place_up(p, k, u, hkey, hunit, hpos):
    """Put the entry (``k``, ``u``) in the hole at heap position ``p``, moving it up to its place.
    Positions and units are unsigned: indices with no test for negative ones."""
    p, u, one = np.uint64(p), np.uint32(u), np.uint64(1)
    while p > 0:
        q = (p - one) >> one
        kq, uq = hkey[q], np.uint32(hunit[q])
        if _before(kq, uq, k, u):
            break
        hkey[p], hunit[p] = kq, uq
        hpos[uq] = p
        p = q
    hkey[p], hunit[p] = k, u
    hpos[u] = p


@njit(**NJIT_TOKEN)
def _place_down(p, k, u, size, hkey, hunit, hpos):
    """Put the entry (``k``, ``u``) in the hole at ``p``, moving it down among the first ``size``."""
    p, u, size, one = np.uint64(p), np.uint32(u), np.uint64(size), np.uint64(1)
    while True:
        c = p + p + one
        if c >= size:
            break
        kc, uc = hkey[c], np.uint32(hunit[c])
        if c + one < size:  # the first child, without a branch
            k1, u1 = hkey[c + one], np.uint32(hunit[c + one])
            right = (k1 < kc) | ((k1 == kc) & (u1 < uc))
            c += np.uint64(right)
            kc = k1 if right else kc
            uc = u1 if right else uc
        if _before(k, u, kc, uc):
            break
        hkey[p], hunit[p] = kc, uc
        hpos[uc] = p
        p = c
    hkey[p], hunit[p] = k, u
    hpos[u] = p


@njit(**NJIT_TOKEN)
def _replace(p, k, u, size, hkey, hunit, hpos):
    """Replace heap entry ``p`` with (``k``, ``u``), moved to its place."""
    p = np.uint64(p)
    if _before(k, u, hkey[p], hunit[p]):
        _place_up(p, k, u, hkey, hunit, hpos)
    else:
        _place_down(p, k, u, size, hkey, hunit, hpos)


@njit(**NJIT)
def _heap_build(in_cache, count, last, next_use, pw, hkey, hunit, hpos):
    """The cached units as a binary min-heap on (key, unit index): ``hkey`` (int64[U]), ``hunit``
    (int32[U]) its entries, ``hpos`` (int32[U]) a cached unit's entry. Returns its size."""
    a, b, c = np.int64(pw[0]), np.int64(pw[1]), np.int64(pw[2])
    size = 0
    for u in range(in_cache.shape[0]):
        if in_cache[u]:
            hkey[size], hunit[size] = _key(u, count, last, next_use, a, b, c), u
            size += 1
    for p in range(size):
        hpos[hunit[p]] = p
    for p in range(size // 2 - 1, -1, -1):
        _place_down(p, hkey[p], hunit[p], size, hkey, hunit, hpos)
    return size


@njit(**NJIT_LEAF)
def _heap_token(idx, nxt, a0, a1, tt, cap, occ, in_cache, count, last, next_use, a, b, c, hkey, hunit, hpos):
    """``cache_step`` for a token of several units ``idx[a0:a1]`` (next uses ``nxt[a0:a1]``) against
    the heap of the ``occ`` cached units. Returns (hits, new occupancy)."""
    hits = 0
    for i in range(a0, a1):
        u = np.uint32(idx[i])  # unsigned indices: no test for negative ones
        hits += in_cache[u]
        _use(u, tt, nxt[i], count, last, next_use)
    size = occ
    evict = occ + (a1 - a0 - hits) - cap
    if evict <= 0:
        for i in range(a0, a1):
            u = np.uint32(idx[i])
            k = _key(u, count, last, next_use, a, b, c)
            if in_cache[u]:
                _replace(hpos[u], k, u, size, hkey, hunit, hpos)
            else:
                _place_up(size, k, u, hkey, hunit, hpos)
                size += 1
                in_cache[u] = True
        return hits, size
    # victims among the cached units that the token does not use: its hits leave the heap first
    for i in range(a0, a1):
        u = np.uint32(idx[i])
        if in_cache[u]:
            size -= 1
            if hunit[size] != u:  # the last entry fills its hole
                _replace(hpos[u], hkey[size], hunit[size], size, hkey, hunit, hpos)
    for _ in range(evict - 1):
        in_cache[np.uint32(hunit[0])] = False
        size -= 1
        _place_down(0, hkey[size], hunit[size], size, hkey, hunit, hpos)
    # the last victim's entry goes to the token's first miss (there is one: evict > 0): one sift
    in_cache[np.uint32(hunit[0])] = False
    f = a0
    while in_cache[idx[f]]:
        f += 1
    _place_down(0, _key(idx[f], count, last, next_use, a, b, c), idx[f], size, hkey, hunit, hpos)
    for i in range(a0, a1):
        u = np.uint32(idx[i])
        if i != f:
            _place_up(size, _key(u, count, last, next_use, a, b, c), u, hkey, hunit, hpos)
            size += 1
        in_cache[u] = True
    return hits, size


@njit(**NJIT_LEAF)
def _heap_ones(idx, ptr, nxt, t, t0, cap, occ, in_cache, count, last, next_use, a, b, c, out_hits, hkey, hunit, hpos):
    """The one-unit tokens from token ``t`` on against the heap of the ``occ`` cached units (``cap`` >=
    2). Returns (the first token of another size, or T; the new occupancy)."""
    T = ptr.shape[0] - 1
    while t < T:
        tu = np.uint64(t)
        a0 = ptr[tu]
        if ptr[tu + np.uint64(1)] - a0 != 1:
            break
        i = np.uint64(a0)  # unsigned indices: no test for negative ones
        u = np.uint32(idx[i])
        k = _use_key(u, t0 + t, nxt[i], count, last, next_use, a, b, c)
        hit = in_cache[u]
        out_hits[tu] = hit
        if hit:
            _replace(hpos[u], k, u, occ, hkey, hunit, hpos)
        elif occ == cap:  # the root is the victim; u takes its entry
            in_cache[np.uint32(hunit[0])] = False
            _place_down(0, k, u, occ, hkey, hunit, hpos)
            in_cache[u] = True
        else:
            _place_up(occ, k, u, hkey, hunit, hpos)
            occ += 1
            in_cache[u] = True
        t += 1
    return t, occ


@njit(**NJIT_LEAF)
def _heap_run(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, pw, out_hits, hkey, hunit, hpos):
    """Replay the sparse tokens from token ``t`` on (tokens t0 + t, ... of the trace) against the heap
    of the cached units (``_heap_build``); returns the first token not replayed (a dense one, or T)."""
    T = ptr.shape[0] - 1
    n = in_cache.shape[0]
    one = _sparse(1, cap, n, SPARSE_FACTOR_HEAP)  # one-unit tokens are sparse
    a, b, c = np.int64(pw[0]), np.int64(pw[1]), np.int64(pw[2])
    occ = state[0]
    while t < T:
        if one:
            t, occ = _heap_ones(
                idx, ptr, nxt, t, t0, cap, occ, in_cache, count, last, next_use, a, b, c, out_hits, hkey, hunit, hpos
            )
            if t == T:
                break
        a0, a1 = ptr[t], ptr[t + 1]
        if not _sparse(a1 - a0, cap, n, SPARSE_FACTOR_HEAP):
            break
        out_hits[t], occ = _heap_token(
            idx, nxt, a0, a1, t0 + t, cap, occ, in_cache, count, last, next_use, a, b, c, hkey, hunit, hpos
        )
        t += 1
    state[0] = occ
    return t


# the recency list: pure recency (weights (0, w > 0, 0)), O(1) a use.


@njit(**NJIT)
def _by_last_use(in_cache, last):
    """The cached units in order of (last use, unit index): a stable LSD radix sort of the units in
    ascending order by last use (11-bit digits; Numba's own sorts are several times slower)."""
    units = np.flatnonzero(in_cache).astype(np.int32)
    c = units.shape[0]
    if c == 0:
        return units
    lo, hi = last[units[0]], last[units[0]]
    for j in range(c):
        lo, hi = min(lo, last[units[j]]), max(hi, last[units[j]])
    other = np.empty(c, np.int32)
    hist = np.empty(HIST_SIZE + 1, np.int64)
    shift = 0
    while (np.int64(hi) - lo) >> shift > 0:
        hist[:] = 0
        for j in range(c):
            hist[((np.int64(last[units[j]]) - lo) >> shift & (HIST_SIZE - 1)) + 1] += 1
        for d in range(HIST_SIZE):
            hist[d + 1] += hist[d]
        for j in range(c):
            d = (np.int64(last[units[j]]) - lo) >> shift & (HIST_SIZE - 1)
            other[hist[d]] = units[j]
            hist[d] += 1
        units, other = other, units
        shift += FIRST_DIGIT_BITS
    return units


@njit(**NJIT)
def _lru_build(in_cache, last, nx, pv):
    """The cached units as a circular doubly linked list in order of (last use, unit index), through
    the sentinel ``U``: ``nx[U]`` is the most recently used, ``pv[U]`` the next to evict (``nx``,
    ``pv``: int16 or int32[U + 1])."""
    n = in_cache.shape[0]
    order = _by_last_use(in_cache, last)
    after = n  # linked from the next to evict on, each in front of the one before
    for j in range(order.shape[0]):
        u = order[j]
        nx[u], pv[after] = after, u
        after = u
    nx[n], pv[after] = after, n


@njit(**NJIT_TOKEN)
def _unlink(u, nx, pv):
    """Take unit ``u`` out of the recency list."""
    p, q = np.uint32(pv[u]), np.uint32(nx[u])
    nx[p], pv[q] = q, p


@njit(**NJIT_TOKEN)
def _push_front(u, n, nx, pv):
    """Put unit ``u`` at the front of the recency list (sentinel ``n``)."""
    h = np.uint32(nx[n])
    nx[u], pv[u] = h, n
    pv[h], nx[n] = u, u


@njit(**NJIT_LEAF)
def _lru_token(idx, nxt, a0, a1, tt, cap, occ, in_cache, count, last, next_use, nx, pv):
    """``cache_step`` for a token of several units ``idx[a0:a1]`` against the recency list of the
    ``occ`` cached units: its hits leave the list, the victims leave from the back, then its units go
    to the front in ascending index order. Returns (hits, new occupancy)."""
    n = in_cache.shape[0]
    hits = 0
    for i in range(a0, a1):
        u = np.uint32(idx[i])  # unsigned indices: no test for negative ones
        if in_cache[u]:
            hits += 1
            _unlink(u, nx, pv)
        _use(u, tt, nxt[i], count, last, next_use)
    misses = a1 - a0 - hits
    evict = occ + misses - cap
    for _ in range(evict):
        v = np.uint32(pv[n])
        _unlink(v, nx, pv)
        in_cache[v] = False
    for i in range(a0, a1):
        u = np.uint32(idx[i])
        _push_front(u, n, nx, pv)
        in_cache[u] = True
    return hits, occ + misses - max(evict, 0)


@njit(**NJIT_LEAF)
def _lru_ones(idx, ptr, t, t0, cap, occ, in_cache, count, last, out_hits, nx, pv):
    """The one-unit tokens from token ``t`` on against the recency list of the ``occ`` cached units
    (``cap`` >= 2), setting ``count`` and ``last`` but not ``next_use``, which recency does not read
    (``_next_uses_after`` sets it: storing it here cost 9 %). Returns (the first token of another size,
    or T; the new occupancy)."""
    T = ptr.shape[0] - 1
    n = in_cache.shape[0]
    while t < T:
        tu = np.uint64(t)
        a0 = ptr[tu]
        if ptr[tu + np.uint64(1)] - a0 != 1:
            break
        u = np.uint32(idx[np.uint64(a0)])  # unsigned indices: no test for negative ones (+30%)
        count[u] += 1  # next_use: after the run (_next_uses_after)
        last[u] = t0 + t
        hit = in_cache[u]
        out_hits[tu] = hit
        if hit:
            if nx[n] != u:
                _unlink(u, nx, pv)
                _push_front(u, n, nx, pv)
        else:
            if occ == cap:
                v = np.uint32(pv[n])
                _unlink(v, nx, pv)
                in_cache[v] = False
            else:
                occ += 1
            _push_front(u, n, nx, pv)
            in_cache[u] = True
        t += 1
    return t, occ


@njit(**NJIT_TOKEN)
def _next_uses_after(idx, ptr, nxt, t1, t2, t0, count, last, next_use):
    """Set ``next_use`` of the units that the one-unit tokens t1 .. t2 - 1 used, as ``_use`` would have:
    each from its last use among them. A long run reads it per unit, at the token of its last use
    (``last``; no unit used before t1 has a last use at t0 + t1 or later: ``_lru_sparse``)."""
    n = count.shape[0]
    if t2 - t1 <= n:
        for t in range(t1, t2):
            i = ptr[t]
            next_use[idx[i]] = nxt[i]
        return
    for u in range(n):
        tl = np.int64(last[u]) - t0
        if t1 <= tl < t2 and count[u] > 0:
            next_use[u] = nxt[ptr[tl]]


@njit(**NJIT_LEAF)
def _lru_run(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, out_hits, nx, pv):
    """``_heap_run`` for pure recency, against the recency list (``_lru_build``; every cached unit
    last used before token t0 + t): a token's units go to the front in ascending index order, the
    victims leave from the back."""
    T = ptr.shape[0] - 1
    n = in_cache.shape[0]
    one = _sparse(1, cap, n, SPARSE_FACTOR_LRU)  # one-unit tokens are sparse
    occ = state[0]
    while t < T:
        if one:
            t1 = t
            t, occ = _lru_ones(idx, ptr, t, t0, cap, occ, in_cache, count, last, out_hits, nx, pv)
            _next_uses_after(idx, ptr, nxt, t1, t, t0, count, last, next_use)
            if t == T:
                break
        a0, a1 = ptr[t], ptr[t + 1]
        if not _sparse(a1 - a0, cap, n, SPARSE_FACTOR_LRU):
            break
        out_hits[t], occ = _lru_token(idx, nxt, a0, a1, t0 + t, cap, occ, in_cache, count, last, next_use, nx, pv)
        t += 1
    state[0] = occ
    return t


@njit(**NJIT)
def _lru_sparse(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, out_hits, nx, pv):
    """``_replay_sparse`` for pure recency, with the links ``nx``, ``pv``."""
    for u in range(count.shape[0]):  # a unit used at t0 + t or later (a trace replayed out of order)
        if count[u] > 0 and last[u] >= t0 + t:  # would put the list out of order
            return t
    _lru_build(in_cache, last, nx, pv)
    return _lru_run(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, out_hits, nx, pv)


@njit(**NJIT)
def _replay_sparse(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, pw, out_hits, lru, links, heap):
    """Build the sparse path's structure (``lru``: the recency list ``links`` = (nx, pv) int16, or the
    int32 pair after them when those are empty; else the heap ``heap`` = (hkey, hunit, hpos), or for pure
    next-use weights over a long one-unit run the buckets of ``next_use.run_ones``) and replay the sparse
    tokens from token ``t`` on. Returns the first token not replayed: ``t`` itself when the cache state
    does not suit the structure (a unit used at token t0 + t or later; an occupancy that is not the number
    of cached units)."""
    if lru:  # int16 links where the units allow (a smaller working set: +8 % on one-unit tokens)
        if links[0].shape[0] > 0:
            return _lru_sparse(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, out_hits, *links[:2])
        return _lru_sparse(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, out_hits, *links[2:])
    hkey, hunit, hpos = heap
    if pw[0] == 0 and pw[1] == 0 and pw[2] < 0 and ptr[t + 1] - ptr[t] == 1:  # next-use buckets (next_use.py)
        t = run_ones(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, out_hits, in_cache.shape[0])
        if t == ptr.shape[0] - 1:
            return t
    if _heap_build(in_cache, count, last, next_use, pw, hkey, hunit, hpos) != state[0]:
        return t
    return _heap_run(idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, pw, out_hits, hkey, hunit, hpos)


@njit(**NJIT)
def replay_masks(idx, ptr, nxt, cap, in_cache, count, last, next_use, state, pw, out_hits):
    """Run precomputed selections (CSR ``idx``/``ptr``, next-use per access ``nxt``) through one cache.
    ``out_hits``: int32[T]."""
    no_pos, no_bits = np.zeros(0, np.int32), np.zeros((0, 0), np.uint64)
    replay_masks_at(idx, ptr, nxt, 0, cap, in_cache, count, last, next_use, state, pw, out_hits, no_pos, no_bits)


@njit(**NJIT)
def replay_masks_at(idx, ptr, nxt, t0, cap, in_cache, count, last, next_use, state, pw, out_hits, pos, miss_bits):
    """``replay_masks`` for tokens t0, t0 + 1, ... of a longer trace (CSR ``idx``/``ptr`` of these
    tokens only): the cache state (``in_cache`` ... ``state``) carries over from the call for the
    tokens before, so a trace replayed chunk by chunk gives the hits of one call over all of it.
    Runs of sparse tokens take the sparse path (module docstring), the other tokens ``cache_step``;
    both give the same hits and state (``in_cache``, ``count``, ``last``, ``next_use``, ``state[0]``).

    ``idx`` (int32[nnz], ascending within a token), ``ptr`` (int64[T + 1]), ``nxt`` (int32[nnz]: next
    use of each access); ``in_cache`` (bool[U]), ``count``, ``last``, ``next_use`` (int32[U]), ``state``
    (int64[>= 1]), ``pw`` (``priority_weights``), ``out_hits`` (int32[T]); ``miss_bits`` (uint64[T, W],
    or (0, 0): not wanted) receives each token's missed units at their Flash positions ``pos``
    (``kernels.mark_missed``); the Flash read model takes the dense path for every token."""
    T = ptr.shape[0] - 1
    reads = miss_bits.shape[0] > 0
    n = in_cache.shape[0]
    used = np.zeros(n, np.bool_)
    cand = np.empty(n, np.int32)
    ckeys = np.empty(n, pw.dtype)
    hist = np.empty(HIST_SIZE, np.int32)
    cmark = np.zeros(n, np.bool_)
    sbuf = np.empty(n, np.int16)
    # the sparse path's structure (module docstring): a recency list for pure recency, else a heap
    lru = pw[0] == 0 and pw[2] == 0 and pw[1] > 0
    nl, nh = (n + 1, 0) if lru else (0, n)
    n16 = nl if nl <= np.iinfo(np.int16).max else 0  # nx, pv (_lru_build): int16 if they fit, else int32
    links = (
        np.empty(n16, np.int16),
        np.empty(n16, np.int16),
        np.empty(nl - n16, np.int32),
        np.empty(nl - n16, np.int32),
    )
    heap = (np.empty(nh, np.int64), np.empty(nh, np.int32), np.empty(nh, np.int32))  # hkey, hunit, hpos
    f = SPARSE_FACTOR_LRU if lru else SPARSE_FACTOR_HEAP
    dense_until = 0  # the tokens before it stay on the dense path (a sparse run too short)
    t = np.int64(0)  # not the literal 0, which would compile the sparse kernels twice
    while t < T:
        a0, a1 = ptr[t], ptr[t + 1]
        if not reads and t >= dense_until and _sparse(a1 - a0, cap, n, f):
            dense_until = t + _sparse_run(ptr, t, cap, n, f)
            if dense_until - t == SPARSE_RUN:
                end = _replay_sparse(
                    idx, ptr, nxt, t, t0, cap, in_cache, count, last, next_use, state, pw, out_hits, lru, links, heap
                )
                if end > t:
                    t = end
                    continue
        it, nt = idx[a0:a1], nxt[a0:a1]  # loops from 0 (module docstring)
        for a in range(it.shape[0]):
            u = it[a]
            used[u] = True
            next_use[u] = nt[a]
            if reads and not in_cache[u]:
                mark_unit(u, pos, miss_bits, t)
        out_hits[t] = cache_step(
            used, it.shape[0], t0 + t, cap, in_cache, count, last, next_use, state, pw, ckeys, cmark, cand, hist, sbuf
        )
        for a in range(it.shape[0]):
            used[it[a]] = False
        t += 1
