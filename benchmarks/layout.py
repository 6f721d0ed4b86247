"""Cost and benefit of ``simcore layout`` (simcore/flash/layout.py), single-threaded.

1. Time of ``compute_layout`` for 2,048 calibration tokens of Mistral-7B shapes (32 layers, d 4096,
   d_int 14336), dip at density 0.5: a synthetic trace (``simcore synth``, made in a temporary directory
   unless --trace gives one) of 2,048 + --eval-tokens tokens. Target: < 60 s on one core.
2. The held-out comparison on that trace: identity, frequency and computed order, Flash requests, MB
   read and ms per token (all layers), every used unit read (no cache). Synthetic units are used
   independently of one another, so no order should beat the frequency order there.
3. The same comparison on a real trace (--real, default traces/smollm2-135m when present): its last
   1,024 tokens calibrate, its first 1,024 judge, at densities 0.5, 0.3 and 0.2.
4. With --alternatives: other orders on the real trace's input kind (where the order matters; its down
   region is read whole), held-out seconds against the frequency order: the bisection without the
   validation step, a nearest-neighbour tour of the units' activation patterns (Hamming distance, as
   co-activation orderings such as Ripple's do) and the Fiedler vector of the co-activation graph.

    python benchmarks/layout.py [--trace DIR] [--real DIR] [--alternatives]
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # before numba is imported: one core
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from simcore.engine import flash  # noqa: E402
from simcore.engine.settings import ReplayConfig, resolve_setting  # noqa: E402
from simcore.engine.sim import KindSim  # noqa: E402
from simcore.flash import layout as L  # noqa: E402
from simcore.trace.format import TraceReader  # noqa: E402
from simcore.trace.synth import synth_trace  # noqa: E402

CALIB = 2048


def table(meta: dict) -> str:
    chosen = "; ".join(
        f"{kind}: " + ", ".join(f"{name} {n}" for name, n in counts.items() if n)
        for kind, counts in meta["chosen"].items()
    )
    return "\n".join(L.summary_lines(meta) + [f"  layers in each order: {chosen}"])


def mistral(args) -> None:
    with tempfile.TemporaryDirectory(prefix="simcore-layout-") as tmp:
        trace = args.trace
        if trace is None:
            trace = str(Path(tmp) / "mistral7b")
            t0 = time.perf_counter()
            synth_trace("mistral7b", CALIB + args.eval_tokens, trace, columns="x,h")
            print(f"synthesised a {CALIB + args.eval_tokens}-token mistral7b trace in {time.perf_counter() - t0:.0f} s")
        n = TraceReader(trace).n_tokens
        L.compute_layout("traces/tiny", calib_tokens=4, threads=1)  # compile (or load) the kernels first
        for validation in (L.VALIDATION, 0.0):
            t0 = time.perf_counter()
            _, meta = L.compute_layout(trace, calib_tokens=CALIB, threads=1, validation=validation)
            dt = time.perf_counter() - t0
            print(
                f"compute_layout, {meta['model']}, {CALIB} calibration tokens [{n - CALIB}, {n}), dip 0.5, one thread, "
                f"validation {validation:g}: {dt:.1f} s  (target < 60 s: {'met' if dt < 60 else 'MISSED'})"
            )
        if n > CALIB:
            t0 = time.perf_counter()
            _, meta = L.compute_layout(trace, calib_tokens=CALIB, threads=1, eval_tokens=n - CALIB)
            print(f"with the held-out comparison: {time.perf_counter() - t0:.1f} s")
            print(table(meta))


def real(args) -> None:
    if args.real is None or not Path(args.real).is_dir():
        print(f"no real trace at {args.real}; skipped the real-trace comparison")
        return
    n = TraceReader(args.real).n_tokens
    calib = n // 2
    for density in (0.5, 0.3, 0.2):
        t0 = time.perf_counter()
        _, meta = L.compute_layout(args.real, density=density, calib_tokens=calib, eval_tokens=n - calib, threads=1)
        print(f"\n{meta['model']} ({args.real}), dip density {density}: {time.perf_counter() - t0:.1f} s")
        print(table(meta))


# --- other orders, for the record ---------------------------------------------------------------------


@njit(cache=True)
def _nearest_neighbour_tour(sig, start):
    """Units in the order of a greedy tour: from ``start``, always the nearest unvisited unit by Hamming
    distance between activation patterns (``sig``: uint8[U, T])."""
    U, T = sig.shape
    done = np.zeros(U, np.bool_)
    order = np.empty(U, np.int64)
    cur = start
    for i in range(U):
        order[i] = cur
        done[cur] = True
        best, best_d = -1, T + 1
        for v in range(U):
            if not done[v]:
                d = 0
                for t in range(T):
                    d += sig[cur, t] ^ sig[v, t]
                if d < best_d:
                    best, best_d = v, d
        cur = best
    return order


def fiedler_order(masks: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Units by their entry in the second eigenvector of the normalised co-activation matrix
    D^-1/2 M^T M D^-1/2 (power iteration, the first eigenvector projected out; M^T M never formed)."""
    m = masks.astype(np.float32)
    deg = np.maximum(m.T @ (m @ np.ones(m.shape[1], np.float32)), 1e-6)
    scale = 1 / np.sqrt(deg)
    first = np.sqrt(deg) / np.linalg.norm(np.sqrt(deg))
    v = np.random.default_rng(0).standard_normal(m.shape[1]).astype(np.float32)
    for _ in range(iterations):
        v -= first * (first @ v)
        v = scale * (m.T @ (m @ (scale * v))) + v  # shifted: the eigenvalues of interest dominate
        v /= np.linalg.norm(v)
    v -= first * (first @ v)
    return np.argsort(scale * v, kind="stable")


