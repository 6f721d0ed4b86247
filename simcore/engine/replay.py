"""Replay: run a trace's tokens through a masking method and per-layer DRAM caches, count hits and
bytes, and turn them into tokens per second (DESIGN.md). Public entry point: :func:`replay`.

The trace is streamed one layer at a time, ``batch_tokens`` rows at a time; each (layer, kind)
keeps its cache state between batches. Belady needs the future, so it first collects a layer's
masks (cache-independent by definition) as bitmaps (``maskstore``), then replays them chunk by
chunk, each chunk's next-use times read off the bitmaps.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from simcore import __version__, methods
from simcore.calibration import provenance
from simcore.engine import flash
from simcore.engine import layout as layout_file
from simcore.engine.result import ReplayResult
from simcore.engine.settings import (
    OPTION_OWNERS,
    ReplayConfig,
    Setting,
    config_of,
    method_options,
    neutral,
    resolve_setting,
    resolve_trace_path,
)
from simcore.engine.sim import KindSim
from simcore.engine.throughput import token_time
from simcore.errors import TraceError
from simcore.finetune.adapters import check_replay, resident_bytes
from simcore.memory import MemoryPlan
from simcore.trace.format import TraceReader


def replay(config: ReplayConfig | None = None, progress: bool = False, **settings) -> ReplayResult:
    """Replay a trace under one configuration.

    Call with a :class:`ReplayConfig` or with its fields as keywords, e.g.
    ``replay(trace="traces/smollm2-135m", device="a18", dram="64MB", method="dip-ca", gamma=0.2)``.
    Raises SimcoreError subclasses for bad settings or traces.
    """
    cfg = config_of(config, settings)
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
    cfg = config_of(config, settings)
    drams = [cfg.dram] if drams is None else list(drams)
    reader = TraceReader(resolve_trace_path(cfg.trace, cfg.model))
    shape = reader.model
    if cfg.model is not None and cfg.trace is not None and cfg.model != shape.name:
        raise TraceError(
            f"trace {reader.path} records model {shape.name!r}, not --model {cfg.model!r}; "
            "drop one of --trace/--model or trace that model"
        )
    n_use = reader.n_tokens if cfg.tokens is None else min(cfg.tokens, reader.n_tokens)
    notes = []
    lora = reader.meta.extra.get("lora")  # a trace of a model with LoRA adapters (simcore trace --lora)
    if lora:
        notes += check_replay(lora, str(reader.path), cfg.method, cfg.density, cfg.pruned)
    if cfg.tokens is None:
        n_use = _before_calibration(cfg, reader, n_use, notes)
    setting = resolve_setting(cfg, shape, drams, reader.text_use(0, n_use), aux_bytes=resident_bytes(lora))
    if setting.selection.threshold is not None:  # thresholds calibrated on the trace's first tokens: say which
        use = reader.text_use(0, min(setting.selection.calib_tokens, reader.n_tokens))
        setting.selection.detail["thresholds_from"] = provenance(shape.name, use.name, use.sha256, use.first, use.end)
    kinds = setting.selection.kinds
    reader.check_columns(
        sorted({k.score for k in kinds if k.score} | ({"h"} if any(k.mass for k in kinds) else set())),
        f"method {cfg.method}",
    )
    T = n_use
    if cfg.tokens is not None and cfg.tokens > reader.n_tokens:
        notes.append(f"--tokens {cfg.tokens} is more than the trace's {reader.n_tokens} tokens; replayed all {T}")
    if T == 0:
        raise TraceError(f"trace {reader.path} has no tokens; re-create it with --tokens > 0")
    if T >= 2**31:
        raise TraceError(f"trace {reader.path} has {T} tokens; replay handles fewer than 2^31")
    if (setting.cache_dependent or cfg.flash_model == "curve") and len(drams) > 1:
        # each budget its own caches: masks that depend on them, or Flash requests made of each one's misses
        return [replay_drams(cfg.model_copy(update={"dram": d}), [d], progress=progress)[0] for d in drams]
    reads = None
    if cfg.flash_model == "curve":
        T, reads = _flash_reads(cfg, reader, setting, T, notes)
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
                (u, h[None], k, t, r)
                for u, h, k, t, r in _replay_layer(reader, layer, T, selection, mems[0], cfg, policy, bar, reads)
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
        "lora": lora or None,
        "warnings": notes,
    }
    try:
        return summarise_layers(cfg, shape, setting, drams, results, T, source)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()


def summarise_layers(
    cfg: ReplayConfig, shape, setting: Setting, drams: list, results, T: int, source: dict
) -> list[ReplayResult]:
    """Aggregate per-layer results (an iterable, in layer order, of per-kind (used (T,), hits (B, T),
    kept (T,), tot (T,), reads)) into one ReplayResult per DRAM budget; ``reads`` is None or, under the
    curve model (one budget), the kind's Flash requests, bytes read and seconds per token (T,) each."""
    selection, mems = setting.selection, setting.mems
    n_kinds = len(selection.kinds)
    used_tok = np.zeros((n_kinds, T), np.int64)  # selected units per token, summed over layers
    hit_tok = np.zeros((len(mems), n_kinds, T), np.int64)
    read_tok = None  # Flash requests, bytes read, seconds per token and kind, summed over layers
    records: list[list[dict]] = [[] for _ in mems]
    mass_kept = mass_tot = 0.0
    for layer, res in enumerate(results):  # in layer order, so every sum is in a fixed order
        for ki, kind in enumerate(selection.kinds):
            used, hits, kept, tot, reads = res[ki]
            used_tok[ki] += used
            hit_tok[:, ki] += hits
            if reads is not None:
                if read_tok is None:
                    read_tok = np.zeros((3, n_kinds, T))
                for j in range(3):
                    read_tok[j, ki] += reads[j]
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
            method_settings(setting),
            read_tok,
        )
        for bi, dram in enumerate(drams)
    ]


