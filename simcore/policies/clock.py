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
from simcore.engine.lists import Queues, oldest_unpinned, push_head, queues, to_head, unlink

NEEDS_FUTURE = False
Q = 0
MAX_FREQ = 1  # a 1-bit counter


class State(NamedTuple):
    q: Queues
    freq: np.ndarray  # int8[U]: the reference bit


def init(n_units: int, capacity: int) -> State:
    return State(queues(n_units, 1), np.zeros(n_units, np.int8))


@njit(**NJIT_HOOK)
def hit(s, u, t):
    if s.freq[u] < MAX_FREQ:
        s.freq[u] += 1


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    while True:
        v = oldest_unpinned(s.q, Q, pinned, t)
        if s.freq[v] == 0:
            unlink(s.q, Q, v)
            return v
        s.freq[v] -= 1
        to_head(s.q, Q, v)


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    push_head(s.q, Q, u)
    s.freq[u] = 0
