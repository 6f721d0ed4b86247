"""Slow, obviously-correct pure-Python models of the hook-family policies (STYLE.md #8a).

Each policy keeps plain Python lists (index 0 = the oldest / least recently used end) and follows its
module's docstring; :func:`replay` applies the engine's rules for a token of several units
(``simcore.engine.hooks``): hits first, in ascending unit order; the ``m - cap`` misses of lowest index
stream past the cache; each other miss, in ascending order: ``miss``, then ``evict`` while the cache is
full, then ``insert``. Victims are never units of the current token (``pinned``).
"""

from __future__ import annotations


def _oldest(queue, pinned):
    """The first unit of ``queue`` (oldest first) not in ``pinned``, or None."""
    return next((u for u in queue if u not in pinned), None)


class Fifo:
    def __init__(self, cap):
        self.q = []

    def hit(self, u):
        pass

    def miss(self, u):
        pass

    def evict(self, pinned):
        v = _oldest(self.q, pinned)
        self.q.remove(v)
        return v

    def insert(self, u, pinned):
        self.q.append(u)


class Clock:
    def __init__(self, cap):
        self.q, self.bit = [], {}

    def hit(self, u):
        self.bit[u] = 1

    def miss(self, u):
        pass

    def evict(self, pinned):
        while True:
            v = _oldest(self.q, pinned)
            self.q.remove(v)
            if self.bit[v] == 0:
                return v
            self.bit[v] = 0
            self.q.append(v)  # second chance: back to the newest end

    def insert(self, u, pinned):
        self.q.append(u)
        self.bit[u] = 0


class Sieve:
    def __init__(self, cap):
        self.q, self.visited, self.hand = [], {}, None

    def hit(self, u):
        self.visited[u] = True

    def miss(self, u):
        pass

    def evict(self, pinned):
        i = self.q.index(self.hand) if self.hand is not None else 0
        while self.q[i] in pinned or self.visited[self.q[i]]:
            if self.q[i] not in pinned:
                self.visited[self.q[i]] = False
            i = (i + 1) % len(self.q)  # towards the newest, then round to the oldest
        v = self.q.pop(i)
        self.hand = self.q[i] if i < len(self.q) else None
        return v

    def insert(self, u, pinned):
        self.q.append(u)
        self.visited[u] = False


class S3Fifo:
    def __init__(self, cap):
        small = max(1, int(cap * 0.1))
        self.small_cap, self.main_cap, self.ghost_cap = small, cap - small, int(cap * 0.9)
        self.small, self.main, self.ghost, self.freq = [], [], [], {}
        self.ghost_hit = self.evicted = False

    def hit(self, u):
        self.freq[u] = min(self.freq[u] + 1, 3)

    def miss(self, u):
        self.ghost_hit = u in self.ghost
        if self.ghost_hit:
            self.ghost.remove(u)

    def _evict_small(self, pinned):
        while self.small:
            v = _oldest(self.small, pinned)
            if v is None:
                return None
            self.small.remove(v)
            if self.freq[v] >= 2:
                self.main.append(v)
                self.freq[v] = 0
            else:
                if self.ghost_cap > 0:
                    if len(self.ghost) >= self.ghost_cap:
                        self.ghost.pop(0)
                    self.ghost.append(v)
                return v
        return "moved"

    def _evict_main(self, pinned):
        while True:
            v = _oldest(self.main, pinned)
            if v is None:
                return None
            self.main.remove(v)
            if self.freq[v] >= 1:
                self.freq[v] -= 1
                self.main.append(v)
            else:
                return v

    def evict(self, pinned):
        self.evicted = True
        while True:
            if len(self.main) > self.main_cap or not self.small:
                v = self._evict_main(pinned)
                if v is None:
                    v = self._evict_small(pinned)
            else:
                v = self._evict_small(pinned)
                if v is None:
                    v = self._evict_main(pinned)
            if v is not None and not isinstance(v, str):  # a unit (int or np.int64), not 'moved'
                return v

    def insert(self, u, pinned):
        warm = not self.evicted and len(self.small) >= self.small_cap  # before any eviction: fill main
        (self.main if self.ghost_hit or warm else self.small).append(u)
        self.ghost_hit = False
        self.freq[u] = 0


