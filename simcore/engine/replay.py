"""Replay: run a trace's tokens through a masking method and per-layer DRAM caches, count hits and
bytes, and turn them into tokens per second (DESIGN.md). Public entry point: :func:`replay`.

The trace is streamed one layer at a time, ``batch_tokens`` rows at a time; each (layer, kind)
keeps its cache state between batches. Belady needs the future, so it first collects a layer's
masks (cache-independent by definition) as bitmaps (``maskstore``), then replays them chunk by
chunk, each chunk's next-use times read off the bitmaps.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simcore import __version__, methods, policies
from simcore.device import Device, load_device, override
from simcore.engine import kernels as K
from simcore.engine.maskstore import CHUNK_TOKENS, SPILL_BYTES, MaskStore
from simcore.errors import ConfigError, TraceError
from simcore.memory import MemoryPlan, Quant, plan, pruned_cost
from simcore.trace.format import TraceReader
from simcore.units import parse_bandwidth, parse_size

MODES = {"all": K.MODE_ALL, "topk": K.MODE_TOPK, "threshold": K.MODE_THRESHOLD}
DEFAULT_MODEL = "smollm2-135m"


class ReplayConfig(BaseModel):
    """Every setting of a replay; the descriptions are what ``simcore replay --help`` shows."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    trace: str | None = Field(default=None, description="trace directory (default: traces/<model>)")
    model: str | None = Field(
        default=None, description="model alias; short for --trace traces/NAME (default smollm2-135m)"
    )
    device: str = Field(default="a18", description="device profile: a name in devices/ or a YAML path")
    dram: str | None = Field(
        default=None,
        description="DRAM available to the model, e.g. 4GB or 512MiB (default: the device's dram_budget_gb)",
    )
    flash_bw: str | None = Field(
        default=None, description="override the device's Flash read bandwidth, GB/s (1 or 1GB/s)"
    )
    dram_bw: str | None = Field(default=None, description="override the device's DRAM bandwidth, GB/s (60 or 60GB/s)")
    method: str = Field(default="dip-ca", description="masking method: dense, glu, gate, up, cats, dip, dip-ca")
    density: float = Field(default=0.5, description="target MLP density: fraction of MLP weight bytes used per token")
    rho_in: float | None = Field(
        default=None, description="dip/dip-ca: input-channel density (rho_d follows from --density)"
    )
    rho_d: float | None = Field(
        default=None, description="dip/dip-ca: down-channel density (rho_in follows from --density)"
    )
    gamma: float = Field(
        default=0.2, description="dip-ca: score weight of units not in the cache, 0 < gamma <= 1 (1 = dip)"
    )
    fixed_top_n: int = Field(
        default=0, ge=0, description="dip-ca: this many top units per token are exempt from re-weighting"
    )
    gamma_warmup: int = Field(
        default=0, ge=0, description="dip-ca: gamma falls linearly from 1 over this many first tokens"
    )
    approx_m: float = Field(
        default=0.0,
        ge=0,
        description="dip-ca: approximate selection from the top m = approx_m * k units, cached first (0: off; > 1 to use)",
    )
    policy: str = Field(default="lfu", description="eviction policy: lfu, lru, belady, none")
    pruned: str | None = Field(
        default=None,
        description="a `simcore prune` output: the MLP matrices are statically pruned (kept weights plus mask or N:M metadata in the memory plan)",
    )
    bits: float = Field(default=4, description="weight bits")
    group_size: int = Field(default=128, description="quantization group size (0: none)")
    scale_bits: float = Field(default=16, description="bits of each group's scale")
    kv_bits: float = Field(default=16, description="bits per KV-cache element")
    context: int = Field(
        default=1024, ge=0, description="context length whose KV cache stays in DRAM and is read every token"
    )
    kind_split: list[float] | None = Field(
        default=None, description="weights splitting a layer's MLP cache between unit kinds (default: by weight bytes)"
    )
    warmup: int = Field(default=100, ge=0, description="tokens excluded from steady-state figures")
    tokens: int | None = Field(default=None, gt=0, description="replay only the first N tokens")
    cats_calib_tokens: int = Field(
        default=256, gt=0, description="cats: first tokens of each layer used to calibrate its threshold"
    )
    batch_tokens: int = Field(default=256, gt=0, description="trace rows read at a time (bounds memory)")
    threads: int = Field(
        default=0, ge=0, description="layers replayed in parallel (0: one per core); results do not depend on it"
    )
    overlap_compute: bool = Field(
        default=False, description="with a device compute_tops: overlap compute with memory traffic"
    )

    def quant(self) -> Quant:
        try:
            return Quant(bits=self.bits, group_size=self.group_size, scale_bits=self.scale_bits, kv_bits=self.kv_bits)
        except ValidationError as e:
            raise ConfigError(describe_validation(e)) from None


