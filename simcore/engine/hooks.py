"""The engine's loop for cache policies of the *hook family*: per-unit state arrays plus small jitted hooks.

libCacheSim's ``cache_get_base`` (find -> evict until it fits -> insert) in Numba, for tokens that use
many units at once. A policy module of this family declares (see ``docs/extending.md``):

* ``init(n_units, capacity) -> state``: a tuple or NamedTuple of NumPy arrays (per-unit arrays and
  small arrays for global scalars), made once per cache;
* ``hit(state, u, t)``: unit ``u`` (``np.uint32``: indexing with it tests for no negative index), cached,
  is used by token ``t``;
* ``evict(state, t, pinned) -> int``: choose a cached unit with ``pinned[u]`` False, take it out of
  the policy's structures and return it (``pinned``: bool[U], the units token ``t`` uses);
* ``insert(state, u, t, pinned)``: unit ``u`` enters the cache (room has been made). It may return a
  unit that leaves the cache as a consequence (never a pinned one; ``u`` itself declines after the
  eviction, as libCacheSim's S3-FIFO can), or -1 / nothing;
* optional ``miss(state, u, t)``: ``u`` is used and not cached, before room is made for it (ghost
  lookups); ``admit(state, u, t) -> bool``: whether ``u`` may enter at all (before any eviction).

Per token ``t`` using the units ``it`` (ascending), the engine (:func:`replay_csr`):

1. marks them pinned; counts hits (``in_cache``) and calls ``hit`` for each, in ascending order;
2. streams the misses that cannot fit: with ``h`` hits at most ``cap - h`` misses can be cached, so
   the ``m - cap`` misses of lowest unit index (if any) pass without touching the policy (the rule
   of the score family, whose ties also drop the lower index first);
3. for each other miss, in ascending unit order: ``miss``; ``admit``; ``evict`` while the cache is
   full; ``insert``;
4. unpins.

On a stream of one unit per token this is exactly libCacheSim's per-request order. The hooks are
passed to the loop as Numba dispatchers, so each policy gets its own compiled loop with the hooks
inlined; such a loop cannot be cached on disk (a dispatcher's type names its address), so it is
compiled once per process and policy (``NJIT_HOOKED``).
"""

from __future__ import annotations

import types as pytypes
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from simcore.config import NJIT_HOOKED
from simcore.engine import kernels as K

BAD_VICTIM = -1  # replay_csr's status when a policy's evict or insert names a unit it may not remove
NO_READS = (np.zeros(0, np.int32), np.zeros((0, 0), np.uint64))  # (pos, miss_bits) when Flash reads are not modelled


class Hooks(NamedTuple):
    """A hook-family policy's jitted hooks (see the module docstring)."""

    hit: object
    miss: object
    admit: object
    evict: object
    insert: object


class Cache(NamedTuple):
    """The engine's own state of one cache: what is in it, what the current token uses, how full it is."""

    in_cache: np.ndarray  # bool[U]
    pinned: np.ndarray  # bool[U]: the units of the token being replayed (False between tokens)
    occ: np.ndarray  # int64[1]: units in the cache


def new_cache(n_units: int) -> Cache:
    return Cache(np.zeros(n_units, np.bool_), np.zeros(n_units, np.bool_), np.zeros(1, np.int64))


# The defaults of the optional hooks take every policy's state type, a user's own among them: a cache
# index on disk listing them could not be read back by a process that has not imported that user's file.
@njit(**dict(NJIT_HOOKED, _nrt=False, forceinline=True))
def _no_miss(state, u, t):
    pass


@njit(**dict(NJIT_HOOKED, _nrt=False, forceinline=True))
def _admit_all(state, u, t):
    return True


def is_hook_policy(module: pytypes.ModuleType) -> bool:
    """A module of the hook family: it defines ``init``, ``hit``, ``evict`` and ``insert``."""
    return all(callable(getattr(module, name, None)) for name in ("init", "hit", "evict", "insert"))


def hooks_of(module: pytypes.ModuleType) -> Hooks:
    """The hooks of a hook-family policy module, with the optional ones defaulted."""
    return Hooks(
        *(
            _fast(f)
            for f in (
                module.hit,
                getattr(module, "miss", _no_miss),
                getattr(module, "admit", _admit_all),
                module.evict,
                module.insert,
            )
        )
    )


_FAST: dict = {}


def _fast(f):
    """The hook ``f`` recompiled without reference counting and always inlined (``config.NJIT_HOOK``),
    once per process: a policy written with a plain ``@njit`` (or none) runs as fast as one of the package's."""
    if f not in _FAST:
        _FAST[f] = njit(**dict(NJIT_HOOKED, _nrt=False, forceinline=True))(getattr(f, "py_func", f))
    return _FAST[f]


def _leaving(x):  # pragma: no cover - replaced by the overload below inside jitted code
    pass


@overload(_leaving)
def _leaving_impl(x):
    """The unit an ``insert`` hook says leaves the cache: -1 when the hook returns nothing."""
    if isinstance(x, types.NoneType):
        return lambda x: -1
    return lambda x: np.int64(x)


