"""clock (Corbató 1968, second chance): a FIFO in which a unit used since it entered, or since the hand
last passed it, is sent back to the head once instead of being evicted (libCacheSim ``Clock.c`` with its
defaults: a 1-bit reference counter, 0 on insertion).

Ties and tokens: a token's misses enter in ascending unit order; the hand starts at the oldest unit and
passes over the units the current token uses without clearing their bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from simcore.config import NJIT_HOOK
from simcore.engine.lists import Ring, ring, ring_pop_clock, ring_push

NEEDS_FUTURE = False


class State(NamedTuple):
    q: Ring  # the cached units, oldest first
    ref: np.ndarray  # int8[U]: the reference bit (0 or 1)


def init(n_units: int, capacity: int) -> State:
    return State(ring(capacity), np.zeros(n_units, np.int8))


@njit(**NJIT_HOOK)
def hit(s, u, t):
    s.ref[u] = 1


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    return ring_pop_clock(s.q, pinned, t, s.ref)  # a unit whose bit is set: cleared, sent back to the head


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    ring_push(s.q, u)
    s.ref[u] = 0
