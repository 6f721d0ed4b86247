"""Numba kernels of the replay engine. They see only plain arrays (STYLE.md #3).

Vocabulary: ``U`` units of one kind in one layer (d input channels or d_int neurons); a token's
*selection* is the set of units its mask uses, the boolean ``used[U]``. Every per-token pass is a
branch-free sweep over such U-long arrays, which the compiler vectorises; the operands of each
pass share one integer width (a wider one halves or stops the vectorisation), and a loop over part
of an array runs over a slice, from 0: from a signed start other than 0, Numba's negative-index
wrap-around stays in the loop, and the code it caches on disk then runs it scalar, up to 17x slower
(measured; the same loop compiled afresh was fast, which hides it). Cache state of one
(layer, kind): ``in_cache[U]`` (bool), ``count[U]``, ``last[U]``, ``next_use[U]`` (int32: uses so
far, last-use token, next-use token) and ``state`` (int64[STATE_SIZE]: occupancy, and two search
hints: the last token's use-count threshold and its score threshold). Order rules, everywhere: top-k
takes the largest scores, ties to the lower unit index; eviction drops the lowest policy priority,
ties to the lower unit index first.

Per token (DESIGN.md, "Caches and eviction"): select; hits = selected units in cache; update the
policy state of the selected units; if the selection fits, evict the lowest-priority cached units
that this token does not use until the misses fit, and insert all misses; if it does not fit,
the cache keeps the ``cap`` selected units of highest priority and the rest streams past it.
"""

from __future__ import annotations

import os
import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from simcore.config import NJIT, NJIT_REDUCE

MODE_ALL, MODE_TOPK, MODE_THRESHOLD = 0, 1, 2
NEVER = np.int32(2**31 - 1)  # next-use time of a unit not yet seen (never compared: it is not cached)
LUT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
"""float16 bit pattern -> float32 value (NaN patterns map to NaN; magnitudes never hold them)."""
F16_INF = 0x7C00  # the float16 pattern of +inf; larger ones are NaN
F16_SCALE = np.float32(2.0**112)  # float16 pattern << 13, read as float32, is the value / 2^112


def _half_in_hardware() -> bool:
    """Whether the compiled code converts float16 to float32 in hardware (x86 F16C, which every x86
    CPU since 2012 has; aarch64 always). Without it LLVM would call a runtime helper that Numba's
    JIT may not link, so the kernels keep to integer arithmetic then."""
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        return False  # a target chosen by hand (portable caches): assume the lowest common one
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    if machine in ("x86_64", "amd64"):
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("f16c", False))
    return False


HALF_IN_HARDWARE = _half_in_hardware()


