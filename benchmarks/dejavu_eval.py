"""Eval cost of dejavu against dip (issue #15): ``simcore eval`` with ``--method dejavu`` should cost at most
1.2x ``--method dip`` on the same tokens of the same model (SmolLM2-135M, the embedded text).

The model is loaded once; then ``--repeat`` rounds each run one dip eval and one dejavu eval back to back (so
that a busy machine slows both alike). It prints the fastest round of each and the median of the rounds' ratios
(on a shared machine a lucky quiet moment makes one fastest round meaningless; the paired ratio is steadier). Two
times per eval:

* ``loop``: the scored forward passes with the masks and caches in the loop (``EvalResult.seconds``): dejavu
  runs its predictors (NumPy, float32) on every token's |x| where dip ranks |x| and |h~|;
* ``call``: the whole ``evaluate`` call, which adds resolving the setting (dejavu: reading the predictor
  file, cached after the first call) and building the per-layer simulators.

The predictor must not have been trained on the evaluated tokens (eval refuses it): the default,
``train-predictor traces/smollm2-135m`` (its last 1024 tokens, i.e. text tokens [1024, 2048)), is disjoint
from the default ``--offset 0 --tokens 256``.

    python benchmarks/dejavu_eval.py --predictor traces/smollm2-135m/predictor.npz [--tokens 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--predictor", default="traces/smollm2-135m/predictor.npz", help="a train-predictor file")
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--tokens", type=int, default=256, help="tokens scored per eval")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--policy", default="lfu")
    ap.add_argument("--dram", default="250MB", help="DRAM budget (the hidden-1000 predictors alone are 127 MB)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds of one dip and one dejavu eval")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = _args(argv)
    import torch

    from simcore.eval.evaluate import evaluate
    from simcore.models.registry import load_model

    t0 = time.perf_counter()
    lm = load_model(args.model, progress=False)
    print(
        f"model {args.model} loaded in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    common = dict(
        tokenizer=lm.tokenizer,
        name=lm.name,
        tokens=args.tokens,
        seq_len=args.seq_len,
        offset=args.offset,
        density=args.density,
        policy=args.policy,
        dram=args.dram,
    )
    runs = {"dip": {"method": "dip"}, "dejavu": {"method": "dejavu", "predictor": args.predictor}}
    best = {m: {"loop": float("inf"), "call": float("inf")} for m in runs}
    ppl, ratios = {}, []
    for r in range(args.repeat):
        loops = {}
        for method, kw in runs.items():
            t = time.perf_counter()
            res = evaluate(lm.model, **common, **kw)
            call = time.perf_counter() - t
            best[method]["loop"] = min(best[method]["loop"], res.seconds)
            best[method]["call"] = min(best[method]["call"], call)
            ppl[method] = res.perplexity
            loops[method] = res.seconds
            print(
                f"round {r + 1} {method:<6} loop {res.seconds:7.2f} s  call {call:7.2f} s  perplexity {res.perplexity:.3f}"
            )
        ratios.append(loops["dejavu"] / loops["dip"])
    print(
        f"\n{args.model}, {args.tokens} tokens from {args.offset} (windows of {args.seq_len}), density {args.density:g}, "
        f"policy {args.policy}, DRAM {args.dram}; fastest of {args.repeat} rounds:"
    )
    for method in runs:
        b = best[method]
        print(
            f"  {method:<6} loop {b['loop']:7.2f} s ({args.tokens / b['loop']:6.1f} tok/s)  call {b['call']:7.2f} s  "
            f"perplexity {ppl[method]:.3f}"
        )
    loop = best["dejavu"]["loop"] / best["dip"]["loop"]
    call = best["dejavu"]["call"] / best["dip"]["call"]
    median = sorted(ratios)[len(ratios) // 2]
    print(
        f"  dejavu / dip: fastest loop {loop:.2f}x, fastest call {call:.2f}x; median of the rounds' loop ratios "
        f"{median:.2f}x ({', '.join(f'{x:.2f}' for x in ratios)}) (target <= 1.2x)"
    )
    print(f"  load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine adds noise)")


if __name__ == "__main__":
    main()
