"""sieve (Zhang et al., NSDI'24, "SIEVE is simpler than LRU"): a FIFO queue with a hand that moves from
the oldest unit towards the newest; a unit used since the hand last passed it is spared (its bit is
cleared) and stays in place, the first unit found unused is evicted, and the hand stays there
(libCacheSim ``Sieve.c``).

Ties and tokens: a token's misses enter in ascending unit order (the lower index is older); the hand
passes over the units the current token uses without clearing their bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from simcore.config import NJIT_HOOK
from simcore.engine.lists import Ring, ring, ring_hand_pop, ring_push

NEEDS_FUTURE = False


class State(NamedTuple):
    q: Ring  # the cached units, oldest first, and the hand (past the newest it goes back to the oldest)
    visited: np.ndarray  # bool[U]: used since it entered or since the hand last passed it


def init(n_units: int, capacity: int) -> State:
    return State(ring(capacity), np.zeros(n_units, np.bool_))


@njit(**NJIT_HOOK)
def hit(s, u, t):
    s.visited[u] = True


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    return ring_hand_pop(s.q, pinned, s.visited)


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    ring_push(s.q, u)
    s.visited[u] = False