@njit(**NJIT_HOOKED)
def replay_csr(idx, ptr, t0, cap, cache, st, h, out_hits, pos, miss_bits):
    """Replay precomputed selections through one cache of capacity ``cap``: token t0 + j uses the units
    ``idx[ptr[j]:ptr[j + 1]]`` (int32, ascending, distinct); ``out_hits``: int32[len(ptr) - 1] receives
    the hits; ``miss_bits`` (uint64[len(ptr) - 1, W], or (0, 0): not wanted) each token's missed units
    at their Flash positions ``pos`` (``kernels.mark_missed``). ``cache``: the engine's :class:`Cache`;
    ``st``: the policy's state; ``h``: its :class:`Hooks`. The cache and policy state carry over, so a
    trace replayed chunk by chunk gives the hits of one call over all of it. Returns 0, or
    ``BAD_VICTIM`` if a hook named a unit that is not cached or is used by the current token (a bug in
    the policy).

    A stream of one unit per token (libCacheSim's case) has its own loop, :func:`_replay_single`: the
    two loops compile to better code apart than together."""
    n = ptr.shape[0] - 1
    if ptr[n] - ptr[0] == n:
        single = True
        for j in range(n):
            if ptr[j + 1] - ptr[j] != 1:
                single = False
                break
        if single:
            return _replay_single(idx, ptr, t0, cap, cache, st, h, out_hits, pos, miss_bits)
    return _replay_sets(idx, ptr, t0, cap, cache, st, h, out_hits, pos, miss_bits)


@njit(**NJIT_HOOKED)
def _replay_single(idx, ptr, t0, cap, cache, st, h, out_hits, pos, miss_bits):
    """:func:`replay_csr` for tokens of one unit each: nothing to pin (a unit that misses is not cached,
    so it cannot be a victim). The tokens loop here rather than in a per-token function: passing the
    state tuples to a call (even one inlined by Numba) costs a reference count update per array, more
    than a one-unit token's work."""
    in_cache = cache.in_cache
    reads = miss_bits.shape[0] > 0
    a0 = np.uint64(ptr[0])  # token j's unit is idx[a0 + j]
    for j in range(ptr.shape[0] - 1):
        # unsigned indices, here and in the hooks (u): no test for negative ones (up to +25%)
        ju = np.uint64(j)
        u, t = np.uint32(idx[a0 + ju]), t0 + j
        if in_cache[u]:
            h.hit(st, u, t)
            out_hits[ju] = 1
            continue
        out_hits[ju] = 0
        if reads:
            K.mark_unit(u, pos, miss_bits, j)
        if cap > 0 and _place(u, t, cap, cache, st, h) < 0:
            return BAD_VICTIM
    return 0


@njit(**NJIT_HOOKED)
def _replay_sets(idx, ptr, t0, cap, cache, st, h, out_hits, pos, miss_bits):
    """:func:`replay_csr` for tokens of any number of units."""
    in_cache, pinned = cache.in_cache, cache.pinned
    missed = np.empty(max(in_cache.shape[0], 1), np.int32)  # the current token's misses, ascending
    found = np.empty(max(in_cache.shape[0], 1), np.int32)  # and its hits
    reads = miss_bits.shape[0] > 0
    for j in range(ptr.shape[0] - 1):
        a0, a1, t = ptr[j], ptr[j + 1], t0 + j
        if a1 - a0 == 1:  # a one-unit token pins nothing: as _replay_single replays it
            if (
                _replay_single(
                    idx, ptr[j : j + 2], t, cap, cache, st, h, out_hits[j : j + 1], pos, miss_bits[j : j + 1]
                )
                < 0
            ):
                return BAD_VICTIM
            continue
        hits = 0
        nm = 0
        for a in range(a0, a1):  # without branches: each unit is written to both lists, counted in one
            u = np.uint32(idx[a])
            pinned[u] = True
            c = in_cache[u]
            found[hits] = u
            missed[nm] = u
            hits += c
            nm += 1 - c
        for b in range(hits):
            h.hit(st, np.uint32(found[b]), t)
        if reads:
            for b in range(nm):
                K.mark_unit(missed[b], pos, miss_bits, j)
        status = hits
        if cap > 0:
            # misses beyond the room the hits (which stay) leave stream past the cache: the lowest indices
            for b in range(max(0, (a1 - a0) - cap), nm):
                if _place(np.uint32(missed[b]), t, cap, cache, st, h) < 0:
                    status = BAD_VICTIM
                    break
        for a in range(a0, a1):
            pinned[np.uint32(idx[a])] = False
        if status < 0:
            return status
        out_hits[j] = status
    return 0