def _replay_layer_shared(reader, layer, T, selection, mems: list[MemoryPlan], cfg: ReplayConfig, policy, bar):
    """One layer at several capacities over masks computed once (cache-independent masks only).
    Returns per kind (used (T,), hits (B, T), kept (T,), tot (T,))."""
    caps = [np.array([mem.kinds[ki].capacity for mem in mems], np.int64) for ki in range(len(selection.kinds))]
    if getattr(policy, "STACK", False):  # one recency state serves every capacity, fed token by token
        sims = _layer_sims(reader, layer, T, selection, mems[0], cfg, policy, bar, caps=caps)
        return [(*sim.finish(), None) for sim in sims]
    out = []
    for ki, sim in enumerate(_layer_sims(reader, layer, T, selection, mems[0], cfg, policy, bar, collect=True)):
        used, _, kept, tot = sim.finish_masks()
        out.append((used, sim.hits_at(caps[ki], policy), kept, tot, None))
        sim.close()
    return out


def _flash_reads(cfg: ReplayConfig, reader: TraceReader, setting: Setting, T: int, notes: list):
    """The curve model's inputs: ``reads(layer, kind index)`` -> the kind's ``flash.ReadSpec`` (unit and
    page bytes, the device's curve, the layout's positions), and the tokens to replay: with a layout
    computed from later tokens of this text, replay stops before them unless --tokens says otherwise
    (then an overlap is an error)."""
    layout = None
    if cfg.layout is not None:
        layout = layout_file.load(cfg.layout)
        layout_file.check_fits(layout, reader.model.name, reader.model.n_layers)
        use = reader.text_use(0, T)
        first = layout_file.text_tokens(layout)[0] - use.first  # the layout's first token, in this trace
        if cfg.tokens is None and layout_file.same_text(layout, use) and 0 < first < T:
            notes.append(
                f"replayed tokens [0, {first}): the layout {cfg.layout} was computed from later tokens of this "
                "text (give --tokens to choose)"
            )
            T = first
        layout_file.check_disjoint(layout, reader.text_use(0, T))
    return T, flash_read_specs(setting, reader.model, cfg.flash_bundle, layout)


def _before_calibration(cfg: ReplayConfig, reader: TraceReader, T: int, notes: list) -> int:
    """Tokens to replay when the method's masks come from an artefact calibrated on later tokens of this
    trace's text (``methods.calibrated_on``: dejavu's predictors): those before them, with a note, as for
    layouts (an overlap that remains is the method's error)."""
    prov = methods.calibrated_on(cfg.method, method_options(cfg))
    if prov is None:
        return T
    use = reader.text_use(0, T)
    a = int(prov["tokens"][0]) - use.first  # the artefact's first token, in this trace
    sha = prov.get("text_sha256")
    same = sha == use.sha256 if sha is not None and use.sha256 is not None else prov.get("text") == use.name
    if same and 0 < a < T:
        notes.append(
            f"replayed tokens [0, {a}): method {cfg.method} applies what was calibrated on later tokens of this "
            f"text, [{a}, {int(prov['tokens'][1]) - use.first}) of the trace (give --tokens to choose)"
        )
        return a
    return T


def flash_read_specs(setting: Setting, shape, bundle: bool = False, layout: layout_file.Layout | None = None):
    """``reads(layer, kind index)`` -> that kind's ``flash.ReadSpec`` under the curve model: unit bytes
    (memory plan), the device's page and curve, the unit positions (``layout``; None: stored order) and
    the regions a unit's slices lie in (``bundle``: a neuron's slices stored together)."""
    shape_d, shape_d_int = shape.d, shape.d_int
    device, mem = setting.device, setting.mems[0]
    curve = flash.curve_of(device.flash_curve)
    none = np.zeros(0, np.int32)

    def pieces(kind) -> int:
        """Matrices a unit's slices lie in, each its own region: a neuron unit's (d weights each) unless
        bundled; an input-channel unit (dip's W_u + W_g columns) is stored bundled."""
        if bundle or kind.n_units != shape_d_int or kind.weights_per_unit % shape_d:
            return 1
        return kind.weights_per_unit // shape_d

    page = float(device.flash_page_bytes)

    def reads(layer: int, ki: int) -> flash.ReadSpec:
        kind = setting.selection.kinds[ki]
        pos = none if layout is None else layout.positions(layer, kind.name, kind.n_units)
        return flash.ReadSpec(float(mem.kinds[ki].unit_bytes), page, curve, pos, pieces(kind))

    return reads


