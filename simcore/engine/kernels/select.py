"""One token's unit selection for one kind (``select_units``): every unit, a threshold, a top-k, or a
cache-aware top-k (scores re-weighted by gamma for units not in the cache, a fixed top-n exempt, or an
approximate selection); gamma's warm-up over a token's position (``gamma_at``); the kept |h| mass of a
selection (``_mass``).

The cache-aware variants follow Federici et al.'s published functions (arXiv 2412.01380):
``cache_aware_reweighting_current_cache`` (gamma re-weighting, a fixed top-n, the warm-up
gamma_t = 1 - (1 - gamma)(1 - gamma^(t/4))) and ``cache_aware_reweighting_approximate`` (see
``_select_approximate``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT, NJIT_REDUCE
from simcore.engine.kernels.f16 import (
    F16_INF,
    F16_SCALE,
    HALF_IN_HARDWARE,
    LUT,
    _f16_ceil,
    _f16_shifted,
    float_bits,
    half_to_float,
)
from simcore.engine.kernels.radix import HIST_SIZE, _nth_equal, _positions, bit_length, kth_key, mark_smallest

MODE_ALL, MODE_TOPK, MODE_THRESHOLD = 0, 1, 2

GAMMA_SCHEDULES = ("linear", "authors")
"""How gamma warms up (``gamma_at``), by code: 0 linear over the first tokens of the run, 1 the authors'."""
SCHEDULE_LINEAR, SCHEDULE_AUTHORS = 0, 1

APPROX_TOP = np.uint32(0x7F800000)  # the bit pattern of float32 +inf: above every finite score's


STATE_SIZE = 3  # a kind's scalars: occupancy, the last token's use-count threshold and score pattern threshold


@njit(**NJIT)
def _count_greater(q, a):
    """How many ``q > a`` (q: int16, a: int16). Counts in uint16 per chunk of 32768, so the sweep runs
    16 lanes wide."""
    n = q.shape[0]
    s = 0
    for c0 in range(0, n, 32768):
        qc = q[c0 : min(c0 + 32768, n)]
        acc = np.uint16(0)
        for u in range(qc.shape[0]):
            acc = np.uint16(acc + np.uint16(qc[u] > a))
        s += acc
    return s


@njit(**NJIT)
def _weighted_patterns(row, g, in_cache, q, fbuf, exact):
    """``q`` (int16[U]) = each unit's score float32(value * (1 if cached else g)) rounded up onto the
    float16 grid: the least float16 pattern whose value is >= the score (a cached unit's own
    pattern). A unit then scores above value(a) exactly when ``q > a``, for every pattern a.

    Scores below 2^-14 (float16's subnormal range) are rounded exactly only when ``exact``; otherwise
    they get some pattern in 0..0x400 that grows with the score, which changes no count ``q > a``
    for a >= 0x400: a search that ends above 0x400 is exact, one that does not is redone with
    ``exact``. ``fbuf`` (uint32[U]) is scratch. Branch-free, vectorised passes; float16 converted
    in hardware where there is a conversion."""
    n = row.shape[0]
    f = fbuf.view(np.float32)
    g = np.float32(g)
    one = np.float32(1.0)
    qu = q.view(np.uint16)
    if HALF_IN_HARDWARE and not exact:
        for u in range(n):
            qu[u] = _f16_ceil(float_bits(half_to_float(row[u]) * (one if in_cache[u] else g)))
        return
    if HALF_IN_HARDWARE:
        for u in range(n):
            f[u] = half_to_float(row[u]) * (one if in_cache[u] else g)
    else:
        _f16_shifted(row, fbuf)
        s1, sg = F16_SCALE, F16_SCALE * g  # value * w rounded once, as above (2^112 w is exact)
        for u in range(n):
            f[u] = f[u] * (s1 if in_cache[u] else sg)
    if not exact:
        for u in range(n):
            qu[u] = _f16_ceil(fbuf[u])
        return
    for u in range(n):
        x = fbuf[u]
        t = (f[u] if f[u] < one else one) * np.float32(2.0**24)  # below 2^-14: s / 2^-24 rounded up
        ti = np.int32(t)  # t < 1024 wherever it is used
        lo = np.uint16(np.int32(ti + np.int32(np.float32(ti) < t)))
        qu[u] = _f16_ceil(x) if x >= np.uint32(113 << 23) else lo


