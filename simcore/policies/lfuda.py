"""lfuda (Arlitt et al., 2000, "Evaluating content management techniques for Web proxy caches"): LFU with
dynamic aging. A unit's key is K = F + L, F its uses since it entered the cache and L the cache's age,
the key of the last unit evicted; the unit of lowest key is evicted, so units popular long ago age out.

Ties: among equal keys the unit whose key was set longest ago (least recently used or inserted) goes
first. Tokens: a token's hits update their keys in ascending unit order, then its misses enter in
ascending unit order; a victim is the lowest-key unit the current token does not use. libCacheSim's
``LFUDA.c`` differs: on a hit it adds L to the key instead of setting it to F + L (so hits before the
first eviction do not count), and on this engine's test streams it crashes at most capacities.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from simcore.config import NJIT_HOOK

NEEDS_FUTURE = False


class State(NamedTuple):
    uses: np.ndarray  # int64[U]: F, uses since the unit entered the cache
    key: np.ndarray  # int64[U]: K = F + L when last set
    stamp: np.ndarray  # int64[U]: when K was last set (the tie rule)
    heap: np.ndarray  # int32[U]: binary min-heap of the cached units by (key, stamp)
    pos: np.ndarray  # int32[U]: each unit's index in heap (-1: not in it)
    aside: np.ndarray  # int32[U]: pinned units taken off the heap's top by the current token's evictions
    scalars: np.ndarray  # int64[5]: heap size, age L, clock (stamps), units aside, their token


N, AGE, CLOCK, ASIDE, ASIDE_T = 0, 1, 2, 3, 4  # slots of ``scalars``


def init(n_units: int, capacity: int) -> State:
    return State(
        np.zeros(n_units, np.int64),
        np.zeros(n_units, np.int64),
        np.zeros(n_units, np.int64),
        np.zeros(n_units, np.int32),
        np.full(n_units, -1, np.int32),
        np.zeros(n_units, np.int32),
        np.array([0, 0, 0, 0, -1], np.int64),
    )


@njit(**NJIT_HOOK)
def _less(s, a, b):
    return s.key[a] < s.key[b] or (s.key[a] == s.key[b] and s.stamp[a] < s.stamp[b])


@njit(**NJIT_HOOK)
def _place(s, i, u):
    s.heap[i] = u
    s.pos[u] = i


@njit(**NJIT_HOOK)
def _up(s, i):
    u = s.heap[i]
    while i > 0:
        p = (i - 1) >> 1
        if not _less(s, u, s.heap[p]):
            break
        _place(s, i, s.heap[p])
        i = p
    _place(s, i, u)


@njit(**NJIT_HOOK)
def _down(s, i):
    n = s.scalars[N]
    u = s.heap[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _less(s, s.heap[c + 1], s.heap[c]):
            c += 1
        if not _less(s, s.heap[c], u):
            break
        _place(s, i, s.heap[c])
        i = c
    _place(s, i, u)


@njit(**NJIT_HOOK)
def _push(s, u):
    i = s.scalars[N]
    s.scalars[N] += 1
    _place(s, i, u)
    _up(s, i)


@njit(**NJIT_HOOK)
def _pop(s):
    u = s.heap[0]
    s.scalars[N] -= 1
    n = s.scalars[N]
    s.pos[u] = -1
    if n > 0:
        _place(s, 0, s.heap[n])
        _down(s, 0)
    return u


@njit(**NJIT_HOOK)
def _settle(s, t):
    """Put back the pinned units an earlier token's evictions took off the heap."""
    if s.scalars[ASIDE] > 0 and s.scalars[ASIDE_T] != t:
        for i in range(s.scalars[ASIDE]):
            _push(s, s.aside[i])
        s.scalars[ASIDE] = 0


@njit(**NJIT_HOOK)
def _set_key(s, u):
    s.key[u] = s.uses[u] + s.scalars[AGE]
    s.stamp[u] = s.scalars[CLOCK]
    s.scalars[CLOCK] += 1


@njit(**NJIT_HOOK)
def hit(s, u, t):
    _settle(s, t)
    s.uses[u] += 1
    _set_key(s, u)
    i = s.pos[u]
    if i >= 0:  # (a unit set aside is re-pushed with its new key)
        _up(s, i)
        _down(s, s.pos[u])


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    _settle(s, t)
    s.scalars[ASIDE_T] = t
    while pinned[s.heap[0]]:
        s.aside[s.scalars[ASIDE]] = _pop(s)
        s.scalars[ASIDE] += 1
    v = _pop(s)
    s.scalars[AGE] = s.key[v]
    return v


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    _settle(s, t)
    s.uses[u] = 1
    _set_key(s, u)
    _push(s, u)
