"""Speed of every cache policy against libCacheSim's implementation of the same policy, on the same
access stream, in one run.

Streams over U units, each replayed through one cache of C units:

  * ``single`` (the comparison): one unit per token, a Zipf(--alpha) stream of --single accesses. Both
    sides replay exactly the same requests, so their hit counts are printed side by side and must be
    equal, except for the documented differences (column "same"; the tests that pin them down):
    lfu is "perfect LFU" here (counts kept after eviction, ties by recency), libCacheSim's LFU counts
    only while cached (tests/test_engine.py::test_lfu_hits_versus_libcachesim); lfuda sets a hit
    unit's key to F + L (Arlitt et al.), libCacheSim adds L (tests/test_policies_hooks.py::
    test_lfuda_is_the_papers_rule_not_libcachesims); s3fifo below C = 20 and twoq below C = 4 keep a
    one-unit small queue where libCacheSim caches nothing (test_small_queue_of_one_unit_caches_where_
    libcachesim_caches_nothing).
  * ``tokens`` (the engine's case, --tokens > 0): T tokens of k units each (a skewed random top-k, as a
    sparse MLP's masks are); libCacheSim gets the same accesses flattened token by token, unit by unit.
    Hits differ: libCacheSim has no notion of the units of one token being in use together.

simcore's side is its real replay of precomputed selections: ``simcore.engine.sim.cache_for(policy, U,
T, C).replay(idx, ptr, nxt, 0, hits)``, the cache that ``KindSim.finish`` / ``KindSim.hits_at`` replay
collected masks through (score family: ``kernels.replay_masks_at``; hook family: ``hooks.replay_csr``),
the stream given as CSR arrays and next-use times (precomputed, as the mask store does; not timed).
libCacheSim's side is its C loop, ``cache.process_trace(reader)`` over an oracleGeneral file (which
carries the next-access times Belady needs), in a child process that runs it twice and times the second
run: its LFUDA hangs at some capacities, and a crash there must not end the run (a round past
--lcs-timeout is reported as such).

Compile time is excluded: each policy's replay is first run on the stream's first tokens, with the
argument types of the timed run (a score cache's priority weights are int32 or int64 depending on T,
so the warm-up cache is made for the full T), and simcore's output array (hits per token) is written
once before the timer, as its pages would otherwise be faulted in during the replay; libCacheSim's
child runs the stream once untimed. A
run's fixed cost is excluded too (libCacheSim spends ~10 ms setting up before its per-request rate
settles, a fifth of a 2M-access run): each side replays the whole stream and, separately, its first
quarter, and its accesses/s is the difference of accesses over the difference of seconds. Times are
CPU time (``time.process_time``, on both sides: a virtual machine's stolen time is not the code's), and
each is the fastest of --best-of runs in a row (simcore's whole stream takes ~8 ms, within reach of a
passing hiccup). Each round runs simcore then libCacheSim; reported are the best round's rate of each
and the median of the rounds' ratios. Target: simcore >= 5x libCacheSim's accesses/s for every policy.
``none`` (no cache) has nothing to replay: listed, not timed.

    python benchmarks/policies.py [--units 4096] [--cap 2048] [--single 2000000] [--tokens 2000]
                                  [--k 1024] [--repeat 5] [--best-of 3] [--policies lru,fifo,...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simcore import policies  # noqa: E402
from simcore.engine import sim  # noqa: E402

TARGET = 5.0
LIBCACHESIM = {
    "lru": "LRU",
    "lfu": "LFU",
    "belady": "Belady",
    "fifo": "FIFO",
    "clock": "Clock",
    "sieve": "Sieve",
    "s3fifo": "S3FIFO",
    "arc": "ARC",
    "twoq": "TwoQ",
    "lfuda": "LFUDA",
}
# hit counts that differ from libCacheSim's on the single stream, by design (module docstring)
DIFFERS = {
    "lfu": "perfect LFU vs libCacheSim's in-cache LFU",
    "lfuda": "key F + L on a hit (the paper) vs libCacheSim's K + L",
}

CHILD = """
import sys, time
import libcachesim as lcs
name, cap, best_of = sys.argv[1], int(sys.argv[2]), int(sys.argv[5])

def run(path):
    reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
    cache = getattr(lcs, name)(cache_size=cap)
    t0 = time.process_time()
    miss_ratio, _ = cache.process_trace(reader)
    return time.process_time() - t0, miss_ratio

