"""``simcore layout``: order each (layer, kind)'s units in Flash so that the units a token uses lie
together, computed from a method's masks on calibration tokens of a trace (DESIGN.md, "How Flash is
read"; the file format is ``simcore.engine.layout``).

The idea is that of document reordering for compressed indexes, recursive graph bisection (Dhulipala
et al., "Compressing graphs and indexes with recursive graph bisection", KDD 2016): units play the
documents, tokens the queries. The units are split in two halves, and units swap halves while that
lowers a cost summed over tokens; then each half is split again, down to blocks of ``block`` units. The
cost of a token in a half of n units of which it uses d is the expected number of blocks it touches,
(n / block) (1 - (1 - d / n)^block): the read model reads a block whose units the token does not use
only through a gap of at most ``block - 1`` units (``flash.gap_units``), so untouched blocks are what a
layout saves. The split starts from the order by use frequency, so frequently used units stay together.

Each (layer, kind) then keeps whichever of that order, the frequency order and the stored order reads
the last quarter of the calibration tokens fastest when computed from the rest (:func:`choose_order`):
where co-activation does not carry over to other tokens, a layout falls back to the frequency order
rather than fit noise.

Why this algorithm (``benchmarks/layout.py`` measures it against the alternatives): the read model
rewards long holes, not neighbours that look alike. A nearest-neighbour tour of the units' activation
patterns (Ripple's co-activation ordering) reads more than the frequency order on held-out tokens of a
real trace; the Fiedler vector of the co-activation graph, blind to how often units are used, reads far
more at low densities; the bisection, whose cost counts the blocks a token touches, reads less at every
density measured. Where units are used independently of one another (``simcore synth`` traces) no order
beats the frequency order, and the validation keeps it.

Kinds of mode "all" are read whole every token: they keep the stored order. Cache-aware methods
(dip-ca) select by the cache's contents; their layout is computed from the same method's masks without
the cache re-weighting (dip's), and the metadata says so.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np
from numba import njit

from simcore import __version__
from simcore.calibration import token_ranges
from simcore.config import NJIT, NJIT_REDUCE
from simcore.device import override
from simcore.engine import flash
from simcore.engine import layout as layout_file
from simcore.engine.replay import _threshold, flash_read_specs
from simcore.engine.settings import config_of, resolve_setting, resolve_trace_path
from simcore.engine.sim import KindSim
from simcore.errors import ConfigError, TraceError
from simcore.methods.base import KindSpec, Selection
from simcore.trace.format import TraceReader

ALGORITHM = "bisection"
"""The name recorded in a layout's metadata."""
ITERATIONS = 12
"""Swap rounds per bisection (most splits settle in fewer)."""
VALIDATION = 0.25
"""Share of the calibration tokens (the last ones) that chooses between the computed, frequency and stored
orders; 0: take the computed one unchecked."""
DEFAULT_DEVICE = "snapdragon-8-gen3"
FALLBACK_CURVE = [[4096, 0.45], [524288, 3.5]]
"""The read curve used for a device profile without ``flash_curve``: UFS 4.0 on a Snapdragon 8 Gen 3
phone, 450 MB/s random at 4 KB and 3.5 GB/s at 512 KB (DESIGN.md), with 4096-byte pages."""
FALLBACK_PAGE = 4096
ORDERS = ("identity", "frequency", "layout")
"""The orders the held-out comparison reports: stored, by use frequency, computed."""


# --- kernels --------------------------------------------------------------------------------------------


@njit(**NJIT)
def _touched(d, n, block):
    """Expected blocks of ``block`` units touched by a token using ``d`` of ``n`` units placed at random."""
    if d <= 0:
        return 0.0
    if d >= n:
        return n / block
    return (n / block) * (1.0 - (1.0 - d / n) ** block)


