"""Cost of tracing: tokens/s of ``simcore trace`` on SmolLM2-135M against a plain forward pass
(no hooks, no writing) over the same windows, in one run; and the trace's size.

Targets (issue 3): tracing <= 1.3x the plain forward time; <= 2 bytes per recorded value
before compression.

    python benchmarks/trace.py [--tokens 1024] [--seq-len 256] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from simcore.models import load_model
from simcore.trace.format import LAYER_DIR, TraceReader
from simcore.trace.text import embedded_text, token_windows
from simcore.trace.tracer import _Recorder, trace_windows


def plain_forward(model, windows) -> float:
    """Seconds for forward passes over ``windows`` with no hooks (logits computed, as in tracing)."""
    start = time.perf_counter()
    with torch.inference_mode():
        for w in windows:
            model(input_ids=torch.from_numpy(w)[None], use_cache=False)
    return time.perf_counter() - start


def hooks_only(model, windows) -> float:
    """Seconds for forward passes with the tracer's hooks recording |x|, |h|, |gate|, |up| and
    moving them to numpy, but nothing written (isolates the hook cost from Parquet encoding)."""
    start = time.perf_counter()
    with _Recorder(list(model.model.layers), model.config.intermediate_size) as rec, torch.inference_mode():
        for w in windows:
            model(input_ids=torch.from_numpy(w)[None], use_cache=False)
            rec.take()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each; the best is reported")
    args = ap.parse_args()

    t0 = time.perf_counter()
    lm = load_model("smollm2-135m", progress=False)
    print(
        f"loaded SmolLM2-135M-Instruct (GGUF Q4_1 -> float32) in {time.perf_counter() - t0:.1f} s; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    windows = token_windows(lm.tokenizer, embedded_text(), args.tokens, args.seq_len)
    n = sum(len(w) for w in windows)

    plain_forward(lm.model, windows[:1])  # warm-up
    plain, hooked, traced = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "smollm2"
        for _ in range(args.repeats):
            plain.append(plain_forward(lm.model, windows))
            hooked.append(hooks_only(lm.model, windows))
            start = time.perf_counter()
            trace_windows(
                lm.model,
                windows,
                out,
                name="smollm2-135m",
                source="pydoc_data.topics",
                seq_len=args.seq_len,
                progress=False,
            )
            traced.append(time.perf_counter() - start)
        reader = TraceReader(out)
        shape = reader.model
        layer_bytes = sum(f.stat().st_size for f in (out / LAYER_DIR).iterdir())
        ppl = reader.meta.extra["perplexity"]

    tp, th, tt = min(plain), min(hooked), min(traced)
    rows = n * shape.n_layers
    values = rows * (shape.d + 3 * shape.d_int)
    print(f"{n} tokens in windows of {args.seq_len}, best of {args.repeats}:")
    print(f"  plain forward : {n / tp:8.1f} tokens/s  ({tp:.2f} s)")
    print(f"  hooks only    : {n / th:8.1f} tokens/s  ({th:.2f} s)  {th / tp:.2f}x plain (no writing)")
    print(
        f"  tracing       : {n / tt:8.1f} tokens/s  ({tt:.2f} s)  {tt / tp:.2f}x plain (target <= 1.3x); "
        f"dense perplexity {ppl:.2f}"
    )
    print(
        f"  trace size    : {layer_bytes / 1e6:.1f} MB of layer files = {layer_bytes / rows:.0f} bytes per token per "
        f"layer = {layer_bytes / values:.3f} bytes per recorded value (target <= 2; x, h, gate, up: "
        f"{shape.d} + 3 x {shape.d_int} values per token and layer)"
    )


if __name__ == "__main__":
    main()
