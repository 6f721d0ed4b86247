"""The score-family cache (lru, lfu, belady): a policy's priority is ``weights . (use count, last use,
next use)``; ``cache_step`` accounts one token's selection against a cache and evicts the cached units
of lowest priority that the token does not use, by radix selection; ``replay_masks_at`` replays
precomputed selections."""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT
from simcore.engine.kernels.radix import HIST_SIZE, _nth_equal, bit_length, mark_smallest

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


@njit(**NJIT)
def replay_masks(idx, ptr, nxt, cap, in_cache, count, last, next_use, state, pw, out_hits):
    """Run precomputed selections (CSR ``idx``/``ptr``, next-use per access ``nxt``) through one cache.
    ``out_hits``: int32[T]."""
    replay_masks_at(idx, ptr, nxt, 0, cap, in_cache, count, last, next_use, state, pw, out_hits)


@njit(**NJIT)
def replay_masks_at(idx, ptr, nxt, t0, cap, in_cache, count, last, next_use, state, pw, out_hits):
    """``replay_masks`` for tokens t0, t0 + 1, ... of a longer trace (CSR ``idx``/``ptr`` of these
    tokens only): the cache state (``in_cache`` ... ``state``) carries over from the call for the
    tokens before, so a trace replayed chunk by chunk gives the hits of one call over all of it."""
    T = ptr.shape[0] - 1
    n = in_cache.shape[0]
    used = np.zeros(n, np.bool_)
    cand = np.empty(n, np.int32)
    ckeys = np.empty(n, pw.dtype)
    hist = np.empty(HIST_SIZE, np.int32)
    cmark = np.zeros(n, np.bool_)
    sbuf = np.empty(n, np.int16)
    for t in range(T):
        it, nt = idx[ptr[t] : ptr[t + 1]], nxt[ptr[t] : ptr[t + 1]]  # loops from 0 (module docstring)
        for a in range(it.shape[0]):
            u = it[a]
            used[u] = True
            next_use[u] = nt[a]
        out_hits[t] = cache_step(
            used, it.shape[0], t0 + t, cap, in_cache, count, last, next_use, state, pw, ckeys, cmark, cand, hist, sbuf
        )
        for a in range(it.shape[0]):
            used[it[a]] = False
