"""Doubly linked queues of units over plain arrays, for policies of the hook family (``simcore.engine.hooks``).

A unit is in at most one queue of a policy at a time (S3-FIFO's small, main and ghost queues, ARC's
T1/T2/B1/B2, 2Q's A1in/A1out/Am are disjoint), so one pair of link arrays serves every queue of a
policy. Direction, as in libCacheSim: new units enter at the *head*; the *tail* is the oldest;
``newer[u]`` points towards the head, ``older[u]`` towards the tail; -1 ends a queue.

``oldest_unpinned`` walks from the tail past the units the current token uses (the engine may evict
only the others). It remembers, per queue and token, the last pinned unit it passed: pinned units
are neither evicted nor moved while a token's misses are inserted, so the next walk of the same
token resumes after them, and a token's evictions together walk each queue once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from simcore.config import NJIT_HOOK

NO_UNIT = -1


class Queues(NamedTuple):
    newer: np.ndarray  # int32[U]: the unit entered after u (towards the head), -1 at the head
    older: np.ndarray  # int32[U]: the unit entered before u (towards the tail), -1 at the tail
    head: np.ndarray  # int32[Q]: newest unit of each queue, -1 when empty
    tail: np.ndarray  # int32[Q]: oldest unit of each queue, -1 when empty
    size: np.ndarray  # int64[Q]: units in each queue
    walked: np.ndarray  # int32[Q]: the last pinned unit passed by oldest_unpinned in token walked_t[q]
    walked_t: np.ndarray  # int64[Q]: the token of that walk (-1: none)


def queues(n_units: int, n_queues: int) -> Queues:
    """Empty queues: ``n_queues`` of them over units 0 .. n_units - 1."""
    return Queues(
        np.full(n_units, NO_UNIT, np.int32),
        np.full(n_units, NO_UNIT, np.int32),
        np.full(n_queues, NO_UNIT, np.int32),
        np.full(n_queues, NO_UNIT, np.int32),
        np.zeros(n_queues, np.int64),
        np.full(n_queues, NO_UNIT, np.int32),
        np.full(n_queues, -1, np.int64),
    )


@njit(**NJIT_HOOK)
def push_head(qs, q, u):
    """Put unit ``u`` (in no queue) at the head of queue ``q``."""
    h = qs.head[q]
    qs.newer[u] = NO_UNIT
    qs.older[u] = h
    if h >= 0:
        qs.newer[h] = u
    else:
        qs.tail[q] = u
    qs.head[q] = u
    qs.size[q] += 1


@njit(**NJIT_HOOK)
def unlink(qs, q, u):
    """Take unit ``u`` out of queue ``q`` (it must be there)."""
    nw, od = qs.newer[u], qs.older[u]
    if nw >= 0:
        qs.older[nw] = od
    else:
        qs.head[q] = od
    if od >= 0:
        qs.newer[od] = nw
    else:
        qs.tail[q] = nw
    qs.newer[u] = NO_UNIT
    qs.older[u] = NO_UNIT
    qs.size[q] -= 1


@njit(**NJIT_HOOK)
def push_bounded(qs, q, u, limit, where):
    """Put unit ``u`` (in no queue) at the head of queue ``q`` holding at most ``limit`` units, as a
    ghost queue does: while it is full its oldest units leave (``where[g] = -1``); then ``where[u] = q``.
    With ``limit`` <= 0 the queue keeps nothing (``where[u] = -1``)."""
    if limit <= 0:
        where[u] = NO_UNIT
        return
    while qs.size[q] >= limit:
        g = qs.tail[q]
        unlink(qs, q, g)
        where[g] = NO_UNIT
    push_head(qs, q, u)
    where[u] = q


@njit(**NJIT_HOOK)
def to_head(qs, q, u):
    """Move unit ``u`` of queue ``q`` to its head (LRU promotion, CLOCK reinsertion)."""
    if qs.head[q] != u:
        unlink(qs, q, u)
        push_head(qs, q, u)


@njit(**NJIT_HOOK)
def oldest_unpinned(qs, q, pinned, t):
    """The oldest unit of queue ``q`` with ``pinned[u]`` False, or -1 if there is none; ``t`` is the
    current token (the walk resumes after the pinned units it passed earlier in the same token)."""
    if qs.walked_t[q] == t and qs.walked[q] >= 0:
        u = qs.newer[qs.walked[q]]
    else:
        qs.walked[q] = NO_UNIT
        u = qs.tail[q]
    qs.walked_t[q] = t
    while u >= 0 and pinned[u]:
        qs.walked[q] = u
        u = qs.newer[u]
    return u