def _threshold(reader: TraceReader, layer: int, column: str, fraction: float, selection) -> float:
    """A threshold kind's threshold for one layer: the method's ``threshold`` over the scores of the
    layer's first ``selection.calib_tokens`` tokens of the trace."""
    batch = next(reader.iter_layer(layer, (column,), batch_tokens=selection.calib_tokens))[column]
    return selection.threshold(batch, fraction)


def _layer_sims(
    reader,
    layer,
    T,
    selection,
    mem: MemoryPlan,
    cfg: ReplayConfig,
    policy,
    bar,
    caps: list | None = None,
    collect: bool = False,
    reads=None,
) -> list[KindSim]:
    """Feed tokens [0, T) of one layer to one KindSim per kind and return them (not yet finished);
    ``caps``, per kind, turns them into several-capacity simulations of a stack policy; ``collect``
    makes them collect their masks (for :meth:`KindSim.hits_at`); ``reads(layer, kind index)`` gives
    each kind's Flash read model (``_flash_reads``)."""
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
            policy,
            _threshold(reader, layer, kind.score, frac, selection) if kind.mode == "threshold" else 0.0,
            caps=c,
            collect=collect,
            reads=None if reads is None else reads(layer, ki),
            seq_len=reader.meta.seq_len,
        )
        for ki, (kind, kp, frac, c) in enumerate(zip(kinds, mem.kinds, selection.fractions, caps))
    ]
    t0 = 0
    for batch in reader.iter_layer(layer, read, batch_tokens=cfg.batch_tokens):
        nb = min(len(batch[read[0]]), T - t0)
        if nb <= 0:
            break
        for kind, sim in zip(kinds, sims):
            scores = kind.scores(layer, batch[kind.score][:nb]) if kind.score else np.empty((nb, 0), np.float16)
            sim.feed(scores, batch["h"][:nb] if kind.mass else None, t0)
        t0 += nb
        if bar is not None:
            bar.update(nb)
        if t0 >= T:
            break
    return sims


def _replay_layer(reader, layer, T, selection, mem: MemoryPlan, cfg: ReplayConfig, policy, bar, reads=None):
    """Replay tokens [0, T) of one layer for every kind. Returns per kind (used, hits, kept, tot) arrays
    of shape (T,) and the Flash reads (requests, bytes read, seconds per token), or None."""
    sims = _layer_sims(reader, layer, T, selection, mem, cfg, policy, bar, reads=reads)
    out = []
    for sim in sims:
        res = sim.finish()
        r = sim.reads
        out.append((*res, None if r is None else (r.requests, r.bytes_read, r.seconds)))
    return out


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


def method_settings(setting: Setting) -> dict:
    """The method's options as it resolved them, the other methods' options at their neutral values (or
    None), and the density in effect: what a result records of the method."""
    out = {f: neutral(f) for f in OPTION_OWNERS}
    out.update(setting.options.model_dump(), density=setting.density)
    return out


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
    method_settings: dict,
    read_tok: np.ndarray | None = None,
) -> ReplayResult:
    """One ReplayResult from per-token sums over layers: ``used_tok``, ``hit_tok`` (kinds, T) and, under
    the curve model, ``read_tok`` (3, kinds, T): Flash requests, bytes read and seconds."""
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

    curve = read_tok is not None
    if curve:
        requests, bytes_read, seconds = read_tok.sum(1)  # per token, all layers and kinds

    def timing(sl: slice) -> dict:
        ops = 2 * (static_weights + float(mlp_weights_tok[sl].mean()))  # a multiply and an add per weight
        b_dram, b_flash = float(dram[sl].mean()), float(flash[sl].mean())
        t = token_time(b_dram, b_flash, ops, device, cfg.overlap_compute)
        if not curve:
            return t
        constant = t["tokens_per_s"]
        t_flash, b_read, n_req = float(seconds[sl].mean()), float(bytes_read[sl].mean()), float(requests[sl].mean())
        t = token_time(b_dram, b_flash, ops, device, cfg.overlap_compute, t_flash, b_read)
        t.update(
            {
                "flash_requests_per_token": n_req,
                "flash_mean_request_bytes": b_read / n_req if n_req else None,
                "flash_bytes_read_per_token": b_read,
                "read_amplification": b_read / b_flash if b_flash else None,
                "flash_effective_gbps": b_flash / t_flash / 1e9 if t_flash else None,
                "tokens_per_s_constant": constant,
            }
        )
        return t

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
        if curve:
            n_req, b_read = float(read_tok[0, ki].mean()), float(read_tok[1, ki].mean())
            kinds[kind.name].update(
                {
                    "flash_requests_per_token": n_req,
                    "flash_bytes_read_per_token": b_read,
                    "flash_mean_request_bytes": b_read / n_req if n_req else None,
                    "t_flash_ms": float(read_tok[2, ki].mean()) * 1e3,
                }
            )
    resolved = cfg.model_dump()
    resolved.update(
        {
            **method_settings,  # as the method resolved them: its options and the density in effect
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