def describe_validation(e: ValidationError) -> str:
    """One line for the first error of a settings model: the option, what is wrong, the value given."""
    err = e.errors()[0]
    loc = err["loc"]
    option = "--" + str(loc[0]).replace("_", "-") if loc else "settings"
    got = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    if err["type"] == "extra_forbidden":
        return f"unknown setting {option}"
    return f"{option}: {err['msg']}{got}"


@dataclass
class ReplayResult:
    """What a replay measured. ``layers`` has one record per (layer, kind); ``totals`` and ``kinds``
    aggregate them; ``config`` is the resolved configuration that produced the numbers."""

    config: dict
    memory: dict
    totals: dict
    kinds: dict
    layers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "memory": self.memory,
            "totals": self.totals,
            "kinds": self.kinds,
            "layers": self.layers,
        }

    @property
    def warnings(self) -> list[str]:
        """What the user should know about how the request was served (e.g. no steady state)."""
        return list(self.config.get("warnings") or [])

    def to_json(self) -> str:
        """Strict JSON: a non-finite number (no such value in JSON) is written as null."""
        return json.dumps(_finite(self.to_dict()), indent=2, allow_nan=False)

    def table(self) -> str:
        from simcore.report_text import replay_table

        return replay_table(self)

    def to_parquet(self, path: str | os.PathLike) -> None:
        from simcore.results import write_replay_parquet

        write_replay_parquet(self, path)


def _finite(obj):
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def resolve_trace_path(trace: str | None, model: str | None) -> Path:
    if trace is None:
        return Path("traces") / (model or DEFAULT_MODEL)
    return Path(trace)


def _device(cfg: ReplayConfig) -> Device:
    dev = load_device(cfg.device)
    return override(
        dev,
        flash_bw_gbps=parse_bandwidth(cfg.flash_bw, "--flash-bw") if cfg.flash_bw is not None else None,
        dram_bw_gbps=parse_bandwidth(cfg.dram_bw, "--dram-bw") if cfg.dram_bw is not None else None,
    )


def _config(config: ReplayConfig | None, settings: dict) -> ReplayConfig:
    if config is not None:
        return config
    try:
        return ReplayConfig(**settings)
    except ValidationError as e:
        raise ConfigError(describe_validation(e)) from None


def replay(config: ReplayConfig | None = None, progress: bool = False, **settings) -> ReplayResult:
    """Replay a trace under one configuration.

    Call with a :class:`ReplayConfig` or with its fields as keywords, e.g.
    ``replay(trace="traces/smollm2-135m", device="a18", dram="64MB", method="dip-ca", gamma=0.2)``.
    Raises SimcoreError subclasses for bad settings or traces.
    """
    cfg = _config(config, settings)
    return replay_drams(cfg, [cfg.dram], progress=progress)[0]


