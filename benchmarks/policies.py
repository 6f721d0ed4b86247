"""Speed of every cache policy against libCacheSim's implementation of it, on the same access stream, in one run.

Two streams over U units (issue #12):

  * ``tokens``: the engine's case, T tokens of k units each (a skewed random top-k, as a sparse MLP's
    masks are), replayed through one cache of C units; libCacheSim gets the same accesses flattened
    token by token, unit by unit (its hits differ slightly: it has no notion of a token's units being
    in use together);
  * ``single``: one unit per token (a Zipf stream), where the hook family's hits equal libCacheSim's
    exactly (checked here too, except lfuda, whose rule differs; see its module).

Both sides replay precomputed accesses (the engine from CSR arrays, libCacheSim from an
oracleGeneral trace file through its C ``process_trace``); mask selection is not timed. Reported:
accesses/s of each, their ratio (target >= 5x for every policy), and the hit ratios.

    python benchmarks/policies.py [--units 4096] [--k 1024] [--tokens 2000] [--cap 2048] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simcore import policies  # noqa: E402
from simcore.engine import hooks  # noqa: E402
from simcore.engine import kernels as K  # noqa: E402

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


def token_stream(U: int, k: int, T: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """CSR (idx int32 ascending per token, ptr int64) of T top-k selections with a skewed popularity."""
    rng = np.random.default_rng(seed)
    popularity = rng.pareto(1.5, U) + 1.0
    idx = np.empty(T * k, np.int32)
    for t in range(T):
        score = popularity * rng.exponential(1.0, U)
        idx[t * k : (t + 1) * k] = np.sort(np.argpartition(-score, k)[:k])
    return idx, np.arange(T + 1, dtype=np.int64) * k


def single_stream(U: int, n: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = ((rng.zipf(1.2, n) - 1) % U).astype(np.int32)
    return idx, np.arange(n + 1, dtype=np.int64)


def run_engine(name: str, idx, ptr, U: int, cap: int) -> tuple[float, int]:
    """Seconds and hits of one replay of the CSR stream through one cache (compiled beforehand)."""
    pol = policies.load(name) if name in policies.available() else policies.load(str(STAGING / f"{name}.py"))
    out = np.zeros(len(ptr) - 1, np.int32)
    if policies.family(pol) == "hooks":
        cache, state, h = hooks.new_cache(U), pol.init(U, cap), hooks.hooks_of(pol)
        t0 = time.perf_counter()
        hooks.replay_csr(idx, ptr, 0, cap, cache, state, h, out)
        return time.perf_counter() - t0, int(out.sum())
    T = len(ptr) - 1
    nxt = K.next_use_times(idx, ptr, U) if pol.NEEDS_FUTURE else np.zeros(len(idx), np.int32)
    pw = K.priority_weights(pol.weights(T), T)
    state = (
        np.zeros(U, np.bool_),
        np.zeros(U, np.int32),
        np.zeros(U, np.int32),
        np.full(U, K.NEVER, np.int32),
        np.zeros(K.STATE_SIZE, np.int64),
    )
    t0 = time.perf_counter()
    K.replay_masks(idx, ptr, nxt, cap, *state, pw, out)
    return time.perf_counter() - t0, int(out.sum())


STAGING = Path(__file__).resolve().parent.parent / "staging_policies"


def oracle_file(idx: np.ndarray, path: str) -> None:
    """libCacheSim's oracleGeneral binary trace: (time u32, id u64, size u32, next access vtime i64)."""
    rec = np.zeros(idx.shape[0], np.dtype([("t", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")]))
    rec["t"] = np.arange(idx.shape[0]) // 1000
    rec["id"] = idx.astype(np.uint64) + 1
    rec["size"] = 1
    seen = np.full(int(idx.max()) + 1, -1, np.int64)
    nxt = np.empty(idx.shape[0], np.int64)
    for i in range(idx.shape[0] - 1, -1, -1):  # next access of each request, -1 if none
        nxt[i] = seen[idx[i]]
        seen[idx[i]] = i
    rec["next"] = nxt
    rec.tofile(path)


def run_libcachesim(name: str, path: str, cap: int) -> tuple[float, float]:
    import libcachesim as lcs

    reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
    cache = getattr(lcs, LIBCACHESIM[name])(cache_size=cap)
    t0 = time.perf_counter()
    miss_ratio, _ = cache.process_trace(reader)
    return time.perf_counter() - t0, 1.0 - miss_ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=4096)
    ap.add_argument("--k", type=int, default=1024, help="units per token of the tokens stream")
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--single", type=int, default=2_000_000, help="accesses of the one-unit-per-token stream")
    ap.add_argument("--cap", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--policies", default=",".join(LIBCACHESIM))
    args = ap.parse_args()
    names = args.policies.split(",")
    U, cap = args.units, args.cap
    streams = {
        "tokens": token_stream(U, args.k, args.tokens),
        "single": single_stream(U, args.single),
    }
    print(
        f"U {U} units, cache {cap} units; tokens: {args.tokens} tokens x {args.k} units; single: {args.single:,} "
        f"one-unit tokens (Zipf 1.2); fastest of {args.repeat}, ratio = median of the rounds' ratios\n"
    )
    print(
        f"{'policy':<8}{'stream':<8}{'simcore M acc/s':>16}{'libCacheSim M acc/s':>21}{'ratio':>8}{'hit simcore':>13}{'hit lcs':>9}"
    )
    with tempfile.TemporaryDirectory() as d:
        files = {}
        for s, (idx, _) in streams.items():
            files[s] = os.path.join(d, f"{s}.oracleGeneral")
            oracle_file(idx, files[s])
        for name in names:
            for s, (idx, ptr) in streams.items():
                n = idx.shape[0]
                small_idx, small_ptr = idx[: ptr[min(3, len(ptr) - 1)]], ptr[: min(4, len(ptr))]
                run_engine(name, small_idx, small_ptr, U, cap)  # compile outside the timing
                rounds = []
                for _ in range(args.repeat):
                    es, eh = run_engine(name, idx, ptr, U, cap)
                    ls, lh = (np.nan, np.nan)
                    if name == "lfuda" and s == "single":
                        pass  # libCacheSim's LFUDA crashes on this stream (a NULL bucket); not run
                    else:
                        ls, lh = run_libcachesim(name, files[s], cap)
                    rounds.append((es, eh, ls, lh))
                es = min(r[0] for r in rounds)
                ls = min(r[2] for r in rounds)
                ratios = sorted(r[2] / r[0] for r in rounds)
                eh, lh = rounds[0][1] / n, rounds[0][3]
                print(
                    f"{name:<8}{s:<8}{n / es / 1e6:>16.1f}{n / ls / 1e6:>21.1f}{ratios[len(ratios) // 2]:>7.1f}x"
                    f"{eh:>13.4f}{lh:>9.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
