"""Simulators of one unit kind of one layer: per-token masks and a DRAM cache (:class:`KindSim`), and
:func:`simulate` for one kind held in memory.

A cache is one of two families (``simcore.policies``): :class:`ScoreCache` (lru, lfu, belady: a linear
priority, evicted by radix selection, ``kernels``) or :class:`HookCache` (a policy's own state and hooks,
``engine.hooks``). A KindSim runs in one of three ways: token by token with the cache in the loop (any
policy without future knowledge; needed by cache-aware masks); collecting the masks first and replaying
them chunk by chunk (policies that need the future, and several capacities over shared masks); or one
recency state for every capacity at once (stack policies, such as LRU)."""

from __future__ import annotations

import numpy as np
from numba.core.errors import NumbaError

from simcore import policies
from simcore.engine import flash, hooks
from simcore.engine import kernels as K
from simcore.engine.maskstore import CHUNK_TOKENS, SPILL_BYTES, MaskStore
from simcore.errors import ConfigError, TraceError

MODES = {"all": K.MODE_ALL, "topk": K.MODE_TOPK, "threshold": K.MODE_THRESHOLD}


_ZEROS = np.zeros(0, np.int32)


def _no_next_uses(n: int) -> np.ndarray:
    """int32[n] of zeros: the next uses a policy without the future is given. One array, grown as needed,
    serves every call (a fresh one each call cost 4 % of an lru replay of one-unit tokens); the kernels
    never write ``nxt`` (left writeable: a read-only array would compile the replay kernels twice)."""
    global _ZEROS
    if _ZEROS.shape[0] < n:
        _ZEROS = np.zeros(max(n, 2 * _ZEROS.shape[0]), np.int32)
    return _ZEROS[:n]


class ScoreCache:
    """One DRAM cache of a score-family policy (lru, lfu, belady): per-unit use count, last use and
    next use; the cached units of lowest priority ``weights . (count, last, next)`` that the current
    token does not use are evicted by radix selection (``kernels.cache_step``)."""

    def __init__(self, policy, n_units: int, T: int, cap: int):
        self.cap, self.future = cap, policy.NEEDS_FUTURE
        self.pw = K.priority_weights(policy.weights(T), T)
        self.in_cache = np.zeros(n_units, np.bool_)
        self.count = np.zeros(n_units, np.int32)
        self.last = np.zeros(n_units, np.int32)
        self.next_use = np.full(n_units, K.NEVER, np.int32)
        self.state = np.zeros(K.STATE_SIZE, np.int64)  # occupancy and the selection's search hints

    @property
    def occupancy(self) -> int:
        return int(self.state[0])

    def run(
        self,
        scores: np.ndarray,
        hm: np.ndarray,
        spec: hooks.MaskSpec,
        t0: int,
        out: hooks.Outputs,
        reads=hooks.NO_READS,
    ) -> None:
        """Select the units of tokens t0, t0 + 1, ... (``scores``: uint16[T_b, U] float16 patterns;
        cache-aware masks read this cache) and account them against the cache; fills ``out``, and
        ``reads`` = (pos, miss_bits) with each token's missed units (``kernels.mark_missed``)."""
        K.replay_batch(
            scores,
            hm,
            spec.has_mass,
            spec.mode,
            spec.k,
            spec.thr,
            spec.aware,
            spec.gamma,
            spec.gamma_warmup,
            spec.gamma_schedule,
            spec.seq_len,
            spec.fixed_n,
            spec.approx_m,
            spec.approx_gamma,
            self.cap,
            t0,
            self.in_cache,
            self.count,
            self.last,
            self.next_use,
            self.state,
            self.pw,
            out.used,
            out.hits,
            out.kept,
            out.tot,
            out.mask,
            *reads,
        )

    def replay(
        self, idx: np.ndarray, ptr: np.ndarray, nxt: np.ndarray, t0: int, out_hits: np.ndarray, reads=hooks.NO_READS
    ) -> None:
        """Replay precomputed selections of tokens t0, t0 + 1, ... (CSR: int32 ``idx``, int64 ``ptr``;
        ``nxt``: int32 next-use token of each access) into ``out_hits`` (int32[len(ptr) - 1]); ``reads``:
        as for :meth:`run`."""
        if self.cap <= 0 and reads is hooks.NO_READS:  # no cache, no hits (but every use is a Flash read)
            return
        if not self.future:
            nxt = _no_next_uses(nxt.shape[0])  # a policy without future knowledge sees no next uses
        K.replay_masks_at(
            idx,
            ptr,
            nxt,
            t0,
            self.cap,
            self.in_cache,
            self.count,
            self.last,
            self.next_use,
            self.state,
            self.pw,
            out_hits,
            *reads,
        )