def replay_drams(
    config: ReplayConfig | None = None, drams: list | None = None, progress: bool = False, **settings
) -> list[ReplayResult]:
    """Replay one configuration at several DRAM budgets (``drams``: sizes such as "4GB"; None = the
    device's default), reading the trace once.

    For masks that do not depend on the cache (every method but dip-ca with gamma < 1 or approximate
    selection) the masks are computed once per token for all budgets; LRU, a stack algorithm, then
    gives the hits of every capacity from one recency state, token by token, and the other policies
    run one cache per budget over the shared masks. Cache-aware masks replay each budget separately. The results
    equal separate :func:`replay` calls exactly.
    """
    cfg = _config(config, settings)
    drams = [cfg.dram] if drams is None else list(drams)
    reader = TraceReader(resolve_trace_path(cfg.trace, cfg.model))
    shape = reader.model
    if cfg.model is not None and cfg.trace is not None and cfg.model != shape.name:
        raise TraceError(
            f"trace {reader.path} records model {shape.name!r}, not --model {cfg.model!r}; "
            "drop one of --trace/--model or trace that model"
        )
    setting = resolve_setting(cfg, shape, drams)
    kinds = setting.selection.kinds
    reader.check_columns(
        sorted({k.score for k in kinds if k.score} | ({"h"} if any(k.mass for k in kinds) else set())),
        f"method {cfg.method}",
    )
    T = reader.n_tokens if cfg.tokens is None else min(cfg.tokens, reader.n_tokens)
    notes = []
    if cfg.tokens is not None and cfg.tokens > reader.n_tokens:
        notes.append(f"--tokens {cfg.tokens} is more than the trace's {reader.n_tokens} tokens; replayed all {T}")
    if T == 0:
        raise TraceError(f"trace {reader.path} has no tokens; re-create it with --tokens > 0")
    if T >= 2**31:
        raise TraceError(f"trace {reader.path} has {T} tokens; replay handles fewer than 2^31")
    if setting.cache_dependent and len(drams) > 1:
        return [replay_drams(cfg.model_copy(update={"dram": d}), [d], progress=progress)[0] for d in drams]
    selection, mems, policy = setting.selection, setting.mems, setting.policy
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=shape.n_layers * T,
            unit="tok-layer",
            unit_scale=True,
            desc="replay",
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )
    if len(mems) == 1:

        def work(layer):
            return [
                (u, h[None], k, t)
                for u, h, k, t in _replay_layer(reader, layer, T, selection, mems[0], cfg, policy, bar)
            ]
    else:

        def work(layer):
            return _replay_layer_shared(reader, layer, T, selection, mems, cfg, policy, bar)

    threads = cfg.threads or os.cpu_count() or 1
    if threads > 1:  # the kernels and Parquet decoding release the GIL
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(min(threads, shape.n_layers))
        results = pool.map(work, range(shape.n_layers))
    else:
        pool = None
        results = (work(layer) for layer in range(shape.n_layers))
    source = {
        "trace": str(reader.path),
        "trace_source": reader.meta.source,
        "trace_tokens": reader.n_tokens,
        "warnings": notes,
    }
    try:
        return summarise_layers(cfg, shape, setting, drams, results, T, source)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()


CACHE_AWARE_OPTIONS = {"gamma": 1.0, "fixed_top_n": 0, "gamma_warmup": 0, "approx_m": 0.0}
"""dip-ca's options and their neutral values: another method given one of them at another value is an error."""


def _refuse_ignored_options(cfg: ReplayConfig, aware: bool, has_split: bool) -> None:
    """No option is silently ignored: settings given explicitly that the method would not use are errors
    (a neutral value, e.g. gamma 1 for dip, is accepted, so that grids can hold it)."""
    given = cfg.model_fields_set
    if not aware:
        ignored = [f for f, neutral in CACHE_AWARE_OPTIONS.items() if f in given and getattr(cfg, f) != neutral]
        if ignored:
            flags = ", ".join("--" + f.replace("_", "-") for f in ignored)
            raise ConfigError(
                f"{flags} {'applies' if len(ignored) == 1 else 'apply'} only to cache-aware masking (dip-ca); "
                f"method {cfg.method} would ignore {'it' if len(ignored) == 1 else 'them'}: drop "
                f"{'it' if len(ignored) == 1 else 'them'} or use --method dip-ca"
            )
    if not has_split:
        ignored = [f for f in ("rho_in", "rho_d") if f in given and getattr(cfg, f) is not None]
        if ignored:
            flags = ", ".join("--" + f.replace("_", "-") for f in ignored)
            raise ConfigError(
                f"{flags} {'applies' if len(ignored) == 1 else 'apply'} only to dip and dip-ca; "
                f"method {cfg.method} has no input/down split"
            )
    if cfg.method == "dense" and "density" in given and cfg.density != 1:
        raise ConfigError(
            f"method dense uses every weight (density 1); drop --density {cfg.density:g} or pick a method"
        )


@dataclass
class Setting:
    """A configuration resolved against a model shape: what replay and eval both need."""

    device: Device
    policy: object
    selection: object
    budgets: list
    mems: list
    cache_dependent: bool


