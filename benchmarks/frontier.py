"""Frontier cost (issue #14): a 5-method x 5-density x 3-DRAM frontier on SmolLM2-135M (dense added as the
reference) should cost no more than the work it needs plus 10 %: one eval per distinct eval key (every other
configuration reuses one) and the sweep of replays.

Each measurement runs in a fresh Python process, timed from after its imports, so that each pays the same
first-use costs (loading the model, the first forward passes, Numba's cached kernels); a warm-up process runs
first so that no measurement pays for compiling the kernels:

1. ``frontier``: ``run_frontier`` into a new directory (evals in its process, replays on ``--sweep-workers``);
2. ``evals``: the evals the frontier needs (``plan_frontier``: the same keys and settings), standalone: the
   model loaded once, then one ``evaluate`` per eval key, each timed, perplexities checked against (1);
3. ``sweep``: ``run_sweep`` of the same grid (dense added) into a new table;
4. ``resume``: the frontier again on (1)'s directory: nothing is recomputed.

(1)-(3) run ``--repeat`` rounds (the machine may be shared: the fastest round of each is compared). It prints
evals needed, run and reused, and frontier / (model load + evals + sweep), the target being <= 1.10.

    python benchmarks/frontier.py [--tokens 256] [--trace traces/smollm2-135m] [--sweep-workers 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = "cats,gate,up,dip,dip-ca"
DENSITIES = "0.4:0.8:0.1"
DRAMS = "60MB,70MB,80MB"


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", default="traces/smollm2-135m")
    ap.add_argument("--tokens", type=int, default=256, help="tokens scored per eval")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--densities", default=DENSITIES)
    ap.add_argument("--drams", default=DRAMS)
    ap.add_argument("--policy", default="lfu")
    ap.add_argument("--gamma", default="0.2")
    ap.add_argument("--sweep-workers", type=int, default=0, help="replay processes (0: one per core)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of (1)-(3); the fastest of each is compared")
    ap.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--phase", choices=("warmup", "frontier", "evals", "sweep", "resume"), help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _grid(args):
    from simcore.sweep import Grid
    from simcore.sweep.grid import parse_axis

    axes = {
        "method": parse_axis("method", args.methods),
        "density": parse_axis("density", args.densities),
        "dram": parse_axis("dram", args.drams),
        "policy": parse_axis("policy", args.policy),
        "gamma": parse_axis("gamma", args.gamma),
    }
    return Grid(axes, {"trace": args.trace, "device": "a18"})


def _eval_kw(args) -> dict:
    return dict(tokens=args.tokens, seq_len=args.seq_len, calib_tokens=512, calib_offset=8192)


def phase(args) -> dict:
    """One measurement, in this process; returns its figures."""
    grid, kw, out = _grid(args), _eval_kw(args), Path(args.dir)
    if args.phase == "warmup":  # compile (or load from Numba's cache) every kernel the measurements use
        from simcore.engine.replay import replay
        from simcore.eval.evaluate import evaluate
        from simcore.models.registry import load_model

        lm = load_model("smollm2-135m", progress=False)
        for m in grid.axes["method"] + ["dense"]:
            s = {"method": m, "dram": grid.axes["dram"][0], "policy": args.policy}
            if m != "dense":
                s["density"] = 0.7
            replay(trace=args.trace, tokens=16, **s)
            evaluate(lm.model, tokenizer=lm.tokenizer, name=lm.name, tokens=16, seq_len=16, **s)
        return {}
    if args.phase in ("frontier", "resume"):
        from simcore.frontier import run_frontier

        where = out / ("frontier" if args.phase == "resume" or args.round == 0 else f"frontier-{args.round}")
        t0 = time.perf_counter()
        r = run_frontier(grid, where, sweep_workers=args.sweep_workers, **kw)
        return {"wall_s": time.perf_counter() - t0, **r.stats}
    if args.phase == "evals":
        from simcore.eval.evaluate import evaluate
        from simcore.frontier.run import plan_frontier
        from simcore.models.registry import load_model
        from simcore.sweep.grid import replay_config

        logged = {}
        for line in (out / "frontier" / "evals.jsonl").read_text().splitlines():
            rec = json.loads(line)
            logged[rec["key"]] = rec["perplexity"]
        t0 = time.perf_counter()
        jobs = plan_frontier(grid, **kw).jobs()
        plan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lm = load_model("smollm2-135m", progress=False)
        load_s = time.perf_counter() - t0
        times = []
        for job in jobs:
            t0 = time.perf_counter()
            r = evaluate(lm.model, replay_config(job["settings"]), tokenizer=lm.tokenizer, name=lm.name, **kw)
            times.append(time.perf_counter() - t0)
            assert r.perplexity == logged[job["key"]], (job["settings"], r.perplexity, logged[job["key"]])
        return {"evals": len(jobs), "plan_s": plan_s, "load_s": load_s, "evals_s": sum(times), "max_s": max(times)}
    if args.phase == "sweep":
        from simcore.frontier.run import frontier_grid
        from simcore.sweep import run_sweep

        t0 = time.perf_counter()
        table = run_sweep(
            frontier_grid(grid, "smollm2-135m")[0], out / f"alone-{args.round}.parquet", workers=args.sweep_workers
        )
        return {"rows": table.num_rows, "wall_s": time.perf_counter() - t0}
    raise AssertionError(args.phase)


def _run(phase_name: str, tmp: str, round_: int = 0) -> dict:
    cmd = [sys.executable, __file__, *sys.argv[1:], "--phase", phase_name, "--dir", tmp, "--round", str(round_)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"phase {phase_name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = _args()
    if args.phase:
        print(json.dumps(phase(args)))
        return
    grid = _grid(args)
    print(
        f"grid: methods {args.methods} (+ dense), densities {grid.axes['density']}, DRAM {grid.axes['dram']}, "
        f"policy {args.policy}, gamma {args.gamma}; evals of {args.tokens} tokens; trace {args.trace}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _run("warmup", tmp)
        print(f"warm-up process: {time.perf_counter() - t0:.1f} s")
        rounds = []
        for i in range(args.repeat):
            rounds.append((_run("frontier", tmp, i), _run("evals", tmp, i), _run("sweep", tmp, i)))
            f, e, s = rounds[-1]
            print(
                f"round {i + 1}: frontier {f['wall_s']:.1f} s; standalone: model load {e['load_s']:.1f} s + "
                f"evals {e['evals_s']:.1f} s + sweep {s['wall_s']:.1f} s"
            )
        r = _run("resume", tmp)
    f = min((x[0] for x in rounds), key=lambda x: x["wall_s"])
    e = min((x[1] for x in rounds), key=lambda x: x["load_s"] + x["evals_s"])
    s = min((x[2] for x in rounds), key=lambda x: x["wall_s"])
    print("fastest of the rounds:")
    print(
        f"\n(1) frontier: {f['configurations']} configurations ({f['ok']} ok); evals needed {f['evals']} "
        f"({f['evals_cache_dependent']} for cache-dependent masks), run {f['evals_run']}; "
        f"{f['rows_reusing_an_eval']} configurations reuse an eval (one eval per configuration would be {f['ok']})"
    )
    print(
        f"    wall {f['wall_s']:.1f} s: sweep {f['sweep_s']:.1f} s, eval phase {f['evals_wall_s']:.1f} s "
        f"(model load {f['model_load_s']:.1f} s + evals {f['eval_s']:.1f} s), the rest "
        f"{f['wall_s'] - f['sweep_s'] - f['evals_wall_s']:.1f} s (planning, outputs)"
    )
    print(
        f"(2) its {e['evals']} evals standalone: model load {e['load_s']:.1f} s + evals {e['evals_s']:.1f} s "
        f"(slowest {e['max_s']:.2f} s); same perplexities; planning them {e['plan_s']:.2f} s"
    )
    print(f"(3) its sweep standalone: {s['rows']} rows in {s['wall_s']:.1f} s")
    print(f"(4) resume: {r['wall_s']:.1f} s, evals run {r['evals_run']}, replays computed {r['sweep_computed']}")
    needed = e["load_s"] + e["evals_s"] + s["wall_s"]
    print(
        f"\nfrontier / (model load + evals + sweep) = {f['wall_s']:.1f} / {needed:.1f} = {f['wall_s'] / needed:.3f} "
        "(target <= 1.10)"
    )
    print(
        f"eval phase / (model load + evals)       = {f['evals_wall_s']:.1f} / {e['load_s'] + e['evals_s']:.1f} = "
        f"{f['evals_wall_s'] / (e['load_s'] + e['evals_s']):.3f}"
    )


if __name__ == "__main__":
    main()