run(sys.argv[3])  # warm-up: the allocator, the file's pages
full = min(run(sys.argv[3]) for _ in range(best_of))
part = min(run(sys.argv[4])[0] for _ in range(best_of))
print(full[0], part, repr(full[1]))
"""


def token_stream(U: int, k: int, T: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """CSR (idx int32, ascending per token; ptr int64[T + 1]) of T top-k selections of U units with a
    skewed popularity."""
    rng = np.random.default_rng(seed)
    popularity = rng.pareto(1.5, U) + 1.0
    idx = np.empty(T * k, np.int32)
    for t in range(T):
        score = popularity * rng.exponential(1.0, U)
        idx[t * k : (t + 1) * k] = np.sort(np.argpartition(-score, k)[:k])
    return idx, np.arange(T + 1, dtype=np.int64) * k


def single_stream(U: int, n: int, alpha: float, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """CSR of ``n`` tokens of one unit each: a Zipf(alpha) stream folded onto U units."""
    rng = np.random.default_rng(seed)
    idx = ((rng.zipf(alpha, n) - 1) % U).astype(np.int32)
    return idx, np.arange(n + 1, dtype=np.int64)


def next_uses(idx: np.ndarray, when: np.ndarray, never: int) -> np.ndarray:
    """For each access, ``when`` of the next access to the same unit (``never`` if none); accesses are
    in stream order."""
    order = np.argsort(idx, kind="stable")  # by unit, stream order within a unit
    nxt = np.full(idx.shape[0], never, np.int64)
    same = idx[order[1:]] == idx[order[:-1]]
    nxt[order[:-1][same]] = when[order[1:][same]]
    return nxt


def oracle_file(idx: np.ndarray, path: str) -> None:
    """libCacheSim's oracleGeneral binary trace: (time u32, id u64, size u32, next access vtime i64)."""
    rec = np.zeros(idx.shape[0], np.dtype([("t", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")]))
    rec["t"] = np.arange(idx.shape[0]) // 1000
    rec["id"] = idx.astype(np.uint64) + 1
    rec["size"] = 1
    rec["next"] = next_uses(idx, np.arange(idx.shape[0]), -1)
    rec.tofile(path)


def run_simcore(pol, idx, ptr, nxt, U: int, T: int, cap: int) -> tuple[float, int]:
    """Seconds and hits of one replay of the CSR stream (``T`` tokens in all; ``ptr`` may cover only the
    first ones) through a fresh cache."""
    cache = sim.cache_for(pol, U, T, cap)
    out = np.zeros(len(ptr) - 1, np.int32)
    out.fill(0)  # its pages mapped before the timer (a fresh array's first writes fault them in: ~6 % of a run)
    t0 = time.process_time()
    cache.replay(idx, ptr, nxt, 0, out)
    return time.process_time() - t0, int(out.sum())


def run_libcachesim(name: str, files: tuple[str, str], cap: int, n: int, best_of: int, timeout: float):
    """(seconds of the whole stream, of its first quarter, hits of the whole) of libCacheSim's
    ``process_trace`` in a child process, each the fastest of ``best_of`` runs, or a string saying why
    there are none."""
    try:
        r = subprocess.run(
            [sys.executable, "-c", CHILD, LIBCACHESIM[name], str(cap), *files, str(best_of)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"timeout {timeout:.0f}s"
    if r.returncode != 0:
        return f"exit {r.returncode}"
    full, part, miss_ratio = r.stdout.split()
    return float(full), float(part), n - round(float(miss_ratio) * n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=4096, help="U, units in the stream")
    ap.add_argument("--cap", type=int, default=2048, help="C, cache capacity in units")
    ap.add_argument("--single", type=int, default=2_000_000, help="accesses of the one-unit-per-token stream")
    ap.add_argument("--alpha", type=float, default=1.2, help="Zipf exponent of the single stream")
    ap.add_argument("--tokens", type=int, default=2000, help="tokens of the tokens stream (0: leave it out)")
    ap.add_argument("--k", type=int, default=1024, help="units per token of the tokens stream")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (simcore, then libCacheSim) per row")
    ap.add_argument("--best-of", type=int, default=3, help="runs of each timing within a round (its fastest)")
    ap.add_argument("--policies", default=",".join(policies.available()), help="comma-separated names or paths")
    ap.add_argument("--lcs-timeout", type=float, default=30.0, help="seconds before a libCacheSim run is given up")
    args = ap.parse_args()
    U, cap = args.units, min(args.cap, args.units)
    streams = {"single": single_stream(U, args.single, args.alpha)}
    if args.tokens > 0:
        streams["tokens"] = token_stream(U, args.k, args.tokens)
    print(
        f"U = {U} units, cache C = {cap} units. single: {args.single:,} one-unit tokens (Zipf {args.alpha})"
        + (f"; tokens: {args.tokens} tokens x {args.k} units" if args.tokens > 0 else "")
        + f".\nAccesses/s (CPU time): beyond the first quarter of the stream, each timing the fastest of "
        f"{args.best_of} runs; best of {args.repeat} rounds each side; ratio = median of the rounds' ratios; "
        f"target >= {TARGET:g}x.\n"
    )
    head = f"{'policy':<8}{'stream':<8}{'simcore M acc/s':>16}{'libCacheSim M acc/s':>21}{'ratio':>8}"
    print(f"{head}{'hits simcore':>14}{'hits libCacheSim':>18}  same")
    below = []
    with tempfile.TemporaryDirectory() as d:
        files, nxts, quarter = {}, {}, {}
        for s, (idx, ptr) in streams.items():
            T = len(ptr) - 1
            quarter[s] = T // 4
            files[s] = (os.path.join(d, f"{s}.oracleGeneral"), os.path.join(d, f"{s}-quarter.oracleGeneral"))
            oracle_file(idx, files[s][0])
            oracle_file(idx[: ptr[quarter[s]]], files[s][1])
            nxts[s] = next_uses(idx, np.repeat(np.arange(T), np.diff(ptr)), T).astype(np.int32)
        for name in args.policies.split(","):
            pol = policies.load(name)
            label = Path(name).stem if name.endswith(".py") else name
            if pol.NO_CACHE:
                print(f"{label:<8}{'-':<8}{'(no cache: nothing to replay)':>45}")
                continue
            for s, (idx, ptr) in streams.items():
                n, T, nxt, q = idx.shape[0], len(ptr) - 1, nxts[s], quarter[s]
                nq = int(ptr[q])
                w = min(64, T)  # warm-up: compiles (or loads) the replay for these argument types
                run_simcore(pol, idx[: ptr[w]], ptr[: w + 1], nxt[: ptr[w]], U, T, cap)
                rounds, lcs_fail = [], None
                for _ in range(args.repeat):
                    full = [run_simcore(pol, idx, ptr, nxt, U, T, cap) for _ in range(args.best_of)]
                    es, eh = min(full)
                    eq = min(
                        run_simcore(pol, idx[:nq], ptr[: q + 1], nxt[:nq], U, T, cap)[0] for _ in range(args.best_of)
                    )
                    assert all(h == eh for _, h in full), "simcore's hits changed between runs"
                    rate = (n - nq) / (es - eq)
                    lc = lcs_fail or "n/a"
                    if label in LIBCACHESIM and lcs_fail is None:  # a run that failed once is not retried
                        lc = run_libcachesim(label, files[s], cap, n, args.best_of, args.lcs_timeout)
                    if isinstance(lc, str):
                        lcs_fail = lc
                        rounds.append((rate, eh, np.nan, None))
                    else:
                        rounds.append((rate, eh, (n - nq) / (lc[0] - lc[1]), lc[2]))
                erate, eh = max(r[0] for r in rounds), rounds[0][1]
                assert all(r[1] == eh for r in rounds), "simcore's hits changed between rounds"
                done = [r for r in rounds if r[3] is not None]
                if done:
                    lrate, lh = max(r[2] for r in done), done[0][3]
                    ratio = float(np.median([r[0] / r[2] for r in done]))
                    same = "=" if eh == lh else f"{eh - lh:+,d}"
                    if eh != lh and s == "single":
                        same += f" ({DIFFERS.get(label, 'UNEXPECTED')})"
                    lcs_cols, lh_col = f"{lrate / 1e6:>21.1f}{ratio:>7.1f}x", f"{lh:,}"
                    if ratio < TARGET:
                        below.append(f"{label}/{s} {ratio:.1f}x")
                else:
                    lh_col, same, lcs_cols = "-", "", f"{lcs_fail:>21}{'-':>8}"
                print(f"{label:<8}{s:<8}{erate / 1e6:>16.1f}{lcs_cols}{eh:>14,}{lh_col:>18}  {same}", flush=True)
    print(f"\nbelow the {TARGET:g}x target: {', '.join(below) if below else 'none'}")


if __name__ == "__main__":
    main()
