"""lfuda (Arlitt et al., 2000, "Evaluating content management techniques for Web proxy caches"): LFU with
dynamic aging. A unit's key is K = F + L, F its uses since it entered the cache and L the cache's age,
the key of the last unit evicted; the unit of lowest key is evicted, so units popular long ago age out.

Ties: among equal keys the unit whose key was set longest ago (least recently used or inserted) goes
first. Tokens: a token's hits update their keys in ascending unit order, then its misses enter in
ascending unit order; a victim is the lowest-key unit the current token does not use. libCacheSim's
``LFUDA.c`` differs: on a hit it adds L to the key instead of setting it to F + L (so hits before the
first eviction do not count), and on this engine's test streams it crashes at most capacities.

The cached units are in a 4-ary min-heap ordered by (key, stamp), the stamp being a clock read each time
a key is set (so the order is total and the heap's shape never decides a victim). Each heap slot holds
its unit's key and stamp, so comparisons read consecutive slots rather than per-unit arrays, and the
slots past the last unit hold the key FAR, so a node's missing children compare as larger. A pinned
unit on top when a victim is wanted is taken off and set aside with its key and stamp; the first hook of
a later token pushes it back (a token's hits come before its evictions, so no hit finds a unit aside).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from simcore.config import NJIT_HOOK

NEEDS_FUTURE = False
D = 4  # children per heap node: slots D i + 1 .. D i + D (a shallower heap than a binary one)
FAR = np.iinfo(np.int64).max  # the key of the slots past the last unit


class State(NamedTuple):
    uses: np.ndarray  # int64[U]: F, uses since the unit entered the cache
    heap: np.ndarray  # int32[U + D]: the units, a min-heap by (hkey, hstamp)
    hkey: np.ndarray  # int64[U + D]: the key K of heap[i] (FAR from the heap's size on)
    hstamp: np.ndarray  # int64[U + D]: when that key was set (the tie rule)
    pos: np.ndarray  # int32[U]: each unit's slot in heap (-1: not in it)
    aside: np.ndarray  # int32[U]: pinned units taken off the heap's top by the current token's evictions
    aside_key: np.ndarray  # int64[U]: their keys
    aside_stamp: np.ndarray  # int64[U]: their stamps
    scalars: np.ndarray  # int64[5]: heap size, age L, clock (stamps), units aside, their token


N, AGE, CLOCK, ASIDE, ASIDE_T = 0, 1, 2, 3, 4  # slots of ``scalars``


def init(n_units: int, capacity: int) -> State:
    return State(
        np.zeros(n_units, np.int64),
        np.zeros(n_units + D, np.int32),
        np.full(n_units + D, FAR, np.int64),
        np.zeros(n_units + D, np.int64),
        np.full(n_units, -1, np.int32),
        np.zeros(n_units, np.int32),
        np.zeros(n_units, np.int64),
        np.zeros(n_units, np.int64),
        np.array([0, 0, 0, 0, -1], np.int64),
    )


@njit(**NJIT_HOOK)
def _before(k, st, k2, st2):
    """(k, st) orders before (k2, st2) (branch-free)."""
    return (k < k2) | ((k == k2) & (st < st2))


@njit(**NJIT_HOOK)
def _put(s, i, u, k, st):
    s.heap[i] = u
    s.hkey[i] = k
    s.hstamp[i] = st
    s.pos[u] = i


@njit(**NJIT_HOOK)
def _up(s, i, u, k, st):
    """Unit u of key k and stamp st into the free slot i, moving it up past the larger units above."""
    hk, hs = s.hkey, s.hstamp
    while i > 0:
        p = (i - 1) // D
        if not _before(k, st, hk[p], hs[p]):
            break
        _put(s, i, s.heap[p], hk[p], hs[p])
        i = p
    _put(s, i, u, k, st)


@njit(**NJIT_HOOK)
def _down(s, i, u, k, st):
    """Unit u of key k and stamp st into the free slot i, moving it down past the smaller units below."""
    n = s.scalars[N]
    hk, hs = s.hkey, s.hstamp
    while True:
        c = D * i + 1
        if c >= n:
            break
        a = c + _before(hk[c + 1], hs[c + 1], hk[c], hs[c])  # the smallest of the D = 4 children
        b = c + 2 + _before(hk[c + 3], hs[c + 3], hk[c + 2], hs[c + 2])
        c = b if _before(hk[b], hs[b], hk[a], hs[a]) else a
        if not _before(hk[c], hs[c], k, st):
            break
        _put(s, i, s.heap[c], hk[c], hs[c])
        i = c
    _put(s, i, u, k, st)


@njit(**NJIT_HOOK)
def _push(s, u, k, st):
    i = s.scalars[N]
    s.scalars[N] = i + 1
    _up(s, i, u, k, st)


@njit(**NJIT_HOOK)
def _drop_top(s):
    """Take the top unit off the heap."""
    n = s.scalars[N] - 1
    s.scalars[N] = n
    s.pos[s.heap[0]] = -1
    k, st = s.hkey[n], s.hstamp[n]
    s.hkey[n] = FAR
    if n > 0:
        _down(s, 0, s.heap[n], k, st)


@njit(**NJIT_HOOK)
def _settle(s, t):
    """Put back the pinned units an earlier token's evictions took off the heap."""
    if s.scalars[ASIDE] > 0 and s.scalars[ASIDE_T] != t:
        for j in range(s.scalars[ASIDE]):
            _push(s, s.aside[j], s.aside_key[j], s.aside_stamp[j])
        s.scalars[ASIDE] = 0


@njit(**NJIT_HOOK)
def _stamp(s):
    c = s.scalars[CLOCK]
    s.scalars[CLOCK] = c + 1
    return c


@njit(**NJIT_HOOK)
def hit(s, u, t):
    _settle(s, t)
    f = s.uses[u] + 1
    s.uses[u] = f
    k = f + s.scalars[AGE]
    i = s.pos[u]
    if k >= s.hkey[i]:  # with its newer stamp, it orders after where it was: down
        _down(s, i, u, k, _stamp(s))
    else:  # L fell since (a unit set aside, of a lower key, was evicted after others): up
        _up(s, i, u, k, _stamp(s))


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    _settle(s, t)
    s.scalars[ASIDE_T] = t
    v = s.heap[0]
    while pinned[v]:
        j = s.scalars[ASIDE]
        s.aside[j] = v
        s.aside_key[j] = s.hkey[0]
        s.aside_stamp[j] = s.hstamp[0]
        s.scalars[ASIDE] = j + 1
        _drop_top(s)
        v = s.heap[0]
    s.scalars[AGE] = s.hkey[0]
    _drop_top(s)
    return v


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    _settle(s, t)
    s.uses[u] = 1
    _push(s, u, 1 + s.scalars[AGE], _stamp(s))