@intrinsic
def half_to_float(typingctx, bits):
    """float32 value of a float16 bit pattern (uint16): one ``fpext``, which LLVM vectorises to
    ``vcvtph2ps`` (F16C) or ``fcvtl`` (aarch64). Use only where HALF_IN_HARDWARE."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def float_bits(typingctx, x):
    """The IEEE bits of a float32 as uint32 (a bitcast: no instruction of its own)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def trailing_zeros64(typingctx, x):
    """The number of trailing zero bits of a uint64 (64 for 0): one ``tzcnt`` (x86) or ``rbit`` +
    ``clz`` (aarch64)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return types.uint64(x), codegen


FIRST_DIGIT_BITS = 11
HIST_SIZE = 1 << FIRST_DIGIT_BITS
STATE_SIZE = 3  # a kind's scalars: occupancy, the last token's use-count threshold and score pattern threshold
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


@njit(**NJIT)
def _f16_shifted(row, bits):
    """``bits`` (uint32[U]) = the float16 patterns ``row`` (uint16[U], non-negative) moved into float32
    position: read as float32, the value times 2^-112 (exact, subnormals included); +inf stays +inf."""
    inf = np.uint32(0x7F800000)
    for u in range(row.shape[0]):
        x = np.uint32(row[u])
        bits[u] = (x << np.uint32(13)) if x < np.uint32(F16_INF) else inf


@njit(**NJIT)
def f16_values(row, bits):
    """The float32 values of float16 bit patterns ``row`` (uint16[U], non-negative) into ``bits``
    (uint32[U]); returns them as ``bits.view(np.float32)``. Exact: the shifted pattern is the value
    times 2^-112, and one multiply by a power of two restores it. Vectorised, no table lookups."""
    _f16_shifted(row, bits)
    f = bits.view(np.float32)
    for u in range(row.shape[0]):
        f[u] = f[u] * F16_SCALE
    return f


@njit(**NJIT)
def f16_pattern_at_most(thr):
    """The largest non-negative float16 bit pattern (+inf included) whose value is <= ``thr`` (-1 if
    none): ``value > thr`` is then ``pattern > f16_pattern_at_most(thr)``, an integer compare."""
    return _weighted_bound(thr, 1.0)  # value * 1.0 is exact


@njit(**NJIT)
def _weighted_bound(x, g):
    """The largest float16 pattern p (0..+inf) with float32(value(p) * g) <= x; -1 if none."""
    if not np.float32(LUT[0] * g) <= x:
        return -1
    lo, hi = 0, F16_INF
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.float32(LUT[mid] * g) <= x:
            lo = mid
        else:
            hi = mid - 1
    return lo


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
def _f16_ceil(x):
    """The least float16 pattern (up to +inf) whose value is >= the float32 of bits ``x`` (>= 0), for
    values from 2^-14 (float16's least normal) up; below, some pattern in 0..0x400 that grows with
    the value (see ``_weighted_patterns``). The float16 exponent and mantissa are the float32 ones
    shifted; any dropped bit set rounds up (a carry into the exponent is right). 32-bit operands
    only, so the loops calling it vectorise."""
    x = max(x, np.uint32(112 << 23))
    c = np.uint32(np.uint32(x >> np.uint32(13)) - np.uint32(112 << 10))
    c = np.uint32(c + np.uint32((x & np.uint32(0x1FFF)) != np.uint32(0)))
    return np.uint16(min(c, np.uint32(F16_INF)))


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
def select_units(
    row, mode, k, pthr, aware, gamma_t, fixed_n, approx_m, in_cache, used, keys, cand, hist, wbuf, qbuf, state
):
    """Compute one token's selection for one kind into ``used`` (bool[U], overwritten).

    Args:
        row: uint16[U], the float16 bit patterns of the magnitudes ranking the units (unused for
            MODE_ALL). Magnitudes are >= 0, so their bit patterns order like their values.
        mode: MODE_ALL / MODE_TOPK / MODE_THRESHOLD.
        k: units to select (MODE_TOPK). pthr: MODE_THRESHOLD selects the patterns > pthr (see
            ``f16_pattern_at_most``).
        aware: cache-aware re-weighting (dip-ca): value * (1 if in_cache else gamma_t), in float32.
        fixed_n: the fixed_n largest raw values are exempt from re-weighting.
        approx_m: if > k, approximate selection: among the approx_m largest raw values take the cached
            units first (by value), then the uncached ones (by value).
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
    if aware and approx_m <= k:
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
        bits = wbuf
    else:
        for u in range(n):
            wbuf[u] = np.uint32(row[u])
        bits = wbuf
        if aware:  # approximate: the top approx_m by value, cached ones first, then uncached ones
            for u in range(n):
                keys[u] = np.uint32(65535) - np.uint32(row[u])
            mark_smallest(keys, n, approx_m, 16, used, cand, hist)  # the top-m candidates
            for u in range(n):
                wbuf[u] = (
                    (wbuf[u] + np.uint32(1) + (np.uint32(in_cache[u]) << np.uint32(16))) if used[u] else np.uint32(0)
                )
    lo = bits[0]
    hi = bits[0]
    for u in range(n):
        lo = min(lo, bits[u])
        hi = max(hi, bits[u])
    for u in range(n):  # largest score -> key 0; keys span only the values present
        keys[u] = hi - bits[u]
    mark_smallest(keys, n, k, bit_length(np.int64(hi - lo)), used, cand, hist)
    return k


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


@njit(**NJIT)
def replay_batch(
    scores,
    hmag,
    has_mass,
    mode,
    k,
    thr,
    aware,
    gamma,
    gamma_warmup,
    fixed_n,
    approx_m,
    cap,
    t0,
    in_cache,
    count,
    last,
    next_use,
    state,
    pw,
    out_used,
    out_hits,
    out_kept,
    out_tot,
    out_mask,
):
    """Replay a batch of tokens of one (layer, kind) with the cache in the loop (any policy without
    future knowledge; required for cache-aware masks).

    Args:
        scores: uint16[T_b, U] float16 bit patterns of the magnitudes ranking the units (any
            (T_b, *) for MODE_ALL).
        hmag: uint16[T_b, U] |h| bit patterns for the kept-mass proxy when ``has_mass``.
        mode, k, thr: the mask (MODE_THRESHOLD keeps the values > thr).
        gamma, gamma_warmup: re-weighting factor and the number of tokens over which it falls
            linearly from 1 to gamma (0 = no warm-up); t0: global index of the batch's first token.
        out_used, out_hits: int32[T_b] selection size and hits per token; out_kept, out_tot: float64[T_b].
        out_mask: bool[T_b, U] receives the selections (the masks ``simcore eval`` applies), or a (0, 0)
            array when they are not wanted.
    """
    T = scores.shape[0]
    n = in_cache.shape[0]
    keep_masks = out_mask.shape[0] > 0
    used, keys, cand, hist, wbuf, qbuf, _, dummy = _selection_scratch(n)  # state: the kind's own
    ckeys = np.empty(n, pw.dtype)
    cmark = np.zeros(n, np.bool_)
    pthr = f16_pattern_at_most(thr)
    for i in range(T):
        t = t0 + i
        g = gamma
        if gamma_warmup > 0 and t < gamma_warmup:
            g = 1.0 - (1.0 - gamma) * (t / gamma_warmup)
        row = scores[i] if mode != MODE_ALL else dummy
        m = select_units(
            row, mode, k, pthr, aware, g, fixed_n, approx_m, in_cache, used, keys, cand, hist, wbuf, qbuf, state
        )
        out_used[i] = m
        out_hits[i] = cache_step(
            used, m, t, cap, in_cache, count, last, next_use, state, pw, ckeys, cmark, cand, hist, qbuf
        )
        _mass(hmag[i], used, has_mass, wbuf, out_kept, out_tot, i)
        if keep_masks:
            out_mask[i, :] = used


@njit(**NJIT)
def mask_bits_batch(scores, hmag, has_mass, mode, k, thr, n_units, j0, bits, out_used, out_kept, out_tot, out_mask):
    """Selections of a batch of tokens for masks that do not depend on the cache, as bits of one chunk's
    unit-major bitmap: token j of the chunk (j = j0 + i for the batch's token i) sets bit j % 64 of
    ``bits[u, j // 64]`` for every unit u it uses and clears it for the others.

    Args:
        bits: uint64[U, W], the chunk's bitmap (j0 + T_b <= 64 W).
        out_used: int32[T_b] selection sizes; out_kept, out_tot: float64[T_b] (as ``replay_batch``).
        out_mask: bool[T_b, U] receives the selections, or a (0, 0) array when they are not wanted.
    Returns:
        0, or -1 if a selection holds more units than its size says (a top-k of NaN magnitudes).
    """
    T = scores.shape[0]
    used, keys, cand, hist, wbuf, qbuf, state, dummy = _selection_scratch(n_units)
    in_cache = np.zeros(n_units, np.bool_)  # the masks do not look at it
    word = np.empty(n_units, np.uint64)  # the bitmap's current column, held contiguous
    keep_masks = out_mask.shape[0] > 0
    pthr = f16_pattern_at_most(thr)
    one = np.uint64(1)
    w_cur = -1
    for i in range(T):
        row = scores[i] if mode != MODE_ALL else dummy
        m = select_units(row, mode, k, pthr, False, 1.0, 0, 0, in_cache, used, keys, cand, hist, wbuf, qbuf, state)
        out_used[i] = m
        _mass(hmag[i], used, has_mass, wbuf, out_kept, out_tot, i)
        if _equal_in(used, True) != m:
            return -1
        j = j0 + i
        w = j >> 6
        if w != w_cur:  # one strided pass per 64 tokens; the per-token pass below is contiguous
            if w_cur >= 0:
                bits[:, w_cur] = word
            word[:] = bits[:, w]
            w_cur = w
        b = np.uint64(j & 63)
        clear = ~(one << b)
        for u in range(n_units):
            word[u] = (word[u] & clear) | (np.uint64(used[u]) << b)
        if keep_masks:
            out_mask[i, :] = used
    if w_cur >= 0:
        bits[:, w_cur] = word
    return 0


@njit(**NJIT)
def first_uses(bits, c0, after, first):
    """One chunk of the backward pass over unit-major bitmaps (the chunks taken last to first).

    ``bits``: uint64[U, W], the chunk starting at token ``c0``. On entry ``first[u]`` (int64[U]) is unit
    u's first use at or after the chunk's end (T, the trace's end, if none); it is copied to
    ``after`` (int64[U]) and then becomes u's first use at or after ``c0``."""
    n, W = bits.shape
    for u in range(n):
        after[u] = first[u]
    for u in range(n):
        row = bits[u]
        for w in range(W):
            x = row[w]
            if x != 0:
                first[u] = c0 + 64 * w + np.int64(trailing_zeros64(x))
                break


@njit(**NJIT)
def transpose64(a):
    """Transpose a 64 x 64 bit matrix in place: bit j of ``a[i]`` (uint64[64]) moves to bit i of
    ``a[j]`` (bit 0 the least significant). Six rounds of 32 masked swaps (Hacker's Delight, 7-3)."""
    j = 32
    m = np.uint64(0x00000000FFFFFFFF)
    while j != 0:
        s = np.uint64(j)
        k = 0
        while k < 64:
            t = ((a[k] >> s) ^ a[k + j]) & m
            a[k] ^= t << s
            a[k + j] ^= t
            k = (k + j + 1) & ~j
        j >>= 1
        m ^= m << np.uint64(j)


@njit(**NJIT)
def masks_of_chunk(bits, after, c0, ptr, idx, nxt, by_token):
    """A chunk's selections as CSR with next-use times, from its unit-major bitmap.

    Args:
        bits: uint64[U, W], the chunk's bitmap (bit j % 64 of ``bits[u, j // 64]``: token c0 + j uses u).
        after: int64[U], each unit's first use at or after the chunk's end (T if none; ``first_uses``).
        ptr: int64[C + 1], the CSR offsets of the chunk's C <= 64 W tokens (cumulative selection sizes).
        by_token: uint64[C, ceil(U / 64)] scratch: the chunk's bitmap token-major.
    Writes ``idx[ptr[j]:ptr[j + 1]]`` (int32), the units of token c0 + j in ascending order, and ``nxt``
    (int32, one per access) the next token using each access's unit, as ``next_use_times`` gives it
    for the whole trace. The bitmap is turned token-major by 64 x 64 bit transposes, so each token's
    units are read off its own words in order and written sequentially; an access's next use is the
    next set bit of its unit's row, almost always in the same word.
    """
    n, W = bits.shape
    C = ptr.shape[0] - 1
    nb = by_token.shape[1]
    blk = np.empty(64, np.uint64)
    one = np.uint64(1)
    for ub in range(nb):
        m = min(64, n - 64 * ub)
        for w in range(W):
            for i in range(m):
                blk[i] = bits[64 * ub + i, w]
            blk[m:] = 0
            transpose64(blk)
            for j in range(min(64, C - 64 * w)):
                by_token[64 * w + j, ub] = blk[j]
    for j in range(C):
        s = ptr[j]
        jw = j >> 6
        jb = np.uint64(j & 63)
        for ub in range(nb):
            x = by_token[j, ub]
            while x != 0:
                u = 64 * ub + np.int64(trailing_zeros64(x))
                idx[s] = np.int32(u)
                later = (bits[u, jw] >> jb) >> one  # the row's bits after token c0 + j, in this word
                if later != 0:
                    nu = c0 + j + 1 + np.int64(trailing_zeros64(later))
                else:
                    nu = after[u]
                    for w in range(jw + 1, W):
                        if bits[u, w] != 0:
                            nu = c0 + 64 * w + np.int64(trailing_zeros64(bits[u, w]))
                            break
                nxt[s] = np.int32(nu)
                s += 1
                x &= x - one


@njit(**NJIT)
def next_use_times(idx, ptr, n_units):
    """For every access ``idx[ptr[t]:ptr[t+1]]`` of token t, the next token that uses the same unit, or
    T (the end of the trace) if none: one backward pass. Returns int32[len(idx)]."""
    T = ptr.shape[0] - 1
    nxt = np.empty(idx.shape[0], np.int32)
    seen = np.full(n_units, T, np.int32)
    for t in range(T - 1, -1, -1):
        it, nt = idx[ptr[t] : ptr[t + 1]], nxt[ptr[t] : ptr[t + 1]]  # loops from 0 (module docstring)
        tt = np.int32(t)
        for a in range(it.shape[0]):
            u = it[a]
            nt[a] = seen[u]
            seen[u] = tt
    return nxt


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
