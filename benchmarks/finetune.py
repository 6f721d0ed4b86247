"""Cost of LoRA recovery training: steps/s of ``simcore finetune``'s distillation step on SmolLM2-135M
(teacher forward, masked student forward and backward, AdamW step), and the cost of a masked step
relative to an unmasked one (same adapters, same batches, no masks), in one run, the two kinds of step
interleaved.

Target (issue 15): a masked step <= 1.5x an unmasked one.

    python benchmarks/finetune.py [--method dip] [--density 0.5] [--seq-len 256] [--batch 1] [--steps 6] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from simcore import methods
from simcore.calibration import TextUse, text_sha256
from simcore.eval.evaluate import cats_thresholds
from simcore.finetune.train import DEFAULT_OFFSET, LoraTrainer
from simcore.models import load_model
from simcore.models.registry import decoder_layers
from simcore.trace.text import embedded_text, token_windows
from simcore.trace.tracer import model_shape


def interleaved_steps(trainers: dict, batches: list) -> dict:
    """Median seconds per step of each trainer (name -> LoraTrainer), their steps interleaved over the
    same ``batches`` (each (B, S) token ids) so that load from other processes hits both alike; the
    first step of each (warm-up: allocations, Numba dispatch) is not counted."""
    times: dict = {name: [] for name in trainers}
    for i, ids in enumerate(batches):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.step(ids, i)
            if i:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="dip", choices=["dip", "cats"])
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6, help="timed steps of each kind (after one untimed)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    lm = load_model("smollm2-135m", progress=False)
    print(
        f"loaded SmolLM2-135M-Instruct (GGUF Q4_1 -> float32) in {time.perf_counter() - t0:.1f} s; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    text = embedded_text()
    n = (args.steps + 1) * args.batch
    windows = token_windows(lm.tokenizer, text, n * args.seq_len, args.seq_len, DEFAULT_OFFSET)
    batches = [torch.from_numpy(np.stack(windows[i : i + args.batch])) for i in range(0, n, args.batch)]
    shape = model_shape(lm.model, lm.name)
    use = TextUse("pydoc_data.topics", text_sha256(text), DEFAULT_OFFSET, DEFAULT_OFFSET + n * args.seq_len)
    selection = methods.resolve(args.method, shape, args.density, None, use)
    thresholds = [0.0] * shape.n_layers
    if any(k.mode == "threshold" for k in selection.kinds):
        calib = token_windows(lm.tokenizer, text, 512, args.seq_len, 8192)
        frac = selection.fractions[[k.mode for k in selection.kinds].index("threshold")]
        thresholds = cats_thresholds(lm.model, decoder_layers(lm.model), calib, frac, selection.threshold)

    trainers = {
        masked: LoraTrainer(
            copy.deepcopy(lm.model),
            args.method,
            selection,
            thresholds,
            rank=args.rank,
            steps=args.steps + 1,
            masked=masked,
        )
        for masked in (False, True)
    }
    seconds = interleaved_steps(trainers, batches)
    tokens = args.batch * args.seq_len
    print(
        f"{args.method} rho={args.density:g}, rank {args.rank}, batch {args.batch} x {args.seq_len} tokens, "
        f"median of {args.steps} timed steps each, interleaved"
    )
    for masked, label in ((False, "unmasked"), (True, "masked")):
        s = seconds[masked]
        print(f"  {label:<9} {s:7.3f} s/step  {1 / s:6.3f} steps/s  {tokens / s:8.1f} tokens/s")
    ratio = seconds[True] / seconds[False]
    print(f"masked / unmasked step time: {ratio:.3f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
