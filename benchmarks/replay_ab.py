"""Engine speed of this checkout against another commit, in the same run (issue #12: lfu, lru and belady
within 5 % of their speed before the open-engine change; arc and sieve for the hook family).

Both versions replay the same trace under the same settings in fresh processes, alternating old and
new in each of --repeat rounds (so the machine's drift cancels), each after a warm-up replay that
compiles and loads its kernels; the hit counts of the two must be equal. Prints, per setting, the
median seconds of each and the median of the per-round ratios new/old (< 1: faster now).

    python benchmarks/replay_ab.py --against 29996a2 [--tokens 512] [--repeat 5] [--threads 1]

The other commit is checked out with ``git worktree`` into a temporary directory (removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = {
    "lfu/dip-ca γ0.2": dict(method="dip-ca", gamma=0.2, policy="lfu"),
    "lru/dip-ca γ0.2": dict(method="dip-ca", gamma=0.2, policy="lru"),
    "lfu/dip": dict(method="dip", policy="lfu"),
    "lru/dip": dict(method="dip", policy="lru"),
    "belady/dip": dict(method="dip", policy="belady"),
    "arc/dip-ca γ0.2": dict(method="dip-ca", gamma=0.2, policy="arc"),  # the hook family
    "sieve/dip": dict(method="dip", policy="sieve"),
}

RUN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from simcore.engine.replay import replay
kw = json.loads(sys.argv[2])
replay(**kw)  # warm-up: compile or load the kernels, read the trace once
t = time.perf_counter()
r = replay(**kw)
print(json.dumps({"s": time.perf_counter() - t, "hits": r.totals["hits"]}))
"""


def run(tree: Path, kw: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(tree), json.dumps(kw)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=tree,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, help="the commit to compare with (e.g. the one before a change)")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--trace", type=Path, default=None, help="default: traces/mistral7b-synth-<tokens>")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated labels of SETTINGS to run")
    args = ap.parse_args()
    trace = (args.trace or ROOT / "traces" / f"mistral7b-synth-{args.tokens}").resolve()
    if not trace.exists():
        from simcore.trace.synth import synth_trace

        synth_trace("mistral7b", args.tokens, trace, seed=0)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.against], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    settings = SETTINGS if not args.only else {k: SETTINGS[k] for k in args.only.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=ROOT, check=True, capture_output=True)
        try:
            print(
                f"trace {trace.name}, {args.threads} thread(s), device a18, DRAM 2GB, density 0.5; "
                f"old = {rev}, new = this checkout ({head} + working tree); {args.repeat} rounds"
            )
            print(f"{'setting':<20}{'old s':>9}{'new s':>9}{'new/old':>9}  hits")
            for label, s in settings.items():
                kw = dict(trace=str(trace), device="a18", dram="2GB", density=0.5, threads=args.threads, **s)
                times = {"old": [], "new": []}
                hits = set()
                ratios = []
                for _ in range(args.repeat):
                    o, n = run(old, kw), run(ROOT, kw)
                    times["old"].append(o["s"])
                    times["new"].append(n["s"])
                    ratios.append(n["s"] / o["s"])
                    hits |= {o["hits"], n["hits"]}
                same = "equal" if len(hits) == 1 else f"DIFFER {sorted(hits)}"
                print(
                    f"{label:<20}{statistics.median(times['old']):>9.3f}{statistics.median(times['new']):>9.3f}"
                    f"{statistics.median(ratios):>9.3f}  {same} ({min(hits):,})",
                    flush=True,
                )
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
