"""Sweep speed (issue #5): a DRAM sweep of 8 sizes x 2 Flash speeds for one method whose masks do not
depend on the cache (dip, LRU), timed as (a) 16 independent replays and (b) one sweep, and a
4-task grid on 1 versus 2 worker processes.

Writing results (issue 11): a 2,000-task grid (dip-ca, 50 densities x 10 gammas x 2 policies x 2 bit
widths) on a 16-token synthetic SmolLM2-135M trace, reporting the time spent writing results (log lines,
the table merges, the grid file) as a fraction of the sweep's wall time (target < 10 %).

    python benchmarks/sweep.py [--trace DIR] [--tokens 256] [--repeat 3] [--part all|speed|writes]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replay import ensure_trace  # noqa: E402

from simcore.engine.replay import replay, replay_drams  # noqa: E402
from simcore.sweep import Grid, run_sweep, sweep_stats  # noqa: E402
from simcore.trace.synth import synth_trace  # noqa: E402

DRAMS = ["1GB", "1.25GB", "1.5GB", "2GB", "2.5GB", "3GB", "4GB", "5GB"]
FLASH = ["1", "2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, default=Path("traces") / "mistral7b-synth-512")
    ap.add_argument("--tokens", type=int, default=256, help="tokens of the trace replayed")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of (a) and (b) run back to back")
    ap.add_argument("--part", choices=("all", "speed", "writes"), default="all", help="which benchmarks to run")
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the 2,000-task grid")
    args = ap.parse_args()
    if args.part in ("all", "speed"):
        speed(args)
    if args.part in ("all", "writes"):
        writes(args.workers)


def writes(workers: int) -> None:
    """The share of a 2,000-task sweep's wall time spent writing its results."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = synth_trace("smollm2-135m", 16, Path(tmp) / "smol16", seed=0)
        grid = Grid(
            {
                "density": [round(0.2 + 0.01 * i, 2) for i in range(50)],
                "gamma": [round(0.1 * i, 1) for i in range(1, 11)],
                "policy": ["lru", "lfu"],
                "bits": [4.0, 8.0],
            },
            {"trace": str(trace), "method": "dip-ca", "dram": "128MB", "warmup": 4},
        )
        replay(trace=str(trace), method="dip-ca", dram="128MB", tokens=2)  # load the compiled kernels
        t0 = time.perf_counter()
        table = run_sweep(grid, Path(tmp) / "r.parquet", workers=workers)
        wall = time.perf_counter() - t0
        stats = sweep_stats(table)
        ok = sum(r == "ok" for r in table.column("status").to_pylist())
        print(
            f"2,000-task grid ({table.num_rows} configurations, {ok} ok), smollm2-135m synthetic, 16 tokens, "
            f"{workers} worker(s): wall {wall:.1f} s, writing results {stats['write_s']:.2f} s = "
            f"{100 * stats['write_s'] / wall:.1f} % of the wall time (target < 10 %)"
        )
        t0 = time.perf_counter()
        again = run_sweep(grid, Path(tmp) / "r.parquet", workers=workers)
        print(
            f"resuming the finished grid (all {sweep_stats(again)['reused']} rows reused): "
            f"{time.perf_counter() - t0:.2f} s"
        )


def speed(args) -> None:
    ensure_trace(args.trace, 512)
    fixed = dict(trace=str(args.trace), tokens=args.tokens, method="dip", density=0.5, policy="lru", threads=1)
    # load the compiled kernels of both paths (one budget; several at once), so neither timing below
    # includes loading them from Numba's cache
    replay(**{**fixed, "tokens": 2}, dram="2GB")
    replay_drams(**{**fixed, "tokens": 2}, drams=DRAMS[:2])

    with tempfile.TemporaryDirectory() as tmp:
        grid = Grid({"dram": DRAMS, "flash_bw": FLASH}, fixed)
        # rounds of (a) then (b): each ratio compares runs of the same minute (this machine's speed
        # drifts); the median round is reported
        rounds = []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            separate = [replay(**fixed, dram=d, flash_bw=f) for d in DRAMS for f in FLASH]
            t_separate = time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = run_sweep(grid, Path(tmp) / f"a{i}.parquet", workers=1).to_pylist()
            t_sweep = time.perf_counter() - t0
            rounds.append((t_separate / t_sweep, t_separate, t_sweep))
        same = all(
            r["tokens_per_s_steady"] == s.totals["tokens_per_s_steady"] and r["hits"] == s.totals["hits"]
            for r, s in zip(rows, separate)
        )
        print(
            f"mistral7b shapes, {args.tokens} tokens x 32 layers, dip rho 0.5, LRU, "
            f"{len(DRAMS)} DRAM sizes x {len(FLASH)} Flash speeds"
        )
        for i, (ratio, t_separate, t_sweep) in enumerate(rounds):
            print(
                f"round {i + 1}: (a) 16 independent replays {t_separate:6.2f} s, (b) one sweep, 1 worker "
                f"{t_sweep:5.2f} s: {ratio:5.1f}x"
            )
        ratios = sorted(r[0] for r in rounds)
        print(
            f"sweep / separate replays: {ratios[len(ratios) // 2]:.1f}x median of rounds "
            f"({ratios[0]:.1f}-{ratios[-1]:.1f}) (target >= 8x); rows equal the replays: {same}"
        )
        grid4 = Grid(
            {"dram": DRAMS, "flash_bw": FLASH, "policy": ["lru", "lfu"], "density": [0.4, 0.6]},
            {k: v for k, v in fixed.items() if k not in ("policy", "density")},
        )
        times = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            run_sweep(grid4, Path(tmp) / f"w{workers}.parquet", workers=workers)
            times[workers] = time.perf_counter() - t0
        print(
            f"4-task grid (64 configurations): 1 worker {times[1]:.2f} s, 2 workers {times[2]:.2f} s "
            f"(speed-up {times[1] / times[2]:.2f}x on {__import__('os').cpu_count()} cores)"
        )


if __name__ == "__main__":
    main()