def masks_of(trace: str, density: float, layer: int, kind_name: str):
    """(masks bool[T, U], ReadSpec) of one dip kind of one layer over the whole trace."""
    reader = TraceReader(trace)
    cfg = ReplayConfig(trace=trace, method="dip", density=density, policy="none")
    setting = resolve_setting(cfg, reader.model, ["1TB"])
    ki = next(i for i, k in enumerate(setting.selection.kinds) if k.name == kind_name)
    kind = dataclasses.replace(setting.selection.kinds[ki], mass=False)
    sim = KindSim.for_kind(kind, 0, setting.selection.fractions[ki], reader.n_tokens, "none")
    masks = np.zeros((reader.n_tokens, kind.n_units), np.bool_)
    t0 = 0
    for batch in reader.iter_layer(layer, (kind.score,), batch_tokens=256):
        nb = len(batch[kind.score])
        sim.feed(batch[kind.score], None, t0, masks=masks[t0 : t0 + nb])
        t0 += nb
    curve = flash.curve_of(L.FALLBACK_CURVE)
    return masks, flash.ReadSpec(
        setting.mems[0].kinds[ki].unit_bytes, float(L.FALLBACK_PAGE), curve, np.zeros(0, np.int32)
    )


def alternatives(args) -> None:
    if args.real is None or not Path(args.real).is_dir():
        return
    n_layers = TraceReader(args.real).model.n_layers
    layers = sorted({0, n_layers // 3, 2 * n_layers // 3, n_layers - 1})
    print(
        f"\nother orders, {args.real} input kind, layers {layers}: held-out Flash seconds against the frequency order"
    )
    names = ("frequency", "bisection + validation", "bisection", "nearest-neighbour tour", "Fiedler vector")
    print(f"  {'density':<8}" + "".join(f"{name:>24}" for name in names))
    for density in (0.5, 0.3, 0.2):
        total = dict.fromkeys(names, 0.0)
        for layer in layers:
            masks, spec = masks_of(args.real, density, layer, "input")
            half = masks.shape[0] // 2
            held, calib = masks[:half], masks[half:]
            block = L.block_units(spec)
            freq = L.frequency_order(calib)
            sig = np.ascontiguousarray(calib.T).view(np.uint8)
            orders = {
                "frequency": freq,
                "bisection + validation": L.choose_order(calib, block, spec)[0],
                "bisection": L.bisection_order(calib, block),
                "nearest-neighbour tour": _nearest_neighbour_tour(sig, int(freq[0])),
                "Fiedler vector": fiedler_order(calib),
            }
            pos = {name: L.positions(o) for name, o in orders.items()}
            got = L.evaluate_orders(held, pos, spec.unit_bytes, spec.page, spec.curve, spec.pieces)
            for name in names:
                total[name] += got[name]["seconds"]
        ref = total["frequency"]
        print(f"  {density:<8}" + "".join(f"{100 * (total[name] / ref - 1):>+23.2f}%" for name in names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", help="a mistral7b trace of more than 2048 tokens (default: synthesise one)")
    ap.add_argument("--eval-tokens", type=int, default=512, help="held-out tokens of the synthesised trace")
    ap.add_argument("--real", default="traces/smollm2-135m", help="a real trace for the held-out comparison")
    ap.add_argument("--alternatives", action="store_true", help="also compare other orders on the real trace")
    args = ap.parse_args()
    mistral(args)
    real(args)
    if args.alternatives:
        alternatives(args)


if __name__ == "__main__":
    main()