@njit(**dict(NJIT_HOOKED, _nrt=False, forceinline=True))
def _place(u, t, cap, cache, st, h):
    """Unit ``u``, used by token ``t`` and not cached: ``miss``, ``admit``, ``evict`` until it fits,
    ``insert``. Returns 0, or BAD_VICTIM if a hook named a unit it may not take out."""
    in_cache, pinned, occ = cache.in_cache, cache.pinned, cache.occ
    n = in_cache.shape[0]
    h.miss(st, u, t)
    if not h.admit(st, u, t):
        return 0
    while occ[0] >= cap:
        v = h.evict(st, t, pinned)
        if v < 0 or v >= n:
            return BAD_VICTIM
        w = np.uint32(v)  # a new name: v itself stays signed
        if not in_cache[w] or pinned[w]:
            return BAD_VICTIM
        in_cache[w] = False
        occ[0] -= 1
    d = _leaving(h.insert(st, u, t, pinned))
    in_cache[u] = True
    occ[0] += 1
    if d >= 0:
        if d >= n:
            return BAD_VICTIM
        e = np.uint32(d)
        if not in_cache[e] or (pinned[e] and e != u):
            return BAD_VICTIM
        in_cache[e] = False
        occ[0] -= 1
    return 0


class MaskSpec(NamedTuple):
    """How one kind selects its units per token (``simcore.engine.kernels.select_units``)."""

    has_mass: bool
    mode: int
    k: int
    thr: float
    aware: bool
    gamma: float
    gamma_warmup: int
    gamma_schedule: int  # kernels.select.GAMMA_SCHEDULES index; see kernels.select.gamma_at
    seq_len: int  # tokens per sequence, for the authors' warm-up (0: one sequence)
    fixed_n: int
    approx_m: int
    approx_gamma: float  # weight of the use counts in approximate selection (score family only)


class Outputs(NamedTuple):
    """Per-token outputs of a batch: int32 used and hits, float64 kept and tot (T_b,), and the masks
    (bool (T_b, U), or (0, 0) when not wanted)."""

    used: np.ndarray
    hits: np.ndarray
    kept: np.ndarray
    tot: np.ndarray
    mask: np.ndarray


@njit(**NJIT_HOOKED)
def replay_batch(scores, hmag, spec, t0, cap, cache, sel_state, st, h, out, pos, miss_bits):
    """``kernels.replay_batch`` for a hook-family policy: select each token's units (cache-aware masks
    read ``cache.in_cache``), then :func:`replay_csr`. ``scores``/``hmag``: uint16[T_b, U] float16 bit
    patterns; ``sel_state``: int64[kernels.STATE_SIZE], the selection's search hints; ``pos``,
    ``miss_bits``: as for :func:`replay_csr`. Returns 0 or BAD_VICTIM."""
    T = scores.shape[0]
    n = cache.in_cache.shape[0]
    keep_masks = out.mask.shape[0] > 0
    used, keys, cand, hist, wbuf, qbuf, _, dummy = K._selection_scratch(n)
    it = np.empty(n, np.int32)
    ptr = np.zeros(2, np.int64)
    hits = np.zeros(1, np.int32)
    no_bits = np.zeros((0, 0), np.uint64)
    pthr = K.f16_pattern_at_most(spec.thr)
    for i in range(T):
        t = t0 + i
        g = K.select.gamma_at(spec.gamma, spec.gamma_schedule, spec.gamma_warmup, spec.seq_len, t)
        row = scores[i] if spec.mode != K.MODE_ALL else dummy
        m = K.select_units(
            row,
            spec.mode,
            spec.k,
            pthr,
            spec.aware,
            g,
            spec.fixed_n,
            spec.approx_m,
            cache.in_cache,
            used,
            keys,
            cand,
            hist,
            wbuf,
            qbuf,
            sel_state,
        )
        out.used[i] = m
        if miss_bits.shape[0] > 0:
            K.mark_missed(used, cache.in_cache, pos, miss_bits, i)
        ptr[1] = K._positions(used, it)
        r = replay_csr(it, ptr, t, cap, cache, st, h, hits, pos, no_bits)
        if r < 0:
            return r
        out.hits[i] = hits[0]
        K._mass(hmag[i], used, spec.has_mass, wbuf, out.kept, out.tot, i)
        if keep_masks:
            out.mask[i, :] = used
    return 0


def replay_sets(policy, tokens, n_units: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Replay ``tokens`` (each an iterable of unit ids) through one cache of a hook-family policy module
    (tests, benchmarks, notebooks). Returns (hits per token int32[T], the final ``in_cache`` bool[U])."""
    sets = [np.unique(np.asarray(list(s), np.int32)) for s in tokens]
    ptr = np.zeros(len(sets) + 1, np.int64)
    ptr[1:] = np.cumsum([len(s) for s in sets])
    idx = np.concatenate(sets).astype(np.int32) if sets else np.zeros(0, np.int32)
    cache = new_cache(n_units)
    out = np.zeros(len(sets), np.int32)
    cap = min(cap, n_units)
    if replay_csr(idx, ptr, 0, cap, cache, policy.init(n_units, cap), hooks_of(policy), out, *NO_READS) < 0:
        raise RuntimeError(f"policy {policy.__name__}: a hook named a victim that is not cached or is in use")
    return out, cache.in_cache
