"""twoq (Johnson and Shasha, VLDB'94, "2Q: a low overhead high performance buffer management replacement
algorithm", full version): new units enter the FIFO A1in (25 % of the cache); units leaving it are
remembered in the ghost FIFO A1out (50 % of the cache, units only); a miss found in A1out enters the LRU
list Am; hits in A1in change nothing (libCacheSim ``TwoQ.c``, its defaults Ain-size-ratio 0.25,
Aout-size-ratio 0.5: A1in is trimmed only when over its size, and Am, when full, evicts its own least
recently used unit as a unit from A1out enters it).

Ties and tokens: a token's misses enter in ascending unit order; victims are the oldest (A1in) or least
recently used (Am) unit the current token does not use. One difference from libCacheSim: its A1in holds
floor(0.25 C) units and caches nothing when that is 0 (C < 4); here it holds at least 1 (equal hits for
C >= 4).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from simcore.config import NJIT_HOOK
from simcore.engine.lists import Queues, oldest_unpinned, push_bounded, push_head, queues, to_head, unlink

NEEDS_FUTURE = False
IN_RATIO, OUT_RATIO = 0.25, 0.5
AIN, AOUT, AM, NOWHERE = 0, 1, 2, -1


class State(NamedTuple):
    q: Queues
    where: np.ndarray  # int8[U]: AIN, AOUT, AM or NOWHERE
    sizes: np.ndarray  # int64[3]: capacities of AIN, AOUT, AM
    ghost_hit: np.ndarray  # bool[1]: the unit being inserted was found in A1out


def init(n_units: int, capacity: int) -> State:
    ain = max(1, int(capacity * IN_RATIO))
    sizes = np.array([ain, int(capacity * OUT_RATIO), capacity - ain], np.int64)
    return State(queues(n_units, 3), np.full(n_units, NOWHERE, np.int8), sizes, np.zeros(1, np.bool_))


@njit(**NJIT_HOOK)
def hit(s, u, t):
    if s.where[u] == AM:
        to_head(s.q, AM, u)


@njit(**NJIT_HOOK)
def miss(s, u, t):
    s.ghost_hit[0] = s.where[u] == AOUT
    if s.ghost_hit[0]:
        unlink(s.q, AOUT, u)
        s.where[u] = NOWHERE


@njit(**NJIT_HOOK)
def _leave_ain(s, v):
    unlink(s.q, AIN, v)
    push_bounded(s.q, AOUT, v, s.sizes[AOUT], s.where)  # remembered in A1out


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    if s.q.size[AIN] > s.sizes[AIN]:
        v = oldest_unpinned(s.q, AIN, pinned, t)
        if v >= 0:
            _leave_ain(s, v)
            return v
    v = oldest_unpinned(s.q, AM, pinned, t)
    if v >= 0:
        unlink(s.q, AM, v)
        s.where[v] = NOWHERE
        return v
    v = oldest_unpinned(s.q, AIN, pinned, t)
    _leave_ain(s, v)
    return v


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    if not s.ghost_hit[0]:
        push_head(s.q, AIN, u)
        s.where[u] = AIN
        return -1
    s.ghost_hit[0] = False
    d = -1
    if s.q.size[AM] >= s.sizes[AM]:  # Am is full: it evicts its own least recently used unit
        d = oldest_unpinned(s.q, AM, pinned, t)
        if d >= 0:
            unlink(s.q, AM, d)
            s.where[d] = NOWHERE
    push_head(s.q, AM, u)
    s.where[u] = AM
    return d
