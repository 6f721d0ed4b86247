"""arc (Megiddo and Modha, FAST'03, "ARC: a self-tuning, low overhead replacement cache"): two LRU lists,
T1 (units used once since they entered) and T2 (used again), with ghost lists B1 and B2 of the units
they evicted; a miss found in B1 (B2) moves the target size p of T1 up (down) and enters T2
(libCacheSim ``ARC.c``: its case IV trims the ghosts only when an eviction is needed, and ties of the
REPLACE rule go to T1 when |T1| = p and the miss was found in B2).

Ties and tokens: a token's misses enter in ascending unit order; victims are the least recently used
unit of the chosen list that the current token does not use, or of the other list when every unit of
the chosen one is in use.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from simcore.config import NJIT_HOOK
from simcore.engine.lists import Queues, oldest_unpinned, push_head, queues, to_head, unlink

NEEDS_FUTURE = False
T1, T2, B1, B2, NOWHERE = 0, 1, 2, 3, -1
GHOST = B1 - T1  # the ghost list of list q is q + GHOST (B2 - T2 too)


class State(NamedTuple):
    q: Queues
    where: np.ndarray  # int8[U]: T1, T2, B1, B2 or NOWHERE
    p: np.ndarray  # float64[1]: target size of T1
    cap: np.ndarray  # int64[1]: the cache's capacity
    ghost: np.ndarray  # int8[1]: where the unit being inserted was found (B1, B2 or NOWHERE)


def init(n_units: int, capacity: int) -> State:
    return State(
        queues(n_units, 4),
        np.full(n_units, NOWHERE, np.int8),
        np.zeros(1, np.float64),
        np.full(1, capacity, np.int64),
        np.full(1, NOWHERE, np.int8),
    )


@njit(**NJIT_HOOK)
def hit(s, u, t):
    if s.where[u] == T1:
        unlink(s.q, T1, u)
        push_head(s.q, T2, u)
        s.where[u] = T2
    else:
        to_head(s.q, T2, u)


@njit(**NJIT_HOOK)
def miss(s, u, t):
    w = s.where[u]
    s.ghost[0] = NOWHERE
    if w < B1:  # not a ghost (a missed unit is in neither T1 nor T2)
        return
    # found in B1: p += max(|B2| / |B1|, 1), at most C; in B2: p -= max(|B1| / |B2|, 1), at least 0
    other, this = s.q.size[B1 + B2 - w], s.q.size[w]
    delta = other / this if other > this else 1.0  # no division in the common case (the same value)
    s.p[0] = min(max(s.p[0] + (delta if w == B1 else -delta), 0.0), float(s.cap[0]))
    unlink(s.q, w, u)
    s.where[u] = NOWHERE
    s.ghost[0] = w


@njit(**NJIT_HOOK)
def _drop_oldest(s, q):
    g = np.uint32(s.q.tail[q])
    unlink(s.q, q, g)
    s.where[g] = NOWHERE


@njit(**NJIT_HOOK)
def _demote(s, q, ghost, t, pinned):
    """Evict the least recently used unpinned unit of list q into the ghost list (if ghost >= 0)."""
    v = s.q.tail[q]
    if v < 0 or pinned[np.uint32(v)]:  # the oldest unit is in use (never on one-unit tokens): walk on
        v = oldest_unpinned(s.q, q, pinned, t)
    if v < 0:
        return v
    unlink(s.q, q, v)
    if ghost >= 0:
        push_head(s.q, ghost, v)
    s.where[np.uint32(v)] = ghost
    return v


@njit(**NJIT_HOOK)
def _replace(s, t, pinned):
    """ARC's REPLACE: from T1 if |T1| > p (or = p after a hit in B2), else from T2; each list's victim
    goes to its ghost list (T1 -> B1, T2 -> B2)."""
    t1, t2 = s.q.size[T1], s.q.size[T2]
    p = s.p[0]
    q = T1 if (t1 > 0 and (t1 > p or (t1 == p and s.ghost[0] == B2))) or t2 == 0 else T2
    v = _demote(s, q, q + GHOST, t, pinned)
    if v < 0:  # every unit of the list is in use: the other one
        q = T1 + T2 - q
        v = _demote(s, q, q + GHOST, t, pinned)
    return v


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    if s.ghost[0] != NOWHERE:
        return _replace(s, t, pinned)
    size = s.q.size
    if size[T1] + size[B1] + 1 > s.cap[0]:
        if size[B1] > 0:
            _drop_oldest(s, B1)
            return _replace(s, t, pinned)
        v = _demote(s, T1, -1, t, pinned)
        return v if v >= 0 else _demote(s, T2, B2, t, pinned)
    if size[T1] + size[B1] + size[T2] + size[B2] >= 2 * s.cap[0] and size[B2] > 0:
        _drop_oldest(s, B2)
    return _replace(s, t, pinned)


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    q = T2 if s.ghost[0] != NOWHERE else T1
    s.ghost[0] = NOWHERE
    push_head(s.q, q, u)
    s.where[u] = q