@njit(**NJIT)
def _kth_largest(q, k, hint):
    """The least a in 0..+inf with fewer than k ``q > a`` (the k-th largest q), that count, and the
    count of ``q > a - 1`` (>= k; the difference is how many q equal a). One
    counting pass per probe: from ``hint`` (the previous token's a; thresholds of consecutive tokens
    lie some tens of patterns apart) it gallops to a bracket, then narrows it by interpolating the
    counts linearly (they fall smoothly with a), bisecting instead whenever an interpolated probe did
    not halve the bracket. The answer does not depend on the hint, only the number of passes: about
    6.5 on traces instead of bisection's 15."""
    n = q.shape[0]
    lo, hi = -1, F16_INF  # invariant: count(lo) >= k (count(-1) = n), count(hi) < k (count(+inf) = 0)
    c_lo, c_hi = n, 0
    if 0 <= hint < F16_INF:
        step = 32
        c = _count_greater(q, np.int16(hint))
        if c < k:
            hi, c_hi = hint, c
            while hi - lo > 1:  # gallop down
                a = max(hi - step, lo + 1)
                c = _count_greater(q, np.int16(a))
                if c < k:
                    hi, c_hi = a, c
                    step *= 2
                else:
                    lo, c_lo = a, c
                    break
        else:
            lo, c_lo = hint, c
            while hi - lo > 1:  # gallop up
                a = min(lo + step, hi - 1)
                c = _count_greater(q, np.int16(a))
                if c >= k:
                    lo, c_lo = a, c
                    step *= 2
                else:
                    hi, c_hi = a, c
                    break
    bisect = False
    while hi - lo > 1:
        width = hi - lo
        if bisect:
            a = lo + width // 2
        else:  # where the line through (lo, c_lo), (hi, c_hi) crosses k - 1/2
            a = lo + int((c_lo - k + 0.5) / (c_lo - c_hi) * width + 0.5)
            a = min(max(a, lo + 1), hi - 1)
        c = _count_greater(q, np.int16(a))
        if c < k:
            hi, c_hi = a, c
        else:
            lo, c_lo = a, c
        bisect = not bisect and 2 * (hi - lo) > width
    return hi, c_hi, c_lo


@njit(**NJIT)
def _select_weighted(row, k, g, in_cache, used, keys, cand, hist, wbuf, qbuf, state):
    """Top-k of the scores value * (1 if cached else g) (float32 products; g = 1: plain top-k), ties
    to the lower index, for 0 < k < U.

    Every score is first rounded up onto the float16 grid (``_weighted_patterns``; with g = 1 the
    patterns themselves): int16 keys q with ``score > value(a)`` exactly when ``q > a``. Counting
    passes over q (16 lanes wide) find the least a with fewer than k scores above value(a); the k-th
    largest score then lies in (value(a - 1), value(a)], and the units scoring in that band, those
    with q == a, are few: their exact scores are ranked by ``kth_key``. ``state[2]`` holds the
    previous token's a, where the search starts, and receives this one's; ``qbuf`` is int16[U]
    scratch.
    """
    n = used.shape[0]
    g = np.float32(g)
    if g == np.float32(1.0):
        q = row.view(np.int16)  # patterns of non-negative values are < 0x8000
        a, c_hi, c_lo = _kth_largest(q, k, state[2])
    else:
        q = qbuf[:n]
        _weighted_patterns(row, g, in_cache, q, wbuf, False)
        a, c_hi, c_lo = _kth_largest(q, k, state[2])
        if a <= 0x400:  # the k-th largest score is below 2^-14: round the small ones exactly
            _weighted_patterns(row, g, in_cache, q, wbuf, True)
            a, c_hi, c_lo = _kth_largest(q, k, a)
    state[2] = a
    need = k - c_hi  # >= 1, taken from the band by (score desc, index asc)
    a16 = np.int16(a)
    if need == c_lo - c_hi:  # the whole band is taken: no ranking inside it
        for u in range(n):
            used[u] = q[u] >= a16
        return k
    for u in range(n):  # used = the band, for now
        used[u] = q[u] == a16
    nb = _positions(used, wbuf)
    # exact scores of the band as float32 bit patterns (order like the values); largest -> key 0
    f = keys.view(np.float32)
    top = np.uint32(0)
    for j in range(nb):
        u = wbuf[j]
        f[j] = LUT[row[u]] if in_cache[u] else np.float32(LUT[row[u]] * g)
    for j in range(nb):
        top = max(top, keys[j])
    for j in range(nb):
        keys[j] = top - keys[j]
    mark_smallest(keys, nb, need, 32, used, cand, hist)  # used[:nb] marks the band's chosen ones
    chosen = 0
    for j in range(nb):
        wbuf[chosen] = wbuf[j]
        chosen += used[j]
    for u in range(n):
        used[u] = q[u] > a16
    for j in range(chosen):
        used[wbuf[j]] = True
    return k