class Arc:
    def __init__(self, cap):
        self.cap, self.p = cap, 0.0
        self.t1, self.t2, self.b1, self.b2 = [], [], [], []
        self.ghost = None

    def hit(self, u):
        if u in self.t1:
            self.t1.remove(u)
        else:
            self.t2.remove(u)
        self.t2.append(u)

    def miss(self, u):
        self.ghost = None
        if u in self.b1:
            self.p = min(self.p + max(len(self.b2) / len(self.b1), 1.0), float(self.cap))
            self.b1.remove(u)
            self.ghost = "b1"
        elif u in self.b2:
            self.p = max(self.p - max(len(self.b1) / len(self.b2), 1.0), 0.0)
            self.b2.remove(u)
            self.ghost = "b2"

    def _demote(self, lst, ghost, pinned):
        v = _oldest(lst, pinned)
        if v is not None:
            lst.remove(v)
            if ghost is not None:
                ghost.append(v)
        return v

    def _replace(self, pinned):
        n1 = len(self.t1)
        if (n1 > 0 and (n1 > self.p or (n1 == self.p and self.ghost == "b2"))) or not self.t2:
            v = self._demote(self.t1, self.b1, pinned)
            return v if v is not None else self._demote(self.t2, self.b2, pinned)
        v = self._demote(self.t2, self.b2, pinned)
        return v if v is not None else self._demote(self.t1, self.b1, pinned)

    def evict(self, pinned):
        if self.ghost is not None:
            return self._replace(pinned)
        if len(self.t1) + len(self.b1) + 1 > self.cap:
            if self.b1:
                self.b1.pop(0)
                return self._replace(pinned)
            v = self._demote(self.t1, None, pinned)
            return v if v is not None else self._demote(self.t2, self.b2, pinned)
        if len(self.t1) + len(self.b1) + len(self.t2) + len(self.b2) >= 2 * self.cap and self.b2:
            self.b2.pop(0)
        return self._replace(pinned)

    def insert(self, u, pinned):
        (self.t2 if self.ghost is not None else self.t1).append(u)
        self.ghost = None


class TwoQ:
    def __init__(self, cap):
        self.ain_cap = max(1, int(cap * 0.25))
        self.aout_cap, self.am_cap = int(cap * 0.5), cap - self.ain_cap
        self.ain, self.aout, self.am = [], [], []
        self.ghost_hit = False

    def hit(self, u):
        if u in self.am:
            self.am.remove(u)
            self.am.append(u)

    def miss(self, u):
        self.ghost_hit = u in self.aout
        if self.ghost_hit:
            self.aout.remove(u)

    def _leave_ain(self, v):
        self.ain.remove(v)
        if self.aout_cap > 0:
            if len(self.aout) >= self.aout_cap:
                self.aout.pop(0)
            self.aout.append(v)
        return v

    def evict(self, pinned):
        if len(self.ain) > self.ain_cap and _oldest(self.ain, pinned) is not None:
            return self._leave_ain(_oldest(self.ain, pinned))
        v = _oldest(self.am, pinned)
        if v is not None:
            self.am.remove(v)
            return v
        return self._leave_ain(_oldest(self.ain, pinned))

    def insert(self, u, pinned):
        if not self.ghost_hit:
            self.ain.append(u)
            return None
        self.ghost_hit = False
        d = None
        if len(self.am) >= self.am_cap:
            d = _oldest(self.am, pinned)
            if d is not None:
                self.am.remove(d)
        self.am.append(u)
        return d


class Lfuda:
    def __init__(self, cap):
        self.uses, self.key, self.stamp, self.age, self.clock = {}, {}, {}, 0, 0
        self.cached = set()

    def _set(self, u):
        self.key[u], self.stamp[u] = self.uses[u] + self.age, self.clock
        self.clock += 1

    def hit(self, u):
        self.uses[u] += 1
        self._set(u)

    def miss(self, u):
        pass

    def evict(self, pinned):
        v = min(self.cached - pinned, key=lambda u: (self.key[u], self.stamp[u]))
        self.cached.remove(v)
        self.age = self.key[v]
        return v

    def insert(self, u, pinned):
        self.uses[u] = 1
        self._set(u)
        self.cached.add(u)


MODELS = {"fifo": Fifo, "clock": Clock, "sieve": Sieve, "s3fifo": S3Fifo, "arc": Arc, "twoq": TwoQ, "lfuda": Lfuda}


def replay(policy: str, tokens, cap: int):
    """Per-token (hits, misses) and the final cache (a set) of ``tokens`` (iterables of unit ids) under
    the model of ``policy``; misses are counted directly (used units not in the cache), not as m - hits."""
    model = MODELS[policy](cap)
    cache: set[int] = set()
    hits, misses = [], []
    for units in tokens:
        units = sorted({int(u) for u in units})
        pinned = set(units)
        h = [u for u in units if u in cache]
        missed = [u for u in units if u not in cache]
        hits.append(len(h))
        misses.append(len(missed))
        for u in h:
            model.hit(u)
        if cap <= 0:
            continue
        for u in missed[max(0, len(units) - cap) :]:
            model.miss(u)
            while len(cache) >= cap:
                v = model.evict(pinned)
                assert v in cache and v not in pinned
                cache.remove(v)
            cache.add(u)
            d = model.insert(u, pinned)
            if d is not None:
                assert d in cache and (d not in pinned or d == u)
                cache.remove(d)
        assert len(cache) <= cap
    return hits, misses, cache
