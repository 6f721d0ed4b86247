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
from simcore.engine.lists import Queues, push_head, queues, unlink

NEEDS_FUTURE = False
Q = 0  # the one queue (index into Queues.head, .tail, ...)


class State(NamedTuple):
    q: Queues  # head = newest, tail = oldest
    visited: np.ndarray  # bool[U]: used since it entered or since the hand last passed it
    hand: np.ndarray  # int32[1]: the next unit the hand looks at (-1: start again from the tail)


def init(n_units: int, capacity: int) -> State:
    return State(queues(n_units, 1), np.zeros(n_units, np.bool_), np.full(1, -1, np.int32))


@njit(**NJIT_HOOK)
def hit(s, u, t):
    s.visited[u] = True


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    v = s.hand[0] if s.hand[0] >= 0 else s.q.tail[Q]
    while pinned[v] or s.visited[v]:
        if not pinned[v]:
            s.visited[v] = False
        v = s.q.newer[v] if s.q.newer[v] >= 0 else s.q.tail[Q]  # past the newest: back to the oldest
    s.hand[0] = s.q.newer[v]
    unlink(s.q, Q, v)
    return v


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    push_head(s.q, Q, u)
    s.visited[u] = False