@njit(**NJIT)
def gamma_at(gamma, schedule, warmup, seq_len, t):
    """The re-weighting factor of token ``t`` (its index in the run, from 0).

    SCHEDULE_LINEAR: from 1 down to ``gamma`` linearly over the run's first ``warmup`` tokens
    (0: ``gamma`` from the start). SCHEDULE_AUTHORS (Federici et al.'s ``warm_up``):
    gamma_t = 1 - (1 - gamma)(1 - gamma^(p/4)), p = t mod ``seq_len``, the token's index in its
    sequence (windows of ``seq_len`` tokens from the run's start; ``seq_len`` 0: one sequence), so
    the warm-up restarts with every sequence (gamma_0 = 1). Float64, as their Python does."""
    if schedule == SCHEDULE_AUTHORS:
        p = t % seq_len if seq_len > 0 else t
        return 1.0 - (1.0 - gamma) * (1.0 - gamma ** (p / 4.0))
    if warmup > 0 and t < warmup:
        return 1.0 - (1.0 - gamma) * (t / warmup)
    return gamma


@njit(**NJIT)
def _cut(keys, n, r, nbits, cand, hist):
    """The ``r`` smallest of ``keys[:n]`` (ties: lower position first; 0 < r < n) as a cut (v, last):
    position u is among them exactly when ``keys[u] < v`` or (``keys[u] == v`` and u <= last)."""
    v, take = kth_key(keys, n, r - 1, nbits, cand, hist)
    return v, _nth_equal(keys[:n], v, take)


@njit(**NJIT)
def _blended_bits(row, w, stats, out):
    """``out`` (uint32[U]) = the float32 bit patterns of w * stats / (max(stats) + 1e-7) +
    (1 - w) * value / max(value), every operation rounded to float32 (no fused multiply-add),
    clamped to APPROX_TOP (a NaN would otherwise order above every score). A token whose
    values are all 0 scores value / max(value) = 0."""
    n = row.shape[0]
    f = out.view(np.float32)
    smax = stats[0]
    vmax = np.float32(0.0)
    for u in range(n):
        smax = max(smax, stats[u])
        vmax = max(vmax, LUT[row[u]])
    denom = np.float32(np.float32(smax) + np.float32(1e-7))
    w32 = np.float32(w)
    w1 = np.float32(1.0 - w)
    zero = np.float32(0.0)
    for u in range(n):
        a = np.float32(stats[u]) / denom
        v = LUT[row[u]] / vmax if vmax > zero else zero
        f[u] = np.float32(w32 * a) + np.float32(w1 * v)
    for u in range(n):
        out[u] = min(out[u], APPROX_TOP)