@njit(**NJIT)
def _savings(deg1, deg2, f1, f2, save1, save2):
    """Per token (``deg1``, ``deg2``: the units it uses in each half), the cost saved by moving one of
    its units out of the first half (``save1``) or out of the second (``save2``); ``f1``, ``f2``: the
    halves' costs by units used (float64[n + 2])."""
    for t in range(deg1.shape[0]):
        a, b = deg1[t], deg2[t]
        save1[t] = (f1[a] - f1[max(a - 1, 0)]) + (f2[b] - f2[b + 1])
        save2[t] = (f2[b] - f2[max(b - 1, 0)]) + (f1[a] - f1[a + 1])


@njit(**NJIT_REDUCE)
def _bisect(sig, order, block, iterations):
    """Recursive bisection of ``order`` (int64[U], the units in their initial order; rearranged in place)
    over the units' activation patterns ``sig`` (uint8[U, T]: 1 where token t uses unit u), down to
    segments of at most ``block`` units (see the module docstring). A split runs at most ``iterations``
    swap rounds: the units of each half are ranked by the cost their move to the other half saves, and
    the i-th of one half is paired with the i-th of the other while the two savings sum to more than 0;
    a pair swaps if the swap, evaluated exactly with the swaps before it made, still saves. (Applying the
    ranked pairs unchecked, as Dhulipala et al. do, lets two groups of co-activated units split half and
    half between the halves trade places forever: each unit gains by joining its group's other half.)

    The savings are float32 sums over tokens, so NJIT_REDUCE (their order may change) lets them vectorise."""
    U, T = sig.shape
    deg1 = np.zeros(T, np.int32)  # per token: used units in the first half, the second half
    deg2 = np.zeros(T, np.int32)
    save1 = np.zeros(T, np.float32)  # per token: the cost a move out of the first half saves
    save2 = np.zeros(T, np.float32)
    gains = np.zeros(U, np.float32)
    f1 = np.zeros(U + 2, np.float64)  # _touched(d) for each half's size, d = 0 .. n + 1
    f2 = np.zeros(U + 2, np.float64)
    stack = np.zeros((64, 2), np.int64)  # segments still to split, depth first
    stack[0, 0], stack[0, 1] = 0, U
    top = 1
    while top > 0:
        top -= 1
        lo, hi = stack[top, 0], stack[top, 1]
        n = hi - lo
        if n <= block or n < 2:
            continue
        mid = lo + n // 2
        n1, n2 = mid - lo, hi - mid
        for d in range(n1 + 2):
            f1[d] = _touched(min(d, n1), n1, block)
        for d in range(n2 + 2):
            f2[d] = _touched(min(d, n2), n2, block)
        deg1[:] = 0
        deg2[:] = 0
        for i in range(lo, hi):
            row = sig[order[i]]
            deg = deg1 if i < mid else deg2
            for t in range(T):
                deg[t] += row[t]
        for _ in range(iterations):
            _savings(deg1, deg2, f1, f2, save1, save2)
            for i in range(lo, hi):
                row = sig[order[i]]
                save = save1 if i < mid else save2
                s = np.float32(0.0)
                for t in range(T):
                    s += row[t] * save[t]
                gains[i] = s
            best1 = np.argsort(-gains[lo:mid], kind="mergesort") + lo
            best2 = np.argsort(-gains[mid:hi], kind="mergesort") + mid
            swapped = 0
            for j in range(min(n1, n2)):
                i1, i2 = best1[j], best2[j]
                if gains[i1] + gains[i2] <= 0:
                    break
                u, v = order[i1], order[i2]
                ru, rv = sig[u], sig[v]
                exact = np.float32(0.0)  # what the swap saves now, with the swaps before it made
                for t in range(T):
                    both = ru[t] & rv[t]
                    exact += (ru[t] - both) * save1[t] + (rv[t] - both) * save2[t]
                if exact <= 0:
                    continue
                for t in range(T):
                    step = np.int32(rv[t]) - np.int32(ru[t])
                    deg1[t] += step
                    deg2[t] -= step
                _savings(deg1, deg2, f1, f2, save1, save2)
                order[i1], order[i2] = v, u
                swapped += 1
            if swapped == 0:
                break
        stack[top, 0], stack[top, 1] = mid, hi
        stack[top + 1, 0], stack[top + 1, 1] = lo, mid
        top += 2
    return order


