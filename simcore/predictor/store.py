"""DejaVu predictor files (``simcore train-predictor`` writes them, method ``dejavu`` reads them), and
the NumPy forward pass that replay and eval run: no torch needed.

A predictor file is a NumPy ``.npz`` archive, one small MLP per decoder layer, stored float16 or float32:

* ``w1/<layer>``: (d, hidden), ``b1/<layer>``: (hidden,), ``w2/<layer>``: (hidden, d_int), ``b2/<layer>``:
  (d_int,); the logits of a token are ``relu(|x| @ w1 + b1) @ w2 + b2``, where ``|x|`` are the float16
  magnitudes of the MLP input that traces store (and eval takes from the running model): traces keep
  no signs, so the predictor's input is |x|, not x. The input standardisation used in training is
  folded into ``w1`` and ``b1``.
* ``meta``: a JSON string: ``format`` ("simcore-predictor"), ``version``, ``model`` ({name, n_layers, d,
  d_int}), ``hidden``, ``epochs``, ``top`` (the fraction of largest |h| per token trained on), ``dtype``,
  ``provenance`` (``simcore.calibration.provenance``: model, text, text_sha256, tokens [first, end) in
  the text), ``trace`` (path, its tokens [first, end) trained on, its offset in the text), ``held_out``
  (tokens and per-layer recall of the true top-k), ``training`` and ``simcore_version``.
"""

from __future__ import annotations

import functools
import io
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from simcore.config import NJIT
from simcore.errors import ConfigError

FORMAT = "simcore-predictor"
VERSION = 1
BLOCK_TOKENS = 256
"""Tokens scored at a time (bounds the hidden activations' memory)."""
LEVELS = 0x7BFF
"""The highest finite float16 bit pattern (65504.0): scores are patterns 0 .. LEVELS, ordered as values."""


@dataclass(eq=False)
class Predictor:
    """A loaded predictor file: per layer ``w1`` (d, hidden), ``b1`` (hidden,), ``w2`` (hidden, d_int),
    ``b2`` (d_int,), float32 in memory; ``meta`` as in the module docstring."""

    path: str
    meta: dict
    w1: list = field(repr=False)
    b1: list = field(repr=False)
    w2: list = field(repr=False)
    b2: list = field(repr=False)

    @property
    def provenance(self) -> dict:
        """{model, text, text_sha256, tokens [first, end) in the text} of the calibration tokens."""
        return self.meta["provenance"]

    @property
    def n_params(self) -> int:
        return int(sum(a.size for group in (self.w1, self.b1, self.w2, self.b2) for a in group))

    @property
    def nbytes(self) -> float:
        """Bytes of every layer's predictor at its stored precision: what is resident in DRAM and read
        every token."""
        return float(self.n_params * np.dtype(self.meta["dtype"]).itemsize)

    def logits(self, layer: int, x: np.ndarray) -> np.ndarray:
        """float32 (T, d_int) logits of layer ``layer`` for input magnitudes ``x`` (T, d), in blocks of
        :data:`BLOCK_TOKENS` tokens.

        In NumPy; in a process that has already imported torch (eval, or a replay called from it), the two
        products run on torch instead: NumPy's BLAS and torch keep separate thread pools, and alternating
        between them (eval does, once per layer) makes each wait on the other's spinning threads. The two
        give the same logits up to float32 rounding."""
        torch = sys.modules.get("torch")
        w1, b1, w2, b2 = self.w1[layer], self.b1[layer], self.w2[layer], self.b2[layer]
        out = np.empty((x.shape[0], w2.shape[1]), np.float32)
        if torch is not None:
            tw1, tb1, tw2, tb2 = (torch.from_numpy(a) for a in (w1, b1, w2, b2))
        for a in range(0, x.shape[0], BLOCK_TOKENS):
            xb = np.asarray(x[a : a + BLOCK_TOKENS], np.float32)
            if torch is not None:
                with torch.no_grad():
                    z = torch.addmm(tb1, torch.from_numpy(xb), tw1).clamp_(min=0)
                    torch.addmm(tb2, z, tw2, out=torch.from_numpy(out[a : a + BLOCK_TOKENS]))
                continue
            z = xb @ w1
            z += b1
            np.maximum(z, 0, out=z)
            np.matmul(z, w2, out=out[a : a + BLOCK_TOKENS])
            out[a : a + BLOCK_TOKENS] += b2
        return out

    def scores(self, layer: int, x: np.ndarray) -> np.ndarray:
        """float16 (T, d_int) scores ranking the neurons of layer ``layer`` for input magnitudes ``x`` (T, d),
        as replay's kernels take magnitudes: per token, the logits z quantised linearly onto the 31,744
        finite non-negative float16 bit patterns, lowest to highest (a monotone map: the ranking is the
        logits' up to 1/31,743 of each token's logit range; one pass, no exp). NaN ranks lowest."""
        return _rank_patterns(self.logits(layer, x)).view(np.float16)

    def check_fits(self, shape) -> None:
        """Refuse a predictor trained on a trace of another model or shape (``shape``: a ModelShape)."""
        m = self.meta["model"]
        want = {"name": shape.name, "n_layers": shape.n_layers, "d": shape.d, "d_int": shape.d_int}
        if any(m.get(k) != v for k, v in want.items()):
            raise ConfigError(
                f"--predictor {self.path} is a predictor from another trace shape: {_shape(m)}, not this model's "
                f"{_shape(want)}; train one on a trace of this model (simcore train-predictor TRACE)"
            )