def resolve_setting(cfg: ReplayConfig, shape, drams: list) -> Setting:
    """Device, policy, method selection and memory plans of a configuration for a model shape, with the
    checks of bad combinations (SimcoreError)."""
    device = _device(cfg)
    policy = policies.load(cfg.policy)
    selection = methods.resolve(cfg.method, shape, cfg.density, rho_in=cfg.rho_in, rho_d=cfg.rho_d)
    aware = any(k.cache_aware for k in selection.kinds)
    _refuse_ignored_options(cfg, aware, "rho_in" in selection.detail)
    if cfg.overlap_compute and not device.compute_tops:
        raise ConfigError(
            f"--overlap-compute needs a compute term, but device {device.name} has no compute_tops; "
            "give a device profile with compute_tops or drop --overlap-compute"
        )
    if aware and not 0 < cfg.gamma <= 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {cfg.gamma}")
    if 0 < cfg.approx_m <= 1:
        raise ConfigError(
            f"--approx-m must be 0 (off) or above 1 (select from the top approx_m * k units), got {cfg.approx_m:g}"
        )
    cache_dependent = aware and (cfg.gamma < 1 or cfg.approx_m > 1)
    if policy.NEEDS_FUTURE and cache_dependent:
        raise ConfigError(
            f"--policy {cfg.policy} needs masks that do not depend on the cache, but {cfg.method} "
            f"with gamma {cfg.gamma} re-weights by cache state; use --policy lfu or lru, or --gamma 1"
        )
    budgets = []
    for dram in drams:
        if dram is None:
            b = int((device.dram_budget_gb or 0) * 1e9)
            if b <= 0:
                raise ConfigError(f"device {device.name} has no dram_budget_gb; give --dram (e.g. --dram 4GB)")
        else:
            b = parse_size(dram, "--dram")
            if b <= 0:
                raise ConfigError(f"--dram must be positive, got {dram!r}: it is the DRAM the model may use (e.g. 4GB)")
        budgets.append(b)
    quant = cfg.quant()
    split = tuple(cfg.kind_split) if cfg.kind_split else None
    no_cache = getattr(policy, "NO_CACHE", False)
    mlp_bpw = None
    if cfg.pruned is not None:
        model, kept, meta_bits = pruned_cost(cfg.pruned)
        if model != shape.name:
            raise ConfigError(f"--pruned {cfg.pruned} prunes {model!r}, not this trace's model {shape.name!r}")
        mlp_bpw = kept * quant.bytes_per_weight + meta_bits / 8
    mems = [
        plan(shape, selection, b, quant, cfg.context, split, cache=not no_cache, mlp_bytes_per_weight=mlp_bpw)
        for b in budgets
    ]
    return Setting(device, policy, selection, budgets, mems, cache_dependent)


def summarise_layers(
    cfg: ReplayConfig, shape, setting: Setting, drams: list, results, T: int, source: dict
) -> list[ReplayResult]:
    """Aggregate per-layer results (an iterable, in layer order, of per-kind (used (T,), hits (B, T),
    kept (T,), tot (T,))) into one ReplayResult per DRAM budget."""
    selection, mems = setting.selection, setting.mems
    n_kinds = len(selection.kinds)
    used_tok = np.zeros((n_kinds, T), np.int64)  # selected units per token, summed over layers
    hit_tok = np.zeros((len(mems), n_kinds, T), np.int64)
    records: list[list[dict]] = [[] for _ in mems]
    mass_kept = mass_tot = 0.0
    for layer, res in enumerate(results):  # in layer order, so every sum is in a fixed order
        for ki, kind in enumerate(selection.kinds):
            used, hits, kept, tot = res[ki]
            used_tok[ki] += used
            hit_tok[:, ki] += hits
            if kind.mass:
                mass_kept += float(kept.sum())
                mass_tot += float(tot.sum())
            for bi, mem in enumerate(mems):
                records[bi].append(_record(layer, kind.name, mem.kinds[ki].capacity, used, hits[bi], cfg.warmup))
    return [
        _summarise(
            cfg.model_copy(update={"dram": None if dram is None else str(dram)}),
            setting.device,
            shape,
            selection,
            mems[bi],
            used_tok,
            hit_tok[bi],
            records[bi],
            mass_kept,
            mass_tot,
            T,
            source,
            setting.budgets[bi],
        )
        for bi, dram in enumerate(drams)
    ]