# --- orders ---------------------------------------------------------------------------------------------


def positions(order: np.ndarray) -> np.ndarray:
    """int32[U]: the Flash position of each unit, from ``order`` (the units in Flash order)."""
    pos = np.empty(len(order), np.int32)
    pos[np.asarray(order)] = np.arange(len(order), dtype=np.int32)
    return pos


def frequency_order(masks: np.ndarray) -> np.ndarray:
    """int64[U]: the units by decreasing use count in ``masks`` (bool[T, U]), ties by unit index."""
    return np.argsort(-np.asarray(masks).sum(0, dtype=np.int64), kind="stable")


def bisection_order(masks: np.ndarray, block: int, iterations: int = ITERATIONS) -> np.ndarray:
    """int64[U]: the units in the order recursive bisection gives them (module docstring), from the
    selections ``masks`` (bool[T, U]) of calibration tokens; ``block`` >= 1: the units of a gap the read
    model reads through, plus one (:func:`block_units`)."""
    masks = np.asarray(masks, np.bool_)
    if masks.ndim != 2:
        raise ValueError(f"masks must be bool[T, U], got shape {masks.shape}")
    sig = np.ascontiguousarray(masks.T).view(np.uint8)
    return _bisect(sig, frequency_order(masks), max(int(block), 1), int(iterations))


def block_units(spec: flash.ReadSpec) -> int:
    """Units of the longest gap the read model reads through, plus one: the smallest hole a token's
    read skips (at least one page's worth of units)."""
    piece = spec.unit_bytes / spec.pieces
    return flash.gap_units(flash.cost_table(spec.curve, spec.page), spec.page, piece) + 1


def choose_order(
    masks: np.ndarray, block: int, spec: flash.ReadSpec, iterations: int = ITERATIONS, validation: float = VALIDATION
) -> tuple[np.ndarray, str]:
    """The order of the units (int64[U]) for calibration selections ``masks`` (bool[T, U]) and its name:
    "bisection" (:func:`bisection_order`), "frequency" or "identity", whichever, computed from the first
    tokens, reads the last ``validation`` share of them fastest under ``spec``'s read model (ties: the
    frequency order, then the bisection's), then computed from all of them. Without a token on either
    side of the split: "bisection"."""
    T, U = masks.shape
    n_val = int(round(T * validation))
    best = "bisection"
    if 0 < n_val < T:
        fit, val = masks[: T - n_val], masks[T - n_val :]
        trial = {  # ties go to the first: an order is only changed for one that reads faster
            "frequency": positions(frequency_order(fit)),
            "bisection": positions(bisection_order(fit, block, iterations)),
            "identity": np.arange(U, dtype=np.int32),
        }
        figures = evaluate_orders(val, trial, spec.unit_bytes, spec.page, spec.curve, spec.pieces)
        best = min(trial, key=lambda name: figures[name]["seconds"])  # the first of equals
    if best == "bisection":
        return bisection_order(masks, block, iterations), best
    if best == "frequency":
        return frequency_order(masks), best
    return np.arange(U, dtype=np.int64), best


def evaluate_orders(
    masks: np.ndarray, orders: dict, unit_bytes: float, page: float, curve: flash.Curve, pieces: int = 1
) -> dict:
    """The Flash reads of tokens ``masks`` (bool[T, U], the units each uses) under each order of
    ``orders`` (name -> int32[U] unit positions), every used unit read (no cache).

    Returns name -> {"requests", "bytes_read", "seconds"}: means per token, under the read model of
    ``simcore.engine.flash`` (``unit_bytes`` per unit, ``page`` bytes, ``curve``; ``pieces``: regions a
    unit is split over)."""
    masks = np.asarray(masks, np.bool_)
    T, U = masks.shape
    out = {}
    for name, pos in orders.items():
        pos = np.ascontiguousarray(pos, np.int32)
        if pos.shape != (U,):
            raise ValueError(f"order {name!r} has {pos.shape[0]} positions, the masks {U} units")
        placed = np.zeros((T, flash.words(U) * 64), np.bool_)
        placed[:, pos] = masks  # placed[t, pos[u]] = masks[t, u]
        bits = np.packbits(placed, axis=1, bitorder="little").view("<u8").astype(np.uint64)
        reads = flash.Reads(flash.ReadSpec(float(unit_bytes), float(page), curve, pos, pieces), U, T)
        reads.account(bits, 0)
        out[name] = {
            "requests": float(reads.requests.mean()) if T else 0.0,
            "bytes_read": float(reads.bytes_read.mean()) if T else 0.0,
            "seconds": float(reads.seconds.mean()) if T else 0.0,
        }
    return out


