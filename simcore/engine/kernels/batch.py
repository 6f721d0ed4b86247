"""Batch drivers: a batch of tokens of one (layer, kind) selected and replayed with the cache in the loop
(``replay_batch``), or selected into per-chunk bitmaps for a later replay (``mask_bits_batch``,
``masks_of_chunk``, ``first_uses``, ``next_use_times``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from simcore.config import NJIT
from simcore.engine.kernels.f16 import f16_pattern_at_most, trailing_zeros64
from simcore.engine.kernels.radix import _equal_in
from simcore.engine.kernels.reads import mark_missed
from simcore.engine.kernels.score import cache_step
from simcore.engine.kernels.select import MODE_ALL, _mass, _selection_scratch, gamma_at, select_units


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
    gamma_schedule,
    seq_len,
    fixed_n,
    approx_m,
    approx_gamma,
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
    pos,
    miss_bits,
):
    """Replay a batch of tokens of one (layer, kind) with the cache in the loop (any policy without
    future knowledge; required for cache-aware masks).

    Args:
        scores: uint16[T_b, U] float16 bit patterns of the magnitudes ranking the units (any
            (T_b, *) for MODE_ALL).
        hmag: uint16[T_b, U] |h| bit patterns for the kept-mass proxy when ``has_mass``.
        mode, k, thr: the mask (MODE_THRESHOLD keeps the values > thr).
        gamma, gamma_warmup, gamma_schedule, seq_len: the re-weighting factor and its warm-up
            (``select.gamma_at``); t0: global index of the batch's first token.
        fixed_n, approx_m, approx_gamma: see ``select_units`` (approx_gamma: its ``stats_w``, the
            statistics being the use counts ``count``).
        out_used, out_hits: int32[T_b] selection size and hits per token; out_kept, out_tot: float64[T_b].
        out_mask: bool[T_b, U] receives the selections (the masks ``simcore eval`` applies), or a (0, 0)
            array when they are not wanted.
        pos, miss_bits: the Flash read model's inputs (``simcore.engine.flash``): unit positions
            (int32[U], empty for the stored order) and uint64[T_b, W] receiving each token's missed units,
            or a (0, 0) array when Flash reads are not modelled.
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
        g = gamma_at(gamma, gamma_schedule, gamma_warmup, seq_len, t)
        row = scores[i] if mode != MODE_ALL else dummy
        m = select_units(
            row,
            mode,
            k,
            pthr,
            aware,
            g,
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
            count,
            approx_gamma,
        )
        out_used[i] = m
        if miss_bits.shape[0] > 0:
            mark_missed(used, in_cache, pos, miss_bits, i)
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
