"""Synthetic traces for any model shape, with the structure real MLP activations show:

- heavy-tailed magnitudes (Student-t innovations, log-normal channel scales);
- channels that are persistently large (a few "massive" input channels; GLU neurons with a
  positive gate bias that fire on most tokens);
- correlation between consecutive tokens (AR(1) latent per channel, coefficient ``phi``).

``h = |act(g)| * |u|`` is built from the same gate and up values the trace records, so the neuron
baselines and dip see one consistent layer. Seeded: the same (shape, tokens, seed) gives the same
bytes. Memory is bounded by one batch of ``batch_tokens`` rows per layer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from simcore.errors import ConfigError
from simcore.models import ModelShape, preset
from simcore.trace.format import VALUE_COLUMNS, TraceMeta, TraceWriter, check_out_dir, parse_columns


def _silu(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-v) = inf for very negative v gives v / inf = -0, as it should
        return v / (1.0 + np.exp(-v))


class _AR1:
    """AR(1) processes, one per channel: z_t = phi z_{t-1} + sqrt(1 - phi^2) e_t, e_t ~ Student-t(df)."""

    def __init__(self, rng: np.random.Generator, n: int, phi: float, df: float):
        self.rng, self.n, self.phi, self.df = rng, n, phi, df
        self.z = rng.standard_normal(n).astype(np.float32)
        self.scale = np.float32(np.sqrt(1 - phi * phi))

    def next(self, T: int) -> np.ndarray:
        e = self.rng.standard_t(self.df, size=(T, self.n)).astype(np.float32) * self.scale
        out = np.empty((T, self.n), np.float32)
        z = self.z
        for t in range(T):
            z = self.phi * z + e[t]
            out[t] = z
        self.z = z
        return out


def synth_trace(
    model: str | ModelShape,
    tokens: int,
    out: str | os.PathLike,
    seed: int = 0,
    seq_len: int = 256,
    phi: float = 0.7,
    columns: str | tuple[str, ...] = VALUE_COLUMNS,
    batch_tokens: int = 256,
    progress: bool = False,
) -> Path:
    """Write a synthetic trace of ``tokens`` tokens for a model shape (preset name or ModelShape),
    holding the magnitude ``columns`` (``x`` and ``h`` required; a string "x,h" is accepted).

    Returns the trace directory. Raises ConfigError for a bad token count, window length, seed,
    correlation, column list or output path, before anything is written.
    """
    shape = preset(model) if isinstance(model, str) else model
    if tokens <= 0:
        raise ConfigError(f"--tokens must be positive, got {tokens}")
    if seq_len <= 0:
        raise ConfigError(f"--seq-len must be a positive number of tokens, got {seq_len}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")
    if not 0 <= phi < 1:  # also false for NaN
        raise ConfigError(f"--phi must be in [0, 1), got {phi}")
    if batch_tokens <= 0:
        raise ConfigError(f"batch_tokens must be positive, got {batch_tokens}")
    columns = parse_columns(columns)
    check_out_dir(out)
    act = (
        _silu
        if shape.activation == "silu"
        else (lambda v: 0.5 * v * (1 + np.tanh(0.7978845608 * (v + 0.044715 * v**3))))
    )
    meta = TraceMeta(
        model=shape,
        tokenizer=None,
        source="synthetic",
        seq_len=seq_len,
        columns=list(columns),
        command=" ".join(sys.argv),
        extra={"seed": seed, "phi": phi},
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=shape.n_layers * tokens, unit="tok-layer", unit_scale=True, desc="synth", file=sys.stderr, leave=False
        )
    token_ids = np.arange(tokens, dtype=np.int64) % shape.vocab
    positions = np.arange(tokens, dtype=np.int64) % seq_len
    with TraceWriter(out, meta) as w:
        for layer in range(shape.n_layers):
            rng = np.random.default_rng([seed, layer])
            d, di = shape.d, shape.d_int
            x_scale = rng.lognormal(0.0, 0.6, d).astype(np.float32)
            massive = rng.choice(d, size=max(1, d // 512), replace=False)
            x_scale[massive] *= rng.uniform(10, 40, massive.size).astype(np.float32)
            g_scale = rng.lognormal(0.0, 0.4, di).astype(np.float32)
            g_bias = rng.normal(-0.8, 0.9, di).astype(np.float32)  # neurons with bias > 0 fire on most tokens
            u_scale = rng.lognormal(-1.0, 0.5, di).astype(np.float32)
            zx, zg, zu = _AR1(rng, d, phi, 5.0), _AR1(rng, di, phi, 5.0), _AR1(rng, di, phi, 5.0)
            for t0 in range(0, tokens, batch_tokens):
                nb = min(batch_tokens, tokens - t0)
                x = np.abs(zx.next(nb) * x_scale)
                gate = np.abs(act(zg.next(nb) * g_scale + g_bias))
                up = np.abs(zu.next(nb) * u_scale)
                values = {"x": x, "h": gate * up, "gate": gate, "up": up}
                w.append(layer, {c: values[c] for c in columns}, token_ids[t0 : t0 + nb], positions[t0 : t0 + nb])
                if bar is not None:
                    bar.update(nb)
    if bar is not None:
        bar.close()
    return Path(out)
