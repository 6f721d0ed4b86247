"""Belady's memory and speed on a long trace, old code against new in one run (issue 11, item 16).

Setting: a mistral7b-shaped synthetic trace (32 layers, d 4096, d_int 14336; columns x and h only)
of --tokens tokens, dip at density 0.5, policy belady, DRAM 2GB, device a18, --threads layers in
parallel. Each replay runs in a fresh child process, which reports its own peak resident memory
(VmHWM) and its time; the Numba cache is loaded by a 2-token replay first, outside the figures. The
same replay under lfu, which collects no masks, shows how much of the peak is not Belady's (the
trace reader's share, for one).

With --old DIR (a source tree of another simcore version, e.g. a git worktree of the previous
commit: ``git worktree add /tmp/simcore-base HEAD``), every round replays with the new code and then
the old one, so a round's ratio compares runs of the same minute; the median ratio of the rounds is
reported, and the hit totals of the two must be identical. --old-tokens replays the old code on
fewer tokens when its memory would not fit (its speed is then compared per token-layer);
--old-trace gives it a copy of the trace its reader accepts (e.g. trace.json without fields added
since, the layer files linked).

Target: peak RSS under 1 GiB at 16,384 tokens with 2 threads, speed per token-layer at least 0.8x
the old code's.

    python benchmarks/belady.py [--tokens 16384] [--old /tmp/simcore-base] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTING = dict(device="a18", dram="2GB", method="dip", density=0.5, policy="belady")

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])  # the simcore source tree to measure, ahead of any installed one
import simcore
from simcore.engine.replay import replay
def peak_mb():  # this process's own high-water mark
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
trace, tokens, threads, setting = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
replay(trace=trace, tokens=2, threads=1, **setting)  # load compiled kernels (Numba cache)
t = time.perf_counter()
r = replay(trace=trace, tokens=tokens, threads=threads, **setting)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "hits": r.totals["hits"], "accesses": r.totals["accesses"],
                  "tokens": r.totals["tokens"], "layers": len({x["layer"] for x in r.layers}),
                  "peak_rss_mb": peak_mb(), "source": simcore.__file__}))
"""


def ensure_trace(path: Path, tokens: int) -> None:
    """Synthesise the trace if missing (about 1.1 MB per token with columns x and h)."""
    if (path / "trace.json").exists():
        return
    print(f"generating {path} (mistral7b shapes, {tokens} tokens, columns x,h) ...", flush=True)
    cmd = [sys.executable, "-m", "simcore", "synth", "--model", "mistral7b", "--tokens", str(tokens)]
    subprocess.run([*cmd, "--columns", "x,h", "--out", str(path), "--no-progress"], check=True)


def run(source: Path, trace: Path, tokens: int, threads: int, policy: str = SETTING["policy"]) -> dict:
    """One replay in a child process started outside any source tree (so that ``source`` is the code
    that runs)."""
    args = [sys.executable, "-c", CHILD, str(source), str(trace.resolve()), str(tokens), str(threads)]
    setting = json.dumps(dict(SETTING, policy=policy))
    out = subprocess.run([*args, setting], capture_output=True, text=True, cwd="/")
    if out.returncode != 0:
        sys.exit(f"replay with the code of {source} failed:\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["token_layers_per_s"] = r["tokens"] * r["layers"] / r["seconds"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--trace", type=Path, default=None, help="default: traces/mistral7b-synth-<tokens>")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--old", type=Path, default=None, help="source tree of the code to compare with")
    ap.add_argument("--old-tokens", type=int, default=None, help="tokens the old code replays (default --tokens)")
    ap.add_argument(
        "--old-trace", type=Path, default=None, help="the same trace as the old code's reader accepts (default --trace)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="rounds of new (and old) back to back")
    args = ap.parse_args()
    trace = args.trace or ROOT / "traces" / f"mistral7b-synth-{args.tokens}"
    ensure_trace(trace, args.tokens)
    old_tokens = args.old_tokens or args.tokens
    old_trace = args.old_trace or trace
    print(f"setting: {SETTING}, {args.threads} threads, trace {trace}", flush=True)
    # 2-token runs: which code each side imports; they also fill the Numba cache, outside every figure
    print(f"new code: {run(ROOT, trace, 2, 1)['source']}", flush=True)
    if args.old:
        print(f"old code: {run(args.old, old_trace, 2, 1)['source']}", flush=True)
    rounds = []
    for i in range(args.repeat):
        new = run(ROOT, trace, args.tokens, args.threads)
        old = run(args.old, old_trace, old_tokens, args.threads) if args.old else None
        rounds.append((new, old))
        line = f"round {i + 1}: new {new['token_layers_per_s']:,.0f} token-layers/s, {new['peak_rss_mb']:,.0f} MB peak"
        if old:
            ratio = new["token_layers_per_s"] / old["token_layers_per_s"]
            line += f"; old {old['token_layers_per_s']:,.0f} token-layers/s, {old['peak_rss_mb']:,.0f} MB; new/old {ratio:.2f}"
        print(line, flush=True)
    new_tl = statistics.median(n["token_layers_per_s"] for n, _ in rounds)
    new_mb = max(n["peak_rss_mb"] for n, _ in rounds)
    print(
        f"\nnew: {args.tokens} tokens, median {new_tl:,.0f} token-layers/s, peak RSS {new_mb:,.0f} MB "
        f"(target < 1024 MB){'  OK' if new_mb < 1024 else '  OVER'}"
    )
    lfu = run(ROOT, trace, args.tokens, args.threads, policy="lfu")
    print(
        f"the same replay under lfu (no masks collected): {lfu['peak_rss_mb']:,.0f} MB peak, so Belady's masks "
        f"and their replay add {new_mb - lfu['peak_rss_mb']:,.0f} MB"
    )
    if args.old:
        old_tl = statistics.median(o["token_layers_per_s"] for _, o in rounds)
        old_mb = max(o["peak_rss_mb"] for _, o in rounds)
        ratio = statistics.median(n["token_layers_per_s"] / o["token_layers_per_s"] for n, o in rounds)
        print(f"old: {old_tokens} tokens, median {old_tl:,.0f} token-layers/s, peak RSS {old_mb:,.0f} MB")
        print(f"new / old speed per token-layer: {ratio:.2f} (median of rounds; target >= 0.8)")
        if old_tokens == args.tokens:
            same = all(n["hits"] == o["hits"] and n["accesses"] == o["accesses"] for n, o in rounds)
            print(
                f"hits: new {rounds[0][0]['hits']}, old {rounds[0][1]['hits']} -> {'identical' if same else 'DIFFERENT'}"
            )


if __name__ == "__main__":
    main()
