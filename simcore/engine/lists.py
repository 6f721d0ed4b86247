"""Queues of units over plain arrays, for policies of the hook family (``simcore.engine.hooks``).

Direction, as in libCacheSim: new units enter at the *head* (the newest end); the *tail* is the oldest.
A victim is never a unit the current token uses (``pinned[u]``): every walk here passes over the pinned
units, which keep their places, and the token's next walk resumes after them (pinned units are neither
evicted nor moved while a token's misses are inserted, so a token's evictions together walk a queue once).

**Queues** (arc, fifo, s3fifo, twoq): doubly linked lists over two arrays. A unit is in at most one
queue of a policy at a time (ARC's T1/T2/B1/B2, S3-FIFO's small, main and ghost queues, 2Q's
A1in/A1out/Am are disjoint), so one pair of link arrays serves every queue of a policy: ``newer[u]``
points towards the head, ``older[u]`` towards the tail; -1 ends a queue. Units can be taken out or moved
anywhere (``unlink``, ``to_head``). ``oldest_unpinned`` walks from the tail and remembers, per queue and
token, the last pinned unit it passed.

**Ring** (clock, sieve): one queue in a flat array ``slot``, for policies that take units out or move
them only where their walk is. A walk reads consecutive slots (no link to chase), with one hard-to-predict
branch per unit, its exit; a unit it passes and keeps is copied down over the slots freed so far, so
the free slots travel with the walk as a *gap*. The units, oldest first, are ``slot[0:GAP]``, then
``slot[SCAN:HI]`` (the gap is ``slot[GAP:SCAN]``; SCAN is where the walk goes on); ``ring_push`` writes at
HI, and when HI reaches the end of the array (4x the capacity) the gaps close: the units after them move
down.

* CLOCK (``ring_pop_clock``) walks from the oldest unit at every token (SCAN_T: the token of the last
  walk): over ``slot[0:GAP]``, the units the previous token's walk kept, then it jumps that walk's gap
  (OLD_GAP to OLD_SCAN); within a token it goes on from SCAN. So two gaps can stand at once: a new token
  whose predecessor's walk stopped short of the older gap first moves the units between up against it
  (rare: a token's walk is longer than the region the previous one kept). A unit sent back to the head
  is written at HI, and its slot joins the gap.
* SIEVE (``ring_hand_pop``) walks from where its hand (SCAN) stopped: past the newest unit the gap is
  at the end, HI drops to GAP and the hand goes round to slot 0, the oldest unit.
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
    u = np.uint32(u)  # unsigned indices: no test for negative ones
    h = qs.head[q]
    qs.newer[u] = NO_UNIT
    qs.older[u] = h
    if h >= 0:
        qs.newer[np.uint32(h)] = u
    else:
        qs.tail[q] = u
    qs.head[q] = u
    qs.size[q] += 1


@njit(**NJIT_HOOK)
def unlink(qs, q, u):
    """Take unit ``u`` out of queue ``q`` (it must be there)."""
    u = np.uint32(u)
    nw, od = qs.newer[u], qs.older[u]
    if nw >= 0:
        qs.older[np.uint32(nw)] = od
    else:
        qs.head[q] = od
    _join_older(qs, q, od, nw)
    qs.newer[u] = NO_UNIT
    qs.older[u] = NO_UNIT
    qs.size[q] -= 1


@njit(**NJIT_HOOK)
def _join_older(qs, q, od, nw):
    """A unit between ``od`` (older, or -1: it was the tail) and ``nw`` has left queue ``q``: ``od``'s
    newer neighbour is now ``nw`` (``nw`` is the tail if ``od`` is -1)."""
    if od >= 0:
        qs.newer[np.uint32(od)] = nw
    else:
        qs.tail[q] = nw


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
    h = qs.head[q]
    if h == u:
        return
    u = np.uint32(u)  # not the head: there is a newer unit, and the queue's size stays as it is
    nw, od = qs.newer[u], qs.older[u]
    qs.older[np.uint32(nw)] = od
    _join_older(qs, q, od, nw)
    qs.newer[u] = NO_UNIT
    qs.older[u] = h
    qs.newer[np.uint32(h)] = u
    qs.head[q] = u


@njit(**NJIT_HOOK)
def oldest_unpinned(qs, q, pinned, t):
    """The oldest unit of queue ``q`` with ``pinned[u]`` False, or -1 if there is none; ``t`` is the
    current token (the walk resumes after the pinned units it passed earlier in the same token)."""
    if qs.walked_t[q] == t and qs.walked[q] >= 0:
        u = qs.newer[np.uint32(qs.walked[q])]
    else:
        qs.walked[q] = NO_UNIT
        u = qs.tail[q]
    qs.walked_t[q] = t
    while u >= 0 and pinned[np.uint32(u)]:
        qs.walked[q] = u
        u = qs.newer[np.uint32(u)]
    return u


# --- Ring: one queue in a flat array, walked with a gap (module docstring) ------------------------------


class Ring(NamedTuple):
    slot: np.ndarray  # int32[R]: the units, oldest first, with up to two gaps (module docstring)
    ends: np.ndarray  # int64[6]: GAP, SCAN, HI, SCAN_T, OLD_GAP, OLD_SCAN


GAP, SCAN, HI, SCAN_T, OLD_GAP, OLD_SCAN = 0, 1, 2, 3, 4, 5  # slots of Ring.ends


def ring(capacity: int) -> Ring:
    """An empty ring for at most ``capacity`` units."""
    return Ring(np.zeros(4 * max(capacity, 1) + 64, np.int32), np.array([0, 0, 0, -1, -1, -1], np.int64))


@njit(**NJIT_HOOK)
def ring_push(r, u):
    """Put unit ``u`` at the head (newest end) of ring ``r``."""
    hi = r.ends[HI]
    if hi == r.slot.shape[0]:
        hi = _ring_close(r.slot, r.ends)
    r.slot[np.uint64(hi)] = u
    r.ends[HI] = hi + 1


@njit(**NJIT_HOOK)
def _ring_close(slot, e):
    """The array is used up to its end: close the gaps (the units after them move down). Returns HI."""
    w, i, g0, s0, hi = e[GAP], e[SCAN], e[OLD_GAP], e[OLD_SCAN], e[HI]
    if i <= g0 < s0:  # the gap from g0 is still ahead
        for j in range(s0, hi):
            slot[g0 + j - s0] = slot[j]
        hi -= s0 - g0
    for j in range(i, hi):
        slot[w + j - i] = slot[j]
    hi -= i - w
    e[SCAN] = w
    e[OLD_GAP] = e[OLD_SCAN] = -1
    e[HI] = hi
    return hi


@njit(**NJIT_HOOK)
def _ring_walk(slot, e, t):
    """Where a walk of token ``t`` from the oldest unit starts: (w, i, g0, s0), the end of the units
    kept, the next slot to look at, and the gap to jump from g0 to s0 when i gets there."""
    w, i, g0, s0 = e[GAP], e[SCAN], e[OLD_GAP], e[OLD_SCAN]
    # a new token walks from the oldest unit, jumping the gap the previous token's walk left; if that walk
    # kept no unit (w = 0) this is where it stopped, so the walk resumes there as within a token
    if w > 0 and e[SCAN_T] != t:
        if i <= g0 < s0:  # that walk stopped short of the gap before it: the units between move up to it
            n = g0 - i
            for j in range(1, n + 1):
                slot[s0 - j] = slot[g0 - j]
            i = s0 - n
        g0, s0 = w, i
        w = i = 0
    return w, i, g0, s0


@njit(**NJIT_HOOK)
def ring_pop_clock(r, pinned, t, count):
    """CLOCK over ring ``r``: take out and return the oldest unit with ``pinned[u]`` False and
    ``count[u]`` 0 (there must be one); each unpinned unit passed has a count > 0: it goes back to the
    head with its count less one. Pinned units keep their places and counts; ``t`` is the current token
    (its next walk resumes here)."""
    slot, e = r.slot, r.ends
    w, i, g0, s0 = _ring_walk(slot, e, t)
    hi = e[HI]
    while True:
        if hi == slot.shape[0]:  # no slot left for a unit sent back: close the gaps, go on from w
            e[GAP], e[SCAN], e[OLD_GAP], e[OLD_SCAN], e[HI] = w, i, g0, s0, hi
            hi = _ring_close(slot, e)
            w = i = e[SCAN]
            g0 = s0 = -1
        if i == g0:
            i = s0
        u = slot[np.uint64(i)]
        x = np.uint32(u)  # unsigned indices: no test for negative ones
        p = pinned[x]
        c = count[x]
        if c == 0 and not p:
            break
        slot[np.uint64(w)] = u  # kept in place if pinned (w <= i) ...
        w += p
        slot[np.uint64(hi)] = u  # ... else back to the head, its count less one (branch-free)
        hi += 1 - p
        count[x] = c - (1 - p)
        i += 1
    e[GAP], e[SCAN], e[OLD_GAP], e[OLD_SCAN], e[HI], e[SCAN_T] = w, i + 1, g0, s0, hi, t
    return u


@njit(**NJIT_HOOK)
def ring_hand_pop(r, pinned, bit):
    """SIEVE's hand over ring ``r``: from where it stopped last (at first the oldest unit) towards the
    newest, then round from the oldest, take out and return the first unit with ``pinned[u]`` and
    ``bit[u]`` False (there must be one), clearing the bit of the unpinned units it passes; the hand
    stays at the next newer unit. The units passed keep their order (copied down to the gap)."""
    slot, e = r.slot, r.ends
    g, h, hi = e[GAP], e[SCAN], e[HI]
    while True:
        if h == hi:  # past the newest: the gap is at the end; round to the oldest
            hi = g
            g = h = 0
        u = slot[np.uint64(h)]
        x = np.uint32(u)  # unsigned indices: no test for negative ones
        p = pinned[x]
        b = bit[x]
        if not (p or b):
            break
        bit[x] = p and b
        slot[np.uint64(g)] = u
        g += 1
        h += 1
    h += 1
    if h == hi:
        hi = g
        g = h = 0
    e[GAP], e[SCAN], e[HI] = g, h, hi
    return u