# --- a layout from a trace ------------------------------------------------------------------------------


class _Kind(NamedTuple):
    """A kind to order: its index in the method's selection, its KindSpec without cache re-weighting,
    the fraction of its units selected and its block (:func:`block_units`)."""

    index: int
    spec: KindSpec
    fraction: float
    block: int


@dataclasses.dataclass
class _Plan:
    """What each layer's work needs: the trace, the method's selection, the kinds to order, the read
    model (``reads(layer, kind index)`` -> ``flash.ReadSpec``), the calibration and held-out token ranges
    and the bisection's settings."""

    reader: TraceReader
    selection: Selection
    kinds: list[_Kind]
    reads: object
    calib: tuple[int, int]
    held: tuple[int, int]
    iterations: int
    validation: float
    batch_tokens: int


def _plan(
    trace,
    model,
    method,
    density,
    options,
    calib_tokens,
    first,
    device,
    eval_tokens,
    iterations,
    validation,
    batch_tokens,
):
    if iterations < 0:
        raise ConfigError(f"--iterations must be >= 0, got {iterations}")
    if not 0 <= validation < 1:  # also false for NaN
        raise ConfigError(
            f"--validation must be in [0, 1), got {validation}: the share of calibration tokens held back"
        )
    settings = {"trace": trace, "model": model, "method": method, "policy": "none", "device": device}
    if density is not None:
        settings["density"] = density
    cfg = config_of(None, {**{k: v for k, v in settings.items() if v is not None}, **(options or {})})
    reader = TraceReader(resolve_trace_path(cfg.trace, cfg.model))
    shape = reader.model
    if cfg.model is not None and cfg.trace is not None and cfg.model != shape.name:
        raise TraceError(
            f"trace {reader.path} records model {shape.name!r}, not --model {cfg.model!r}; "
            "drop one of --trace/--model or trace that model"
        )
    setting = resolve_setting(cfg, shape, ["1TB"])  # the DRAM budget changes no unit's bytes
    notes = []
    if setting.device.flash_curve is None:
        notes.append(
            f"device {setting.device.name} has no flash_curve; the reads were modelled on "
            f"{FALLBACK_CURVE} (bytes, GB/s) with {FALLBACK_PAGE}-byte pages"
        )
        dev = override(setting.device, flash_curve=FALLBACK_CURVE, flash_page_bytes=FALLBACK_PAGE)
        setting = dataclasses.replace(setting, device=dev)
    sel = setting.selection
    kinds = [(ki, dataclasses.replace(k, reweight=None, mass=False)) for ki, k in enumerate(sel.kinds)]
    kinds = [(ki, k) for ki, k in kinds if k.mode != "all"]
    if not kinds:
        raise ConfigError(
            f"method {method} reads every unit of every kind every token, so the order in Flash changes "
            "nothing; compute a layout for a sparse method (dip, dip-ca, glu, ...)"
        )
    reader.check_columns(sorted({k.score for _, k in kinds}), f"method {method}")
    if reader.n_tokens == 0:
        raise TraceError(f"trace {reader.path} has no tokens; re-create it with --tokens > 0")
    calib, held = token_ranges(
        reader.n_tokens, calib_tokens, first, eval_tokens, " (and leave some before them to judge the layout on)"
    )
    reads = flash_read_specs(setting, shape)
    ordered = [_Kind(ki, k, sel.fractions[ki], block_units(reads(0, ki))) for ki, k in kinds]
    plan = _Plan(reader, sel, ordered, reads, calib, held, iterations, validation, batch_tokens)
    return plan, setting, notes