def _replay_layer_shared(reader, layer, T, selection, mems: list[MemoryPlan], cfg: ReplayConfig, policy, bar):
    """One layer at several capacities over masks computed once (cache-independent masks only).
    Returns per kind (used (T,), hits (B, T), kept (T,), tot (T,))."""
    if policy is policies.load("lru"):  # one recency state serves every capacity, fed token by token
        caps = [np.array([mem.kinds[ki].capacity for mem in mems], np.int64) for ki in range(len(selection.kinds))]
        return [sim.finish() for sim in _layer_sims(reader, layer, T, selection, mems[0], cfg, policy, bar, caps)]
    sims = _layer_sims(reader, layer, T, selection, mems[0], cfg, "belady", bar)  # mask collection only
    out = []
    for ki, sim in enumerate(sims):
        used, _, kept, tot = sim.finish_masks()
        caps = np.array([mem.kinds[ki].capacity for mem in mems], np.int64)
        out.append((used, sim.hits_at(caps, policy), kept, tot))
        sim.close()
    return out


def _thresholds(reader: TraceReader, layer: int, column: str, fraction: float, calib_tokens: int) -> float:
    """cats: the score above which ``fraction`` of a layer's units lie, over its first tokens."""
    batch = next(reader.iter_layer(layer, (column,), batch_tokens=calib_tokens))[column]
    if fraction >= 1:
        return -1.0
    if fraction <= 0:
        return float(np.inf)
    return float(np.quantile(batch.astype(np.float64).ravel(), 1.0 - fraction))


