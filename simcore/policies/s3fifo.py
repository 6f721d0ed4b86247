"""s3fifo (Yang et al., SOSP'23, "FIFO queues are all you need for cache eviction"): new units enter a
small FIFO (10 % of the cache); one used at least twice there moves to the main FIFO, the others leave
and are remembered in a ghost FIFO (90 % of the cache, units only); a miss found in the ghost enters the
main FIFO directly. The main FIFO is a CLOCK with a 2-bit use counter (libCacheSim ``S3FIFO.c``, its
defaults: small-size-ratio 0.1, ghost-size-ratio 0.9, move-to-main-threshold 2; as there, until the first
eviction a new unit that finds the small FIFO full enters the main FIFO).

Ties and tokens: a token's misses enter in ascending unit order; every walk from the oldest unit passes
over the units the current token uses, leaving them and their counters unchanged. One difference from
libCacheSim: its small FIFO holds floor(0.1 C) units and caches nothing at all when that is 0 or 1 (C <
20); here it holds max(1, floor(0.1 C)) and works at every capacity (equal hits for C >= 20).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from simcore.config import NJIT_HOOK
from simcore.engine.lists import Queues, oldest_unpinned, push_bounded, push_head, queues, to_head, unlink

NEEDS_FUTURE = False
SMALL_RATIO, GHOST_RATIO, MOVE_TO_MAIN = 0.1, 0.9, 2
SMALL, MAIN, GHOST, NOWHERE = 0, 1, 2, -1
GHOST_HIT, EVICTED = 0, 1  # slots of State.flags
MAX_FREQ = 3  # counts above 3 behave as 3 (the main FIFO's 2-bit counter)


class State(NamedTuple):
    q: Queues
    where: np.ndarray  # int8[U]: SMALL, MAIN, GHOST or NOWHERE
    freq: np.ndarray  # int8[U]: uses since it entered its queue (at most MAX_FREQ)
    sizes: np.ndarray  # int64[3]: capacities of SMALL, MAIN, GHOST (their indices)
    flags: np.ndarray  # bool[2]: [GHOST_HIT] the unit being inserted was found in the ghost; [EVICTED] an
    # eviction has happened (until then, units that find the small FIFO full fill the main FIFO)


def init(n_units: int, capacity: int) -> State:
    small = max(1, int(capacity * SMALL_RATIO))
    sizes = np.array([small, capacity - small, int(capacity * GHOST_RATIO)], np.int64)
    return State(
        queues(n_units, 3), np.full(n_units, NOWHERE, np.int8), np.zeros(n_units, np.int8), sizes, np.zeros(2, np.bool_)
    )


@njit(**NJIT_HOOK)
def hit(s, u, t):
    if s.freq[u] < MAX_FREQ:
        s.freq[u] += 1


@njit(**NJIT_HOOK)
def miss(s, u, t):
    s.flags[GHOST_HIT] = s.where[u] == GHOST
    if s.flags[GHOST_HIT]:
        unlink(s.q, GHOST, u)
        s.where[u] = NOWHERE


@njit(**NJIT_HOOK)
def _evict_small(s, t, pinned):
    """Walk the small FIFO from its oldest unit: units used twice move to main; the first other one is
    evicted. Returns it, -2 if every unit moved (none evicted), -1 if the small FIFO has no unpinned unit."""
    while True:
        v = oldest_unpinned(s.q, SMALL, pinned, t)
        if v < 0:
            return -2 if s.q.size[SMALL] == 0 else -1
        unlink(s.q, SMALL, v)
        if s.freq[v] >= MOVE_TO_MAIN:
            push_head(s.q, MAIN, v)
            s.where[v] = MAIN
            s.freq[v] = 0
            if s.q.size[SMALL] == 0:
                return -2
        else:
            push_bounded(s.q, GHOST, v, s.sizes[GHOST], s.where)  # remembered in the ghost FIFO
            return v


@njit(**NJIT_HOOK)
def _evict_main(s, t, pinned):
    """CLOCK over the main FIFO: a used unit goes back to the head with its count less one."""
    while True:
        v = oldest_unpinned(s.q, MAIN, pinned, t)
        if v < 0:
            return -1
        if s.freq[v] >= 1:
            s.freq[v] -= 1
            to_head(s.q, MAIN, v)
        else:
            unlink(s.q, MAIN, v)
            s.where[v] = NOWHERE
            return v


@njit(**NJIT_HOOK)
def evict(s, t, pinned):
    s.flags[EVICTED] = True
    while True:
        if s.q.size[MAIN] > s.sizes[MAIN] or s.q.size[SMALL] == 0:
            v = _evict_main(s, t, pinned)
            if v < 0:
                v = _evict_small(s, t, pinned)
        else:
            v = _evict_small(s, t, pinned)
            if v == -1:
                v = _evict_main(s, t, pinned)
        if v >= 0:
            return v


@njit(**NJIT_HOOK)
def insert(s, u, t, pinned):
    q = SMALL
    if s.flags[GHOST_HIT] or (not s.flags[EVICTED] and s.q.size[SMALL] >= s.sizes[SMALL]):
        q = MAIN
    s.flags[GHOST_HIT] = False
    push_head(s.q, q, u)
    s.where[u] = q
    s.freq[u] = 0