def _layer(plan: _Plan, layer: int):
    """One layer: each kind's masks on the calibration and held-out tokens, its order, and the held-out
    comparison. Returns [(kind name, pos, the order's name, {order: reads} or None)]."""
    (c0, c1), (h0, h1) = plan.calib, plan.held
    stop = max(c1, h1)
    sims, cal, held = [], [], []
    for kind in plan.kinds:
        k, frac = kind.spec, kind.fraction
        thr = _threshold(plan.reader, layer, k.score, frac, plan.selection) if k.mode == "threshold" else 0.0
        sims.append(KindSim.for_kind(k, 0, frac, stop, "none", thr))
        cal.append(np.zeros((c1 - c0, k.n_units), np.bool_))
        held.append(np.zeros((h1 - h0, k.n_units), np.bool_))
    columns = tuple(sorted({kind.spec.score for kind in plan.kinds}))
    t0 = 0
    for batch in plan.reader.iter_layer(layer, columns, batch_tokens=plan.batch_tokens):
        nb = min(len(batch[columns[0]]), stop - t0)
        if nb <= 0:
            break
        for kind, sim, mc, mh in zip(plan.kinds, sims, cal, held):
            scores = kind.spec.scores(layer, batch[kind.spec.score])
            for (a, b), out in (((c0, c1), mc), ((h0, h1), mh)):
                lo, hi = max(a, t0), min(b, t0 + nb)
                if lo < hi:
                    sim.feed(scores[lo - t0 : hi - t0], None, lo, masks=out[lo - a : hi - a])
        t0 += nb
        if t0 >= stop:
            break
    out = []
    for kind, mc, mh in zip(plan.kinds, cal, held):
        k, spec = kind.spec, plan.reads(layer, kind.index)
        order, chosen = choose_order(mc, kind.block, spec, plan.iterations, plan.validation)
        pos = positions(order)
        compared = None
        if h1 > h0:
            orders = {
                "identity": np.arange(k.n_units, dtype=np.int32),
                "frequency": positions(frequency_order(mc)),
                "layout": pos,
            }
            compared = evaluate_orders(mh, orders, spec.unit_bytes, spec.page, spec.curve, spec.pieces)
        out.append((k.name, pos, chosen, compared))
    return out