class KindSim:
    """Replay of one unit kind of one layer: its mask parameters, its cache, its per-token outputs.

    Feed token batches in order with :meth:`feed`; :meth:`finish` returns per-token arrays of shape (T,):
    ``used`` (units selected), ``hits``, ``kept`` and ``tot`` (|h|^2 of selected and all units).
    Policies that need the future collect the masks and replay them in :meth:`finish`.

    Memory: O(U) for the cache plus 24 bytes per token for the outputs; policies that need the future
    add the collected masks, a bitmap of about U * T / 8 * (1 + 64 / ``mask_chunk``) bytes (0.156 U T
    at the default chunk; in a temporary file when over ``spill_bytes``), and while replaying, one
    chunk of ``mask_chunk`` tokens as index lists (8 bytes per selected unit). See ``maskstore``.
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
        mask_chunk: int = CHUNK_TOKENS,
        spill_bytes: int = SPILL_BYTES,
    ):
        pol = policies.load(policy) if isinstance(policy, str) else policy
        cap = 0 if getattr(pol, "NO_CACHE", False) else min(cap, n_units)
        self.n, self.T, self.mode, self.k, self.thr, self.cap, self.mass = n_units, T, mode, k, thr, cap, mass
        self.future = pol.NEEDS_FUTURE
        if self.future and aware and (gamma < 1 or approx_m > k):
            raise ConfigError("belady needs masks that do not depend on the cache; use gamma 1 or another policy")
        self.aware = aware and not self.future
        self.gamma, self.gamma_warmup, self.fixed_top_n, self.approx_m = gamma, gamma_warmup, fixed_top_n, approx_m
        self.pw = K.priority_weights(pol.weights(T), T)
        self.in_cache = np.zeros(n_units, np.bool_)
        self.count = np.zeros(n_units, np.int32)
        self.last = np.zeros(n_units, np.int32)
        self.next_use = np.full(n_units, K.NEVER, np.int32)
        self.state = np.zeros(K.STATE_SIZE, np.int64)
        self.used, self.hits = np.zeros(T, np.int32), np.zeros(T, np.int32)
        self.kept, self.tot = np.zeros(T), np.zeros(T)
        self.caps = None
        self.collected: MaskStore | None = None  # the collected masks of policies that need the future
        if caps is not None:  # LRU at several capacities at once (cache-independent masks)
            if pol is not policies.load("lru") or (aware and (gamma < 1 or approx_m > k)):
                raise ConfigError("several capacities at once need LRU and masks that do not depend on the cache")
            self.caps = np.minimum(np.asarray(caps, np.int64), n_units)
            self._order = np.argsort(self.caps, kind="mergesort")
            self._caps_sorted = np.ascontiguousarray(self.caps[self._order])
            self.hits_multi = np.zeros((len(self.caps), T), np.int32)
            self._last_multi = np.full(n_units, -1, np.int32)
            self._lstate_multi = np.zeros(len(self.caps) + 1, np.int64)
        elif self.future:
            self.collected = MaskStore(n_units, T, mask_chunk, spill_bytes)

    @classmethod
    def for_kind(
        cls, kind, cap: int, fraction: float, T: int, cfg: ReplayConfig, policy, thr: float = 0.0, caps=None
    ) -> KindSim:
        """The KindSim of one unit kind (a KindSpec) selecting ``fraction`` of its units under ``cfg``'s
        masking options: the one place replay and eval turn a configuration into a simulation."""
        k = int(round(fraction * kind.n_units))
        approx = min(int(round(cfg.approx_m * k)), kind.n_units) if cfg.approx_m > 1 else 0
        return cls(
            kind.n_units,
            T,
            MODES[kind.mode],
            k=k,
            thr=thr,
            cap=cap,
            policy=policy,
            aware=kind.cache_aware,
            gamma=cfg.gamma if kind.cache_aware else 1.0,
            gamma_warmup=cfg.gamma_warmup,
            fixed_top_n=cfg.fixed_top_n,
            approx_m=approx,
            mass=kind.mass,
            caps=caps,
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
        elif self.future:
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
            K.replay_batch(
                scores,
                hm,
                self.mass,
                self.mode,
                self.k,
                self.thr,
                self.aware,
                self.gamma,
                self.gamma_warmup if self.aware else 0,
                self.fixed_top_n if self.aware else 0,
                self.approx_m if self.aware else 0,
                self.cap,
                t0,
                self.in_cache,
                self.count,
                self.last,
                self.next_use,
                self.state,
                self.pw,
                self.used[sl],
                self.hits[sl],
                self.kept[sl],
                self.tot[sl],
                np.zeros((0, 0), np.bool_) if masks is None else masks,
            )

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(used, hits, kept, tot) per token; hits of shape (B, T) for a KindSim at several capacities
        (row b: ``caps[b]``), (T,) otherwise."""
        if self.caps is not None:
            return self.used, self.hits_multi, self.kept, self.tot
        if self.future:
            self.finish_masks()
            if self.cap > 0:  # no cache, no hits
                for c0, idx, ptr, nxt in self.collected.chunks(self.used):
                    K.replay_masks_at(
                        idx,
                        ptr,
                        nxt,
                        c0,
                        self.cap,
                        self.in_cache,
                        self.count,
                        self.last,
                        self.next_use,
                        self.state,
                        self.pw,
                        self.hits[c0 : c0 + len(ptr) - 1],
                    )
            self.close()
        return self.used, self.hits, self.kept, self.tot

    def finish_masks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """End the collection of the masks fed so far (policies with future knowledge collect instead of
        caching): ``self.collected`` then reads them back chunk by chunk; returns (used, hits, kept, tot)."""
        if self.collected is None:
            raise ValueError("only a KindSim whose policy needs the future collects masks")
        self.collected.finalize()
        return self.used, self.hits, self.kept, self.tot

    def close(self) -> None:
        """Release the collected masks (and their temporary file, if any)."""
        if self.collected is not None:
            self.collected.close()

    def hits_at(self, caps: np.ndarray, policy) -> np.ndarray:
        """Hits per token (B, T) of the collected masks at each capacity in ``caps`` under ``policy``:
        one recency state for LRU (a stack algorithm: the cache of capacity C is always the C most
        recent units, ties to the higher index; see ``kernels.lru_multi_step``), one cache run per
        capacity otherwise; the masks are read back one chunk at a time, each state carried over."""
        pol = policies.load(policy) if isinstance(policy, str) else policy
        caps = np.minimum(np.asarray(caps, np.int64), self.n)
        out = np.zeros((len(caps), self.T), np.int32)
        if getattr(pol, "NO_CACHE", False):
            return out
        self.finish_masks()
        n = self.n
        if pol is policies.load("lru"):
            order = np.argsort(caps, kind="mergesort")
            caps_sorted = np.ascontiguousarray(caps[order])
            last, lstate = np.full(n, -1, np.int32), np.zeros(len(caps) + 1, np.int64)
            for c0, idx, ptr, _ in self.collected.chunks(self.used):
                K.lru_stack_hits_at(idx, ptr, c0, caps_sorted, order, last, lstate, out[:, c0 : c0 + len(ptr) - 1])
            return out
        pw = K.priority_weights(pol.weights(self.T), self.T)
        caches = [  # one cache per capacity, each carried from chunk to chunk
            (
                np.zeros(n, np.bool_),
                np.zeros(n, np.int32),
                np.zeros(n, np.int32),
                np.full(n, K.NEVER, np.int32),
                np.zeros(K.STATE_SIZE, np.int64),
            )
            for _ in caps
        ]
        for c0, idx, ptr, nxt in self.collected.chunks(self.used):
            c1 = c0 + len(ptr) - 1
            if not pol.NEEDS_FUTURE:
                nxt = np.zeros_like(nxt)  # a policy without future knowledge sees no next uses
            for b, cap in enumerate(caps):
                if cap > 0:  # no cache, no hits
                    K.replay_masks_at(idx, ptr, nxt, c0, int(cap), *caches[b], pw, out[b, c0:c1])
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


