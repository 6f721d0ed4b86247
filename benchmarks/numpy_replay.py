"""A straightforward vectorised NumPy implementation of dip-ca replay with an LFU/LRU cache: the
reference the engine's speed is compared with in benchmarks/replay.py.

Per token and unit kind it does what simcore.engine.kernels does, with whole-array NumPy operations
(np.partition for the k-th value, boolean masks for the cache), and the same order rules (top-k ties
to the lower index; eviction of the lowest priority, ties to the lower index), so its hit counts
equal the engine's exactly, which the benchmark checks.
"""

from __future__ import annotations

import numpy as np


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k smallest keys, ties to the lower index."""
    mask = np.zeros(keys.shape[0], bool)
    if k <= 0:
        return mask
    if k >= keys.shape[0]:
        mask[:] = True
        return mask
    v = np.partition(keys, k - 1)[k - 1]
    mask = keys < v
    need = k - int(mask.sum())
    mask[np.flatnonzero(keys == v)[:need]] = True
    return mask


class NumpyKind:
    """One unit kind of one layer: cache state and counters."""

    def __init__(self, n_units: int, k: int, cap: int, gamma: float, policy_weights):
        self.k, self.cap, self.g = k, cap, np.float32(gamma)
        self.in_cache = np.zeros(n_units, bool)
        self.count = np.zeros(n_units, np.int64)
        self.last = np.zeros(n_units, np.int64)
        self.w = policy_weights
        self.hits = 0
        self.accesses = 0

    def step(self, row16: np.ndarray, t: int) -> np.ndarray:
        """One token: ``row16`` float16 magnitudes (U,). Returns the selected unit indices."""
        vals = row16.astype(np.float32)
        score = np.where(self.in_cache, vals, vals * self.g)
        sel = _smallest(-score, self.k)
        hits = int((sel & self.in_cache).sum())
        m = int(sel.sum())
        self.hits += hits
        self.accesses += m
        self.count += sel
        self.last[sel] = t
        prio = (self.w[0] * self.count + self.w[1] * self.last).astype(np.int64)
        if m >= self.cap:
            big = prio.max() + 1
            drop = _smallest(np.where(sel, prio, big), m - self.cap)
            self.in_cache = sel & ~drop
        else:
            occ = int(self.in_cache.sum())
            evict = occ + (m - hits) - self.cap
            if evict > 0:
                cand = self.in_cache & ~sel
                big = prio.max() + 1
                self.in_cache &= ~_smallest(np.where(cand, prio, big), evict)
            self.in_cache |= sel
        return np.flatnonzero(sel)
