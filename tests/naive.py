"""A slow, obviously-correct pure-Python reference of masking and caching (STYLE.md #8a).

It follows DESIGN.md's words with Python sets and sorted(); every kernel is compared with it.
Order rules (the same as simcore.engine.kernels): top-k takes the largest scores, ties to the lower
unit index; eviction removes the lowest priority first, ties to the lower unit index first.
"""

from __future__ import annotations

import numpy as np


def priority(policy: str, count: int, last: int, next_use: float):
    """How much a policy wants to keep a unit; compared as tuples, higher is kept."""
    if policy == "lru":
        return (last,)
    if policy == "lfu":
        return (count, last)
    if policy == "belady":
        return (-next_use,)
    raise ValueError(policy)


def top(scores, k, among=None):
    """The k units of largest score (ties: lower index), as a set."""
    units = range(len(scores)) if among is None else among
    return set(sorted(units, key=lambda u: (-scores[u], u))[:k])


def select(row, mode, k, thr, cache, aware, gamma, fixed_n, approx_m):
    n = len(row)
    if mode == "all":
        return set(range(n))
    if mode == "threshold":
        return {u for u in range(n) if float(row[u]) > thr}
    scores = [float(v) for v in row]
    if aware and approx_m > k:
        cand = top(scores, approx_m)
        order = sorted(cand, key=lambda u: (u not in cache, -scores[u], u))
        return set(order[:k])
    if aware:  # re-weighting is float32 arithmetic, as in the engine
        exempt = top(scores, fixed_n) if fixed_n else set()
        g = np.float32(gamma)
        scores = [s if (u in cache or u in exempt) else float(np.float32(s) * g) for u, s in enumerate(scores)]
    return top(scores, k)


def replay(
    scores,
    k,
    cap,
    policy="lru",
    mode="topk",
    thr=0.0,
    gamma=1.0,
    gamma_warmup=0,
    fixed_n=0,
    approx_m=0,
    hmag=None,
    sets=None,
):
    """Per-token (used, hits, kept, tot) lists for one kind of one layer; each token's selection is
    appended to ``sets`` when a list is given."""
    T = len(scores)
    aware = gamma < 1 or approx_m > k or fixed_n > 0
    cache: set[int] = set()
    count: dict[int, int] = {}
    last: dict[int, int] = {}
    masks = []
    used, hits, kept, tot = [], [], [], []
    future = policy == "belady"
    if future:
        masks = [select(scores[t], mode, k, thr, set(), False, 1.0, 0, 0) for t in range(T)]

    def next_use(u, t):
        for s in range(t + 1, T):
            if u in masks[s]:
                return s
        return float("inf")

    for t in range(T):
        g = gamma
        if gamma_warmup and t < gamma_warmup:
            g = 1.0 - (1.0 - gamma) * (t / gamma_warmup)
        S = masks[t] if future else select(scores[t], mode, k, thr, cache, aware, g, fixed_n, approx_m)
        used.append(len(S))
        hits.append(len(S & cache))
        if sets is not None:
            sets.append(S)
        if hmag is not None:
            h2 = [float(v) * float(v) for v in hmag[t]]
            kept.append(sum(h2[u] for u in S))
            tot.append(sum(h2))
        for u in S:
            count[u] = count.get(u, 0) + 1
            last[u] = t
        if cap == 0 or policy == "none":
            continue

        def key(u, t=t):
            return (priority(policy, count.get(u, 0), last.get(u, -1), next_use(u, t) if future else 0), u)

        if len(S) >= cap:
            cache = set(sorted(S, key=key)[len(S) - cap :])
        else:
            missed = S - cache
            evict = len(cache) + len(missed) - cap
            if evict > 0:
                cache -= set(sorted(cache - S, key=key)[:evict])
            cache |= S
        assert len(cache) <= cap
    return used, hits, kept, tot