def _layer_sims(
    reader, layer, T, selection, mem: MemoryPlan, cfg: ReplayConfig, policy, bar, caps: list | None = None
) -> list[KindSim]:
    """Feed tokens [0, T) of one layer to one KindSim per kind and return them (not yet finished);
    ``caps``, per kind, turns them into several-capacity LRU simulations."""
    kinds = selection.kinds
    columns = sorted({k.score for k in kinds if k.score} | ({"h"} if any(k.mass for k in kinds) else set()))
    read = tuple(columns) or ("token_id",)  # dense reads no magnitudes, only the row count
    caps = caps or [None] * len(kinds)
    sims = [
        KindSim.for_kind(
            kind,
            kp.capacity,
            frac,
            T,
            cfg,
            policy,
            _thresholds(reader, layer, kind.score, frac, cfg.cats_calib_tokens) if kind.mode == "threshold" else 0.0,
            caps=c,
        )
        for kind, kp, frac, c in zip(kinds, mem.kinds, selection.fractions, caps)
    ]
    t0 = 0
    for batch in reader.iter_layer(layer, read, batch_tokens=cfg.batch_tokens):
        nb = min(len(batch[read[0]]), T - t0)
        if nb <= 0:
            break
        for kind, sim in zip(kinds, sims):
            scores = batch[kind.score][:nb] if kind.score else np.empty((nb, 0), np.float16)
            sim.feed(scores, batch["h"][:nb] if kind.mass else None, t0)
        t0 += nb
        if bar is not None:
            bar.update(nb)
        if t0 >= T:
            break
    return sims


def _replay_layer(reader, layer, T, selection, mem: MemoryPlan, cfg: ReplayConfig, policy, bar):
    """Replay tokens [0, T) of one layer for every kind. Returns per kind (used, hits, kept, tot) arrays
    of shape (T,)."""
    return [sim.finish() for sim in _layer_sims(reader, layer, T, selection, mem, cfg, policy, bar)]


def _rate(hits: float, acc: float) -> float | None:
    return hits / acc if acc else None


def _record(layer: int, kind: str, cap: int, used: np.ndarray, hits: np.ndarray, warmup: int) -> dict:
    acc, h = int(used.sum()), int(hits.sum())
    acc_s, h_s = int(used[warmup:].sum()), int(hits[warmup:].sum())
    return {
        "layer": layer,
        "kind": kind,
        "capacity": cap,
        "accesses": acc,
        "hits": h,
        "misses": acc - h,
        "hit_rate": _rate(h, acc),
        "accesses_steady": acc_s,
        "hits_steady": h_s,
        "hit_rate_steady": _rate(h_s, acc_s),
    }


def token_time(b_dram: float, b_flash: float, ops: float, device: Device, overlap: bool = False) -> dict:
    """The throughput model of DESIGN.md for mean bytes per token: t = B_dram/BW_dram + B_flash/BW_flash
    (+ compute time ``ops / compute_tops`` when the device gives it, overlapped with I/O if asked)."""
    t_dram, t_flash = b_dram / (device.dram_bw_gbps * 1e9), b_flash / (device.flash_bw_gbps * 1e9)
    t_io = t_dram + t_flash
    t_compute = ops / (device.compute_tops * 1e12) if device.compute_tops else 0.0
    t = max(t_io, t_compute) if overlap else t_io + t_compute
    return {
        "dram_bytes_per_token": b_dram,
        "flash_bytes_per_token": b_flash,
        "ops_per_token": ops,
        "t_dram_ms": t_dram * 1e3,
        "t_flash_ms": t_flash * 1e3,
        "t_compute_ms": t_compute * 1e3,
        "t_token_ms": t * 1e3,
        "tokens_per_s": 1.0 / t,
    }