def _shape(m: dict) -> str:
    return f"{m.get('name')!r} ({m.get('n_layers')} layers, d {m.get('d')}, d_int {m.get('d_int')})"


def to_bytes(layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], meta: dict) -> bytes:
    """The ``.npz`` bytes of a predictor: ``layers`` [(w1, b1, w2, b2)] per layer (cast to
    ``meta["dtype"]``), ``meta`` the module docstring's keys (format and version are added)."""
    dtype = np.dtype(meta["dtype"])
    arrays = {}
    for i, group in enumerate(layers):
        for name, a in zip(("w1", "b1", "w2", "b2"), group):
            arrays[f"{name}/{i}"] = np.ascontiguousarray(a, dtype)
    arrays["meta"] = np.array(json.dumps({"format": FORMAT, "version": VERSION, **meta}))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load(path: str | Path) -> Predictor:
    """Read and check a predictor file (cached by path, size and modification time)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"--predictor {p}: no such file; train one with `simcore train-predictor TRACE` (it writes TRACE/predictor.npz)"
        )
    st = p.stat()
    return _load(str(p.resolve()), st.st_size, st.st_mtime_ns, str(path))


@functools.lru_cache(maxsize=2)
def _load(resolved: str, size: int, mtime_ns: int, given: str) -> Predictor:
    bad = f"--predictor {given} is not a simcore predictor file; train one with `simcore train-predictor`"
    try:
        with np.load(resolved, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else None
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ConfigError(bad)
            if meta.get("version") != VERSION:
                raise ConfigError(
                    f"--predictor {given} has format version {meta.get('version')}, this simcore reads {VERSION}; "
                    "train it again"
                )
            n = int(meta["model"]["n_layers"])
            groups = {
                name: [np.asarray(z[f"{name}/{i}"], np.float32) for i in range(n)] for name in ("w1", "b1", "w2", "b2")
            }
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
        raise ConfigError(bad) from None
    d, d_int = int(meta["model"]["d"]), int(meta["model"]["d_int"])
    for i in range(n):
        w1, b1, w2, b2 = (groups[k][i] for k in ("w1", "b1", "w2", "b2"))
        h = w1.shape[1] if w1.ndim == 2 else -1
        if w1.shape != (d, h) or b1.shape != (h,) or w2.shape != (h, d_int) or b2.shape != (d_int,):
            raise ConfigError(
                f"--predictor {given}: layer {i}'s weights do not have the shapes its metadata says; train it again"
            )
    return Predictor(given, meta, groups["w1"], groups["b1"], groups["w2"], groups["b2"])


@njit(**NJIT)
def _rank_patterns(z):
    """uint16 (T, N) float16 bit patterns of the float32 logits ``z`` (T, N), per row a linear map of
    [min, max] onto [0, LEVELS] (order kept; a row of equal values maps to 0; NaN and -inf to 0, +inf to
    LEVELS; the range is that of the finite values)."""
    T, N = z.shape
    out = np.empty((T, N), np.uint16)
    top_level = np.float64(LEVELS)
    for t in range(T):
        lo, hi = np.inf, -np.inf
        for j in range(N):
            v = z[t, j]
            if np.isfinite(v):
                lo = min(lo, v)
                hi = max(hi, v)
        scale = top_level / (np.float64(hi) - lo) if hi > lo else 0.0
        for j in range(N):
            v = np.float64(z[t, j])
            q = (v - lo) * scale
            if not q >= 0.0:  # NaN, -inf, or every value equal
                q = 0.0
            out[t, j] = np.uint16(min(q, top_level))
    return out