class HookCache:
    """One DRAM cache of a hook-family policy: the engine's own state (``hooks.Cache``) plus the
    policy's state arrays (``policy.init``), driven by ``engine.hooks``."""

    def __init__(self, policy, n_units: int, T: int, cap: int):
        self.cap, self.name = cap, getattr(policy, "__file__", None) or policy.__name__
        self.cache = hooks.new_cache(n_units)
        try:  # a user's code: any failure is a configuration error naming the file
            self.state = policy.init(n_units, cap)
        except Exception as e:
            raise ConfigError(f"policy {self.name}: init({n_units}, {cap}) failed: {_one_line(e)}") from None
        if not isinstance(self.state, tuple):
            raise ConfigError(
                f"policy {self.name}: init must return a tuple (or NamedTuple) of NumPy arrays, "
                f"not a {type(self.state).__name__}; see docs/extending.md"
            )
        self.hooks = hooks.hooks_of(policy)
        self.sel_state = np.zeros(K.STATE_SIZE, np.int64)  # the selection's search hints

    @property
    def in_cache(self) -> np.ndarray:
        return self.cache.in_cache

    @property
    def occupancy(self) -> int:
        return int(self.cache.occ[0])

    def run(
        self,
        scores: np.ndarray,
        hm: np.ndarray,
        spec: hooks.MaskSpec,
        t0: int,
        out: hooks.Outputs,
        reads=hooks.NO_READS,
    ) -> None:
        """As :meth:`ScoreCache.run`."""
        args = (scores, hm, spec, t0, self.cap, self.cache, self.sel_state, self.state, self.hooks, out, *reads)
        self._check(self._compiled(hooks.replay_batch, args))

    def replay(
        self, idx: np.ndarray, ptr: np.ndarray, nxt: np.ndarray, t0: int, out_hits: np.ndarray, reads=hooks.NO_READS
    ) -> None:
        """As :meth:`ScoreCache.replay` (``nxt`` is not used: hook policies get no next-use times)."""
        args = (idx, ptr, t0, self.cap, self.cache, self.state, self.hooks, out_hits, *reads)
        self._check(self._compiled(hooks.replay_csr, args))

    def _compiled(self, kernel, args) -> int:
        """``kernel(*args)``; a policy whose hooks or state Numba cannot compile is a ConfigError."""
        try:
            return kernel(*args)
        except NumbaError as e:
            raise ConfigError(
                f"policy {self.name}: its hooks do not compile with Numba for its state ({_one_line(e)}); "
                "hooks must be @njit functions over the tuple of NumPy arrays init returns (docs/extending.md)"
            ) from None

    def _check(self, status: int) -> None:
        if status == hooks.BAD_VICTIM:
            raise ConfigError(
                f"policy {self.name}: its evict or insert hook named a unit that is not cached or that the "
                "current token uses; fix the policy (see docs/extending.md)"
            )


def _one_line(e: Exception, width: int = 200) -> str:
    """An exception as one line: its type and the first informative line of its message."""
    skip = ("During:", "Failed in nopython", "File ", "^", "Traceback", "- argument")
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(skip)] or lines or [""]
    text = f"{type(e).__name__}: {useful[0]}"
    return text if len(text) <= width else text[: width - 1] + "…"