@njit(**NJIT)
def _select_approximate(row, k, fixed_n, m, w, stats, in_cache, used, keys, cand, hist, wbuf):
    """Approximate cache-aware selection of ``k`` units (0 < k < U) from the top ``m`` > k, as
    Federici et al.'s ``cache_aware_reweighting_approximate``: units are taken, until there are k,
    group by group: (1) the ``fixed_n`` largest raw values; (2) the top-k units in the cache, then
    the other top-m ones in the cache; (3) the top-k units not in the cache; by score inside a group
    (larger first, ties to the lower index). Top-k, top-m and the order inside a group rank the
    scores b: the raw values when ``w`` = 0; otherwise w * stats / (max(stats) + 1e-7) +
    (1 - w) * value / max(value) in float32 (``_blended_bits``; ``stats``: a per-unit statistic
    of the cache, the use counts), while group (1) always ranks the raw values. Groups (2) are one
    run in b order (every top-k unit precedes the other top-m ones), and (1)-(3) always hold k
    units. fixed_n >= k: the plain top-k. ``wbuf`` (uint32[U]) is scratch."""
    n = used.shape[0]
    for u in range(n):  # raw values, largest -> key 0
        keys[u] = np.uint32(65535) - np.uint32(row[u])
    if fixed_n >= k:
        mark_smallest(keys, n, k, 16, used, cand, hist)
        return k
    mark_smallest(keys, n, fixed_n, 16, used, cand, hist)  # group (1), exempt (none if fixed_n <= 0)
    top = np.uint32(65535)
    nbits = 16
    if w > 0:  # rank the blended scores instead: key = APPROX_TOP - pattern, largest -> smallest
        _blended_bits(row, w, stats, wbuf)
        top = APPROX_TOP
        nbits = 31
        for u in range(n):
            keys[u] = top - wbuf[u]
    vk, lk = _cut(keys, n, k, nbits, cand, hist)
    vm, lm = np.uint32(top + np.uint32(1)), -1  # m >= U: every unit is in the top m
    if m < n:
        vm, lm = _cut(keys, n, m, nbits, cand, hist)
    g2 = np.uint32(top + np.uint32(2))  # group (3) keys start above every group (2) key
    out = np.uint32(0xFFFFFFFF)  # in no group
    for u in range(n):
        q = keys[u]
        in_k = q < vk or (q == vk and u <= lk)
        in_m = q < vm or (q == vm and u <= lm)
        c = in_cache[u]
        if used[u]:
            keys[u] = np.uint32(0)
        elif in_m and c:
            keys[u] = np.uint32(q + np.uint32(1))
        elif in_k and not c:
            keys[u] = np.uint32(g2 + q)
        else:
            keys[u] = out
    mark_smallest(keys, n, k, 32, used, cand, hist)
    return k


