"""fifo: evict the unit that entered the cache first, whatever its uses since (libCacheSim ``FIFO.c``).

Ties and tokens: a token's misses enter in ascending unit order (the lower index is older); the victim is
the oldest cached unit the current token does not use.
"""

from __future__ import annotations

from typing import NamedTuple

from numba import njit

from simcore.config import NJIT_HOOK
from simcore.engine.lists import Queues, oldest_unpinned, push_head, queues, unlink

NEEDS_FUTURE = False
Q = 0  # the one queue


class State(NamedTuple):
    q: Queues


def init(n_units: int, capacity: int) -> State:
    return State(queues(n_units, 1))


@njit(**NJIT_HOOK)
def hit(s, u, t):
    pass


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    v = oldest_unpinned(s.q, Q, pinned, t)
    unlink(s.q, Q, v)
    return v


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    push_head(s.q, Q, u)