def cache_for(policy, n_units: int, T: int, cap: int) -> ScoreCache | HookCache:
    """A cache of capacity ``cap`` units under ``policy`` (a module of either family), for ``T`` tokens."""
    family = HookCache if policies.family(policy) == "hooks" else ScoreCache
    return family(policy, n_units, T, cap)


class KindSim:
    """Replay of one unit kind of one layer: its mask parameters, its cache, its per-token outputs.

    Feed token batches in order with :meth:`feed`; :meth:`finish` returns per-token arrays of shape (T,):
    ``used`` (units selected), ``hits``, ``kept`` and ``tot`` (|h|^2 of selected and all units).
    Policies that need the future (and ``collect=True``) collect the masks and replay them in
    :meth:`finish`; :meth:`hits_at` replays collected masks at several capacities.

    Memory: O(U) for the cache plus 24 bytes per token for the outputs; collecting adds the masks, a
    bitmap of about U * T / 8 * (1 + 64 / ``mask_chunk``) bytes (0.156 U T at the default chunk; in a
    temporary file when over ``spill_bytes``), and while replaying, one chunk of ``mask_chunk`` tokens
    as index lists (8 bytes per selected unit). See ``maskstore``.
    """

    def __init__(
        self,
        n_units: int,
        T: int,
        mode: int,
        k: int = 0,
        thr: float = 0.0,
        cap: int = 0,
        policy="lru",
        aware: bool = False,
        gamma: float = 1.0,
        gamma_warmup: int = 0,
        fixed_top_n: int = 0,
        approx_m: int = 0,
        mass: bool = False,
        caps: np.ndarray | None = None,
        collect: bool = False,
        mask_chunk: int = CHUNK_TOKENS,
        spill_bytes: int = SPILL_BYTES,
        reads: flash.ReadSpec | None = None,
        gamma_schedule: str = "linear",
        seq_len: int = 0,
        approx_gamma: float = 0.0,
    ):
        """Re-weighting (``aware``, see ``kernels.select_units``): ``gamma`` warms up per
        ``gamma_schedule`` (``kernels.select.gamma_at``): "linear" over the first ``gamma_warmup``
        tokens, or "authors" over each sequence of ``seq_len`` tokens (0: the run is one sequence);
        ``approx_gamma`` > 0 blends the use counts into approximate selection (``approx_m`` > 0;
        policies of the score family, which keep the counts)."""
        pol = policies.load(policy) if isinstance(policy, str) else policy
        cap = 0 if getattr(pol, "NO_CACHE", False) else min(cap, n_units)
        self.n, self.T, self.mode, self.k, self.thr, self.cap, self.mass = n_units, T, mode, k, thr, cap, mass
        self.future = pol.NEEDS_FUTURE
        cache_dependent = aware and (gamma < 1 or approx_m > k)
        if self.future and cache_dependent:
            raise ConfigError("belady needs masks that do not depend on the cache; use gamma 1 or another policy")
        if gamma_schedule not in K.select.GAMMA_SCHEDULES:
            raise ConfigError(f"gamma schedule {gamma_schedule!r}: choose one of {', '.join(K.select.GAMMA_SCHEDULES)}")
        if gamma_schedule == "authors" and gamma_warmup > 0:
            raise ConfigError("the authors' gamma warm-up has no length: give gamma_warmup 0 with it")
        if seq_len < 0:
            raise ConfigError(f"seq_len must be >= 0 (0: one sequence), got {seq_len}")
        if not 0.0 <= approx_gamma <= 1.0:
            raise ConfigError(f"approx_gamma must be in [0, 1], got {approx_gamma}")
        if approx_gamma > 0 and approx_m <= 0:
            raise ConfigError("approx_gamma weights cache statistics in approximate selection: it needs approx_m")
        if approx_gamma > 0 and aware and policies.family(pol) == "hooks":
            name = getattr(pol, "__name__", "?").rsplit(".", 1)[-1]
            raise ConfigError(
                f"--approx-gamma blends each unit's use count into the scores, which only score-family policies "
                f"(lru, lfu, none) keep; policy {name} does not: use one of them or drop --approx-gamma"
            )
        self.aware = aware and not self.future
        self.spec = hooks.MaskSpec(
            mass,
            mode,
            k,
            thr,
            self.aware,
            gamma,
            gamma_warmup if self.aware else 0,
            K.select.GAMMA_SCHEDULES.index(gamma_schedule) if self.aware else 0,
            seq_len,
            fixed_top_n if self.aware else 0,
            approx_m if self.aware else 0,
            approx_gamma if self.aware else 0.0,
        )
        self.used, self.hits = np.zeros(T, np.int32), np.zeros(T, np.int32)
        self.kept, self.tot = np.zeros(T), np.zeros(T)
        self.caps = None
        self.reads = None if reads is None else flash.Reads(reads, n_units, T)  # Flash requests per token
        self.cache: ScoreCache | HookCache | None = None
        self.collected: MaskStore | None = None  # collected masks (policies that need the future, collect=True)
        if caps is not None:  # a stack policy at several capacities at once (cache-independent masks)
            if reads is not None:
                raise ConfigError(
                    "the Flash read model needs the missed units of each capacity: one cache per capacity"
                )
            if not getattr(pol, "STACK", False) or cache_dependent:
                raise ConfigError(
                    "several capacities at once need a stack policy (lru) and masks that do not depend on the cache"
                )
            self.caps = np.minimum(np.asarray(caps, np.int64), n_units)
            self._order = np.argsort(self.caps, kind="mergesort")
            self._caps_sorted = np.ascontiguousarray(self.caps[self._order])
            self.hits_multi = np.zeros((len(self.caps), T), np.int32)
            self._last_multi = np.full(n_units, -1, np.int32)
            self._lstate_multi = np.zeros(len(self.caps) + 1, np.int64)
            return
        if (self.future or collect) and cache_dependent:
            raise ConfigError("collected masks must not depend on the cache")
        self.cache = cache_for(pol, n_units, T, cap)
        if self.future or collect:
            self.collected = MaskStore(n_units, T, mask_chunk, spill_bytes)

    @property
    def in_cache(self) -> np.ndarray:
        """bool[U]: the units in this kind's cache now."""
        return self.cache.in_cache

    @property
    def occupancy(self) -> int:
        """Units in this kind's cache now."""
        return self.cache.occupancy

    @classmethod
    def for_kind(
        cls,
        kind,
        cap: int,
        fraction: float,
        T: int,
        policy,
        thr: float = 0.0,
        caps=None,
        collect: bool = False,
        reads: flash.ReadSpec | None = None,
        seq_len: int | None = None,
    ) -> KindSim:
        """The KindSim of one unit kind (a ``methods.KindSpec``, its re-weighting included) selecting
        ``fraction`` of its units: the one place replay and eval turn a resolved method into a simulation.
        ``reads``: model this kind's Flash requests (``simcore.engine.flash``). ``seq_len``: tokens per
        sequence of the run (a trace's or an eval's windows, from token 0), which the authors' gamma
        warm-up restarts with; it must be given when the kind uses that warm-up."""
        k = int(round(fraction * kind.n_units))
        rw = kind.reweight
        aware = rw is not None
        approx = min(int(round(rw.approx_m * k)), kind.n_units) if aware and rw.approx_m > 1 else 0
        schedule = rw.gamma_schedule if aware else "linear"
        if schedule == "authors" and not seq_len:
            raise ConfigError(
                "--gamma-schedule authors restarts gamma's warm-up with every sequence, but this run gave no "
                "sequence length; use --gamma-warmup (linear) instead"
            )
        return cls(
            kind.n_units,
            T,
            MODES[kind.mode],
            k=k,
            thr=thr,
            cap=cap,
            policy=policy,
            aware=aware,
            gamma=rw.gamma if aware else 1.0,
            gamma_warmup=rw.gamma_warmup if aware else 0,
            fixed_top_n=rw.fixed_top_n if aware else 0,
            approx_m=approx,
            mass=kind.mass,
            caps=caps,
            collect=collect,
            reads=reads,
            gamma_schedule=schedule,
            seq_len=seq_len or 0,
            approx_gamma=rw.approx_gamma if aware and approx else 0.0,
        )

    def feed(self, scores: np.ndarray, hmag: np.ndarray | None, t0: int, masks: np.ndarray | None = None) -> None:
        """Tokens [t0, t0 + len(scores)): ``scores`` float16 magnitudes (T_b, U) (for MODE_ALL any
        (T_b, *)), ``hmag`` float16 |h| (T_b, U) when the kind tracks kept mass. Read as uint16 bit
        patterns, without a copy. ``masks`` (bool (T_b, U)), when given, receives each token's selection."""
        nb = scores.shape[0]
        if scores.dtype != np.float16 or (hmag is not None and hmag.dtype != np.float16):
            raise TypeError("KindSim.feed takes float16 magnitudes, as traces store them")
        if self.mode != K.MODE_ALL and scores.shape[1] != self.n:
            raise ValueError(f"scores have {scores.shape[1]} units, this kind has {self.n}")
        if self.mass and hmag.shape != scores.shape:
            raise ValueError(f"hmag has shape {hmag.shape}, scores {scores.shape}; they must match")
        scores = scores.view(np.uint16)
        hm = hmag.view(np.uint16) if self.mass else np.empty((0, 0), np.uint16)
        sl = slice(t0, t0 + nb)
        selection = (scores, hm, self.mass, self.mode, self.k, self.thr, self.n)  # what every mask kernel takes
        if self.caps is not None:
            if masks is not None:
                raise ValueError("a KindSim at several capacities does not hand out masks; build it without caps")
            hits = np.empty((len(self.caps), nb), np.int32)
            K.lru_multi_batch(
                *selection,
                self._caps_sorted,
                self._order,
                self._last_multi,
                self._lstate_multi,
                t0,
                self.used[sl],
                hits,
                self.kept[sl],
                self.tot[sl],
            )
            self.hits_multi[:, sl] = hits
        elif self.collected is not None:
            none = np.zeros((0, 0), np.bool_)
            for c, j0, a, b in self.collected.spans(t0, nb):
                status = K.mask_bits_batch(
                    scores[a:b],
                    hm[a:b],
                    self.mass,
                    self.mode,
                    self.k,
                    self.thr,
                    self.n,
                    j0,
                    self.collected.bits(c),
                    self.used[t0 + a : t0 + b],
                    self.kept[t0 + a : t0 + b],
                    self.tot[t0 + a : t0 + b],
                    none if masks is None else masks[a:b],
                )
                if status < 0:
                    raise TraceError(
                        f"a top-{self.k} selection of {self.n} units came out larger than {self.k}: the "
                        "magnitudes hold NaN; re-create the trace from a model run without NaN activations"
                    )
        else:
            out = hooks.Outputs(
                self.used[sl],
                self.hits[sl],
                self.kept[sl],
                self.tot[sl],
                np.zeros((0, 0), np.bool_) if masks is None else masks,
            )
            if self.reads is None:
                self.cache.run(scores, hm, self.spec, t0, out)
            else:
                bits = self.reads.bits(nb)
                self.cache.run(scores, hm, self.spec, t0, out, (self.reads.spec.pos, bits))
                self.reads.account(bits, t0)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(used, hits, kept, tot) per token; hits of shape (B, T) for a KindSim at several capacities
        (row b: ``caps[b]``), (T,) otherwise."""
        if self.caps is not None:
            return self.used, self.hits_multi, self.kept, self.tot
        if self.collected is not None:
            self.finish_masks()
            if self.cap > 0 or self.reads is not None:  # no cache: no hits, but Flash reads
                for c0, idx, ptr, nxt in self.collected.chunks(self.used):
                    c1 = c0 + len(ptr) - 1
                    if self.reads is None:
                        self.cache.replay(idx, ptr, nxt, c0, self.hits[c0:c1])
                    else:
                        bits = self.reads.bits(c1 - c0)
                        self.cache.replay(idx, ptr, nxt, c0, self.hits[c0:c1], (self.reads.spec.pos, bits))
                        self.reads.account(bits, c0)
            self.close()
        return self.used, self.hits, self.kept, self.tot

    def finish_masks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """End the collection of the masks fed so far: ``self.collected`` then reads them back chunk by
        chunk; returns (used, hits, kept, tot)."""
        if self.collected is None:
            raise ValueError(
                "only a KindSim that collects masks (collect=True or a policy that needs the future) has them"
            )
        self.collected.finalize()
        return self.used, self.hits, self.kept, self.tot

    def close(self) -> None:
        """Release the collected masks (and their temporary file, if any)."""
        if self.collected is not None:
            self.collected.close()

    def hits_at(self, caps: np.ndarray, policy) -> np.ndarray:
        """Hits per token (B, T) of the collected masks at each capacity in ``caps`` under ``policy``:
        one recency state for a stack policy (LRU: the cache of capacity C is always the C most recent
        units, ties to the higher index; see ``kernels.lru_multi_step``), one cache per capacity
        otherwise; the masks are read back one chunk at a time, each state carried over."""
        pol = policies.load(policy) if isinstance(policy, str) else policy
        if self.reads is not None:
            raise ConfigError("the Flash read model replays one capacity at a time; build one KindSim per capacity")
        caps = np.minimum(np.asarray(caps, np.int64), self.n)
        out = np.zeros((len(caps), self.T), np.int32)
        if getattr(pol, "NO_CACHE", False):
            return out
        self.finish_masks()
        if getattr(pol, "STACK", False):
            order = np.argsort(caps, kind="mergesort")
            caps_sorted = np.ascontiguousarray(caps[order])
            last, lstate = np.full(self.n, -1, np.int32), np.zeros(len(caps) + 1, np.int64)
            for c0, idx, ptr, _ in self.collected.chunks(self.used):
                K.lru_stack_hits_at(idx, ptr, c0, caps_sorted, order, last, lstate, out[:, c0 : c0 + len(ptr) - 1])
            return out
        caches = [cache_for(pol, self.n, self.T, int(cap)) for cap in caps]  # each carried from chunk to chunk
        for c0, idx, ptr, nxt in self.collected.chunks(self.used):
            c1 = c0 + len(ptr) - 1
            for b, cache in enumerate(caches):
                cache.replay(idx, ptr, nxt, c0, out[b, c0:c1])
        return out


def simulate(
    scores: np.ndarray,
    k: int,
    cap: int,
    policy: str = "lru",
    mode: str = "topk",
    thr: float = 0.0,
    gamma: float = 1.0,
    gamma_warmup: int = 0,
    fixed_top_n: int = 0,
    approx_m: int = 0,
    hmag: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Replay one kind of one layer held in memory (tests, benchmarks, notebooks).

    Args:
        scores: (T, U) magnitudes (rounded to float16, as traces store them); k: units per token (mode "topk"); cap: cache capacity in units;
        gamma < 1 or approx_m > k makes the mask cache-aware (dip-ca); hmag: (T, U) |h| for the kept mass.
    Returns:
        dict of per-token arrays (T,): used, hits, kept, tot.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float16)
    T, U = scores.shape
    aware = gamma < 1 or approx_m > k or fixed_top_n > 0
    sim = KindSim(
        U,
        T,
        MODES[mode],
        k=k,
        thr=thr,
        cap=cap,
        policy=policy,
        aware=aware,
        gamma=gamma,
        gamma_warmup=gamma_warmup,
        fixed_top_n=fixed_top_n,
        approx_m=approx_m,
        mass=hmag is not None,
    )
    sim.feed(scores, None if hmag is None else np.ascontiguousarray(hmag, np.float16), 0)
    used, hits, kept, tot = sim.finish()
    return {"used": used, "hits": hits, "kept": kept, "tot": tot}