@njit(**NJIT)
def select_units(
    row,
    mode,
    k,
    pthr,
    aware,
    gamma_t,
    fixed_n,
    approx_m,
    in_cache,
    used,
    keys,
    cand,
    hist,
    wbuf,
    qbuf,
    state,
    stats=None,
    stats_w=0.0,
):
    """Compute one token's selection for one kind into ``used`` (bool[U], overwritten).

    Args:
        row: uint16[U], the float16 bit patterns of the magnitudes ranking the units (unused for
            MODE_ALL). Magnitudes are >= 0, so their bit patterns order like their values.
        mode: MODE_ALL / MODE_TOPK / MODE_THRESHOLD.
        k: units to select (MODE_TOPK). pthr: MODE_THRESHOLD selects the patterns > pthr (see
            ``f16_pattern_at_most``).
        aware: cache-aware re-weighting (dip-ca): value * (1 if in_cache else gamma_t), in float32.
        fixed_n: the fixed_n largest raw values are exempt from re-weighting (and come first in an
            approximate selection).
        approx_m: if > k, approximate selection (``_select_approximate``): after the fixed ones, the
            cached units among the approx_m best first, then the uncached ones among the k best.
        stats, stats_w: approximate selection ranks w * stats / max(stats) + (1 - w) * value /
            max(value) (``stats``: int32[U] per-unit use counts; w = ``stats_w`` in [0, 1]) instead of
            the values when ``stats`` is given and w > 0.
        keys: uint32[U], cand: int32[U], hist (see kth_key), wbuf: uint32[U], qbuf: int16[U] scratch.
        state: the kind's int64[STATE_SIZE]; ``state[2]`` carries the score threshold from token to
            token (a search hint: the selection does not depend on it).
    Returns:
        m, the number of units selected.
    """
    n = used.shape[0]
    if mode == MODE_ALL:
        used[:] = True
        return n
    if mode == MODE_THRESHOLD:
        m = 0
        for u in range(n):
            used[u] = np.int64(row[u]) > pthr
        for u in range(n):
            m += used[u]
        return m
    if k <= 0 or k >= n:
        used[:] = k > 0
        return n if k > 0 else 0
    if fixed_n <= 0 and (not aware or approx_m <= k):
        return _select_weighted(row, k, gamma_t if aware else 1.0, in_cache, used, keys, cand, hist, wbuf, qbuf, state)
    if aware and approx_m > k:
        if stats is None:  # no statistics: rank the values (``keys`` stands in, never read)
            return _select_approximate(row, k, fixed_n, approx_m, 0.0, keys, in_cache, used, keys, cand, hist, wbuf)
        return _select_approximate(row, k, fixed_n, approx_m, stats_w, stats, in_cache, used, keys, cand, hist, wbuf)
    if aware:
        # score = value * (1 if cached or exempt else gamma) in float32; its bit pattern orders like it
        if fixed_n > 0:
            for u in range(n):
                keys[u] = np.uint32(65535) - np.uint32(row[u])
            mark_smallest(keys, n, fixed_n, 16, used, cand, hist)  # exempt from re-weighting
        else:
            used[:] = False
        # value * weight in one multiply: x * (2^112 w) rounds the exact product x 2^112 w = value * w
        # once, as value * w does (2^112 w is exact in float32)
        _f16_shifted(row, wbuf)
        f = wbuf.view(np.float32)
        s1, sg = F16_SCALE, F16_SCALE * np.float32(gamma_t)
        for u in range(n):
            f[u] = f[u] * (s1 if in_cache[u] | used[u] else sg)
    else:  # a fixed top-n without re-weighting: the plain top-k
        for u in range(n):
            wbuf[u] = np.uint32(row[u])
    bits = wbuf
    lo = bits[0]
    hi = bits[0]
    for u in range(n):
        lo = min(lo, bits[u])
        hi = max(hi, bits[u])
    for u in range(n):  # largest score -> key 0; keys span only the values present
        keys[u] = hi - bits[u]
    mark_smallest(keys, n, k, bit_length(np.int64(hi - lo)), used, cand, hist)
    return k


@njit(**NJIT_REDUCE)
def _mass(hrow, used, has_mass, vbuf, out_kept, out_tot, i):
    """|h|^2 of the selected units and of all units of one token (a reassociating sum: the order of
    additions is the compiler's, fixed for a build). A float16's square is exact in float32."""
    if has_mass and HALF_IN_HARDWARE:  # one pass, converting in hardware
        kept = 0.0
        tot = 0.0
        for u in range(hrow.shape[0]):
            v = half_to_float(hrow[u])
            v2 = np.float64(v * v)
            tot += v2
            kept += v2 if used[u] else 0.0
        out_kept[i] = kept
        out_tot[i] = tot
    elif has_mass:
        _f16_shifted(hrow, vbuf)
        f = vbuf.view(np.float32)
        kept = 0.0
        tot = 0.0
        for u in range(hrow.shape[0]):
            v = f[u] * F16_SCALE
            v2 = np.float64(v * v)
            tot += v2
            kept += v2 if used[u] else 0.0
        out_kept[i] = kept
        out_tot[i] = tot


@njit(**NJIT)
def _selection_scratch(n):
    """The arrays ``select_units`` works in, for U = n units: (used, keys, cand, hist, wbuf, qbuf,
    state, dummy), ``dummy`` standing in for the scores of MODE_ALL."""
    return (
        np.zeros(n, np.bool_),
        np.empty(n, np.uint32),
        np.empty(n, np.int32),
        np.empty(HIST_SIZE, np.int32),
        np.empty(n, np.uint32),
        np.empty(n, np.int16),
        np.zeros(STATE_SIZE, np.int64),
        np.empty(n, np.uint16),
    )