def retime(result: ReplayResult, device: Device, overlap: bool | None = None) -> ReplayResult:
    """The same replay on another device's bandwidths (and compute): the cache behaviour does not
    depend on them, so only the timing figures are recomputed from the bytes per token."""
    overlap = result.config["overlap_compute"] if overlap is None else overlap
    totals = dict(result.totals)
    for suffix in ("", "_steady"):
        t = token_time(
            totals["dram_bytes_per_token" + suffix],
            totals["flash_bytes_per_token" + suffix],
            totals["ops_per_token" + suffix],
            device,
            overlap,
        )
        totals.update({k + suffix: v for k, v in t.items()})
    config = dict(result.config, device=device.model_dump(), overlap_compute=overlap)
    return ReplayResult(config, result.memory, totals, result.kinds, result.layers)


def _summarise(
    cfg,
    device,
    shape,
    selection,
    mem: MemoryPlan,
    used_tok,
    hit_tok,
    records,
    mass_kept,
    mass_tot,
    T,
    source,
    dram_budget,
) -> ReplayResult:
    unit_bytes = np.array([k.unit_bytes for k in mem.kinds])
    weights = np.array([k.weights_per_unit for k in selection.kinds], np.float64)
    miss_tok = used_tok - hit_tok
    mlp_dram = (used_tok * unit_bytes[:, None]).sum(0)  # bytes per token, all layers
    flash = (miss_tok * unit_bytes[:, None]).sum(0)
    dram = mem.static_read_per_token + mlp_dram
    mlp_weights_tok = (used_tok * weights[:, None]).sum(0)
    density_tok = mlp_weights_tok / (shape.n_layers * shape.mlp_params_per_layer)
    sp = shape.static_params
    static_weights = sp.attention + sp.other + (sp.embedding if shape.tied else sp.lm_head)
    steady = slice(cfg.warmup, T) if T > cfg.warmup else slice(0, T)
    warnings = list(source.get("warnings") or [])
    if steady.start == 0 and cfg.warmup > 0:
        warnings.append(
            f"--warmup {cfg.warmup} is not below the {T} tokens replayed, so there is no steady state: the "
            f"steady-state figures cover all {T} tokens; give --warmup below {T}"
        )

    def timing(sl: slice) -> dict:
        ops = 2 * (static_weights + float(mlp_weights_tok[sl].mean()))  # a multiply and an add per weight
        return token_time(float(dram[sl].mean()), float(flash[sl].mean()), ops, device, cfg.overlap_compute)

    acc, hits = int(used_tok.sum()), int(hit_tok.sum())
    acc_s, hits_s = int(used_tok[:, steady].sum()), int(hit_tok[:, steady].sum())
    all_t, st_t = timing(slice(0, T)), timing(steady)
    totals = {
        "tokens": T,
        "steady_tokens": T - steady.start,
        "accesses": acc,
        "hits": hits,
        "misses": acc - hits,
        "hit_rate": _rate(hits, acc),
        "hit_rate_steady": _rate(hits_s, acc_s),
        **all_t,
        **{f"{k}_steady": v for k, v in st_t.items()},
        "mlp_density": float(density_tok.mean()),
        "mass_kept": mass_kept / mass_tot if mass_tot else 1.0,
    }
    kinds = {}
    for ki, (kind, kp) in enumerate(zip(selection.kinds, mem.kinds)):
        a, h = int(used_tok[ki].sum()), int(hit_tok[ki].sum())
        a_s, h_s = int(used_tok[ki, steady].sum()), int(hit_tok[ki, steady].sum())
        kinds[kind.name] = {
            "units_per_layer": kind.n_units,
            "capacity_per_layer": kp.capacity,
            "unit_bytes": kp.unit_bytes,
            "selected_fraction": float(used_tok[ki].mean() / (kind.n_units * shape.n_layers)),
            "accesses": a,
            "hits": h,
            "misses": a - h,
            "hit_rate": _rate(h, a),
            "hit_rate_steady": _rate(h_s, a_s),
            "flash_bytes_per_token": float(miss_tok[ki].mean() * kp.unit_bytes),
            "dram_bytes_per_token": float(used_tok[ki].mean() * kp.unit_bytes),
        }
    resolved = cfg.model_dump()
    resolved.update(
        {
            **source,
            "warnings": warnings,
            "model": shape.name,
            "device": device.model_dump(),
            "dram_bytes": dram_budget,
            "bytes_per_weight": cfg.quant().bytes_per_weight,
            "selection": selection.detail,
            "simcore_version": __version__,
        }
    )
    memory = mem.as_dict()
    return ReplayResult(resolved, memory, totals, kinds, records)
