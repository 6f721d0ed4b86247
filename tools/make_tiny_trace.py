"""Write traces/tiny: a one-layer, four-unit trace whose cache hits can be counted by hand
(tests/test_replay.py works them out in comments). Run: python tools/make_tiny_trace.py"""

from pathlib import Path

import numpy as np

from simcore.models import shape_from_dims
from simcore.trace.format import TraceMeta, TraceWriter

ROWS = [  # top-2 of each row: {0,1} {0,2} {1,3} {0,1} {2,3} {0,2}
    [0.9, 0.8, 0.1, 0.2],
    [0.9, 0.1, 0.8, 0.2],
    [0.1, 0.9, 0.2, 0.8],
    [0.8, 0.9, 0.3, 0.2],
    [0.2, 0.1, 0.9, 0.8],
    [0.9, 0.3, 0.8, 0.1],
]


OUT = Path(__file__).resolve().parent.parent / "traces" / "tiny"


def main(out: Path = OUT) -> None:
    shape = shape_from_dims("tiny", "llama", n_layers=1, d=4, d_int=4, n_heads=1, n_kv_heads=1, vocab=16, tied=True)
    meta = TraceMeta(
        model=shape, source="hand-made (tools/make_tiny_trace.py)", seq_len=6, command="python tools/make_tiny_trace.py"
    )
    h = np.array(ROWS, np.float16)
    with TraceWriter(out, meta) as w:
        w.append(0, {"x": h, "h": h, "gate": h, "up": np.ones_like(h)}, np.arange(6), np.arange(6))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