def compute_layout(
    trace: str | None = None,
    method: str = "dip",
    density: float | None = None,
    calib_tokens: int = 2048,
    first: int | None = None,
    *,
    options: dict | None = None,
    model: str | None = None,
    device: str = DEFAULT_DEVICE,
    eval_tokens: int = 0,
    iterations: int = ITERATIONS,
    validation: float = VALIDATION,
    threads: int = 0,
    batch_tokens: int = 256,
    progress: bool = False,
) -> tuple[dict, dict]:
    """A Flash layout of a trace's model for ``method`` at ``density`` (None: the settings' default, 0.5)
    with the method's ``options`` (e.g. ``{"rho_in": 0.3}``: they change its masks), from the method's masks on ``calib_tokens`` tokens starting at ``first`` (default: the trace's last
    ones, so that replay can use those before them). ``device``'s read curve (or :data:`FALLBACK_CURVE`)
    sets the block size the bisection aims at; ``eval_tokens`` > 0 also compares the orders on that many
    held-out tokens (just before the calibration tokens, or after them when they start at 0).
    ``iterations``, ``validation``: see :func:`bisection_order` and :func:`choose_order`.
    ``threads``: layers computed side by side (0: one per core); the result does not depend on it.

    Returns (pos, meta): pos {(layer, kind): int32[U] Flash positions}, every kind included (those read
    whole in the stored order); meta: ``simcore.engine.layout``'s keys, plus ``device``, ``block_units``,
    ``iterations``, ``validation``, ``chosen`` (per kind: how many layers kept each order), ``masks``
    (whose masks were used), ``options`` and ``selection`` (the method's) and, with ``eval_tokens``,
    ``held_out`` (per kind, per order: requests, bytes read and seconds per token, summed over layers).
    Raises ConfigError or TraceError for bad settings or traces."""
    plan, setting, notes = _plan(
        trace,
        model,
        method,
        density,
        options,
        calib_tokens,
        first,
        device,
        eval_tokens,
        iterations,
        validation,
        batch_tokens,
    )
    shape = plan.reader.model
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=shape.n_layers, unit="layer", desc="layout", file=sys.stderr, leave=False, dynamic_ncols=True)
    threads = threads or os.cpu_count() or 1
    pool = None
    if threads > 1:  # the kernels and Parquet decoding release the GIL
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(min(threads, shape.n_layers))
        results = pool.map(lambda layer: _layer(plan, layer), range(shape.n_layers))
    else:
        results = (_layer(plan, layer) for layer in range(shape.n_layers))
    pos: dict = {}
    held: dict = {}
    chosen = {kind.spec.name: dict.fromkeys(("bisection", "frequency", "identity"), 0) for kind in plan.kinds}
    try:
        for layer, res in enumerate(results):
            for name, p, how, compared in res:
                pos[(layer, name)] = p
                chosen[name][how] += 1
                for order, figures in (compared or {}).items():
                    acc = held.setdefault(name, {}).setdefault(order, dict.fromkeys(figures, 0.0))
                    for key, v in figures.items():
                        acc[key] += v
            if bar is not None:
                bar.update(1)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    sel = setting.selection
    for k in sel.kinds:  # read whole every token: the stored order
        if k.mode == "all":
            for layer in range(shape.n_layers):
                pos[(layer, k.name)] = np.arange(k.n_units, dtype=np.int32)
    masks = method
    if sel.cache_dependent:
        masks = f"{method} without its cache re-weighting (its masks depend on the cache; these do not)"
    dev = setting.device
    meta = {
        "model": shape.name,
        "n_layers": shape.n_layers,
        "kinds": {k.name: k.n_units for k in sel.kinds},
        "trace": str(plan.reader.path),
        "text": plan.reader.meta.source,
        "text_sha256": (plan.reader.meta.extra or {}).get("text_sha256"),
        "offset": int((plan.reader.meta.extra or {}).get("offset") or 0),
        "tokens": list(plan.calib),
        "method": method,
        "density": setting.density,
        "algorithm": ALGORITHM,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": {"name": dev.name, "flash_curve": [list(p) for p in dev.flash_curve], "page": dev.flash_page_bytes},
        "block_units": {kind.spec.name: kind.block for kind in plan.kinds},
        "iterations": plan.iterations,
        "validation": plan.validation,
        "chosen": chosen,
        "masks": masks,
        "options": setting.options.model_dump(),
        "selection": sel.detail,
        "simcore_version": __version__,
        "notes": notes,
    }
    if held:
        meta["held_out"] = {"tokens": list(plan.held), "kinds": held}
    return pos, meta


def write_layout(out: str | os.PathLike, trace: str | None = None, **settings) -> dict:
    """:func:`compute_layout` (``settings``: its keywords) written to ``out`` (a ``.npz`` path, written
    atomically); returns the metadata."""
    if Path(out).suffix != ".npz":
        raise ConfigError(f"--out: a layout file ends in .npz; got {str(out)!r}")
    pos, meta = compute_layout(trace, **settings)
    layout_file.save(out, pos, meta)
    return meta


# --- the command ------------------------------------------------------------------------------------------


def summary_lines(meta: dict) -> list[str]:
    """The held-out comparison of a layout's metadata as text lines (empty without one)."""
    held = meta.get("held_out")
    if not held:
        return []
    a, b = held["tokens"]
    w = max(8, *(len(kind) for kind in held["kinds"]))
    lines = [
        f"held-out tokens [{a}, {b}), every used unit read from Flash, all {meta['n_layers']} layers, "
        f"device {meta['device']['name']}:",
        f"  {'kind':<{w}} {'order':<10} {'requests/token':>15} {'MB read/token':>14} {'ms/token':>10} {'vs frequency':>13}",
    ]
    for kind, orders in held["kinds"].items():
        ref = orders["frequency"]["seconds"]
        for name in ORDERS:
            f = orders[name]
            change = f"{100 * (f['seconds'] / ref - 1):+.2f} %" if ref else ""
            lines.append(
                f"  {kind:<{w}} {name:<10} {f['requests']:>15.1f} {f['bytes_read'] / 1e6:>14.3f} "
                f"{1e3 * f['seconds']:>10.3f} {change:>13}"
            )
    return lines


@click.command(name="layout")
@click.option("--trace", help="trace directory (default: traces/<model>)")
@click.option("--model", help="model alias; short for --trace traces/NAME (default smollm2-135m)")
@click.option("--method", default="dip", show_default=True, help="masking method whose masks the layout serves")
@click.option("--density", type=float, help="target MLP density  [default: 0.5]")
@click.option("--rho-in", type=float, help="dip/dip-ca: input-channel density (the split changes the masks)")
@click.option("--rho-d", type=float, help="dip/dip-ca: down-channel density")
@click.option(
    "--calib-tokens", type=int, default=2048, show_default=True, help="tokens of the trace the layout is computed from"
)
@click.option("--first", type=int, help="first calibration token  [default: the trace's last --calib-tokens tokens]")
@click.option(
    "--eval-tokens",
    type=int,
    default=2048,
    show_default=True,
    help="held-out tokens (before the calibration ones, or after them with --first 0) to compare orders on; 0: none",
)
@click.option(
    "--device",
    default=DEFAULT_DEVICE,
    show_default=True,
    help="device profile whose Flash read curve the layout aims at (without flash_curve: a UFS 4.0 curve)",
)
@click.option("--iterations", type=int, default=ITERATIONS, show_default=True, help="swap rounds per bisection")
@click.option(
    "--validation",
    type=float,
    default=VALIDATION,
    show_default=True,
    help="share of the calibration tokens (the last) that picks the computed, frequency or stored order per "
    "layer and kind; 0: always the computed one",
)
@click.option(
    "--threads", type=int, default=0, show_default=True, help="layers computed side by side (0: one per core)"
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="layout file to write (FILE.npz)")
@click.option("--progress/--no-progress", default=None, help="progress bar on stderr (default: when a terminal)")
def layout_command(
    trace,
    model,
    method,
    density,
    rho_in,
    rho_d,
    calib_tokens,
    first,
    eval_tokens,
    device,
    iterations,
    validation,
    threads,
    out,
    progress,
):
    """Compute a Flash layout: put units that tokens use together next to each other in Flash, from a
    method's masks on calibration tokens of a trace; `replay --flash-model curve --layout FILE` reads it.

    \b
    Example:
      simcore layout --model smollm2-135m --method dip --density 0.5 --calib-tokens 1024 --out layouts/smollm2.npz
    """
    meta = write_layout(
        out,
        trace,
        model=model,
        method=method,
        density=density,
        options={k: v for k, v in (("rho_in", rho_in), ("rho_d", rho_d)) if v is not None},
        calib_tokens=calib_tokens,
        first=first,
        device=device,
        eval_tokens=eval_tokens,
        iterations=iterations,
        validation=validation,
        threads=threads,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    for note in meta["notes"]:
        click.echo(f"simcore: note: {note}", err=True)
    a, b = meta["tokens"]
    blocks = ", ".join(f"{k} {v}" for k, v in meta["block_units"].items())
    click.echo(
        f"wrote {out}: {meta['model']} layout for {meta['method']} at density {meta['density']:g}, from tokens "
        f"[{a}, {b}) of {meta['trace']} (blocks of {blocks} units)"
    )
    for kind, counts in meta["chosen"].items():
        kept = ", ".join(f"{name} {n}" for name, n in counts.items() if n)
        click.echo(f"  {kind}: layers in each order: {kept}")
    lines = summary_lines(meta)
    click.echo(
        "\n".join(lines) if lines else "no held-out tokens to compare orders on (the calibration covers the trace)"
    )
