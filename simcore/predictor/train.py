"""Training DejaVu predictors from a trace (``simcore train-predictor``).

Per decoder layer, a small MLP ``|x| -> hidden -> d_int`` (ReLU; the paper: 1,000 hidden units, at most
20 epochs) learns which GLU neurons are among the ``top`` fraction of largest |h| of a token, with a
multi-label cross-entropy (binary cross-entropy on the logits) against that top set, from the trace's
calibration tokens. Traces store magnitudes only (float16 |x| and |h|), so the predictor's input is |x|.
The last ``val`` share of the calibration tokens is held back to keep the epoch of lowest loss (training
stops after ``PATIENCE`` epochs without improvement). Its recall of the true top-k is then measured on
held-out tokens of the trace that it never saw, with the stored (e.g. float16) weights through the same
NumPy forward pass replay runs.

The trace is streamed one layer at a time: memory holds one layer's calibration and held-out rows
(float16) and one layer's predictor. torch (CPU is enough) is imported only here.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np

from simcore import __version__
from simcore.calibration import provenance, token_ranges
from simcore.errors import ConfigError
from simcore.predictor import store
from simcore.results import atomic_write_bytes, check_output
from simcore.trace.format import TraceReader

PATIENCE = 5
"""Epochs without a lower validation loss after which a layer's training stops."""
RECALL_AT = (0.1, 0.25, 0.5)
"""Fractions of the neurons at which held-out recall is also reported (besides ``top``)."""
DTYPES = ("float16", "float32")


def recall(scores: np.ndarray, h: np.ndarray, k: int) -> np.ndarray:
    """Per token, the share of the ``k`` largest ``h`` (T, U) among the ``k`` largest ``scores`` (T, U)."""
    if k <= 0 or scores.shape[0] == 0:
        return np.ones(scores.shape[0])
    pred = np.argpartition(-np.asarray(scores, np.float32), k - 1, axis=1)[:, :k]
    true = np.argpartition(-np.asarray(h, np.float32), k - 1, axis=1)[:, :k]
    hit = np.zeros(h.shape, np.bool_)
    np.put_along_axis(hit, true, True, axis=1)
    return np.take_along_axis(hit, pred, axis=1).sum(1) / k


def _rows(reader: TraceReader, layer: int, ranges: list[tuple[int, int]], batch_tokens: int) -> list[dict]:
    """The x and h rows of each token range [a, b) of one layer, float16, read in one streamed pass."""
    widths = reader.meta.widths()
    out = [{c: np.empty((b - a, widths[c]), np.float16) for c in ("x", "h")} for a, b in ranges]
    stop = max(b for _, b in ranges)
    t0 = 0
    for batch in reader.iter_layer(layer, ("x", "h"), batch_tokens=batch_tokens):
        nb = len(batch["x"])
        for (a, b), rows in zip(ranges, out):
            lo, hi = max(a, t0), min(b, t0 + nb)
            if lo < hi:
                for c in ("x", "h"):
                    rows[c][lo - a : hi - a] = batch[c][lo - t0 : hi - t0]
        t0 += nb
        if t0 >= stop:
            break
    return out


def _fit(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, val: float, lr: float, batch: int, seed: int):
    """Train one layer's MLP on ``x`` (T, d) float32 and multi-hot ``y`` (T, d_int); the last ``val``
    share of the rows picks the epoch. Returns ((w1 (d, hidden), b1, w2 (hidden, d_int), b2) with the
    input standardisation folded in, {"train_loss", "val_loss", "epochs_run", "best_epoch"})."""
    import torch

    n_val = int(round(val * len(x))) if len(x) > 1 else 0
    n_val = min(n_val, len(x) - 1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    tr_x, tr_y, va_x, va_y = xt[: len(x) - n_val], yt[: len(x) - n_val], xt[len(x) - n_val :], yt[len(x) - n_val :]
    mean = tr_x.mean(0)
    std = tr_x.std(0, unbiased=False).clamp_min(1e-3)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    norm_tr, norm_va = (tr_x - mean) / std, (va_x - mean) / std
    best, best_state, best_epoch, train_loss, since = float("inf"), None, 0, float("nan"), 0
    epochs_run = 0
    for epoch in range(epochs):
        net.train()
        total, seen = 0.0, 0
        for idx in torch.randperm(len(norm_tr), generator=gen).split(batch):
            loss = loss_fn(net(norm_tr[idx]), tr_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        train_loss = total / seen
        epochs_run = epoch + 1
        net.eval()
        with torch.no_grad():
            current = float(loss_fn(net(norm_va), va_y)) if n_val else train_loss
        if current < best:
            best, best_epoch, since = current, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            since += 1
            if since >= PATIENCE:
                break
    if best_state is not None:  # None only if every loss was NaN: keep the last weights
        net.load_state_dict(best_state)
    w1, b1 = net[0].weight.detach().double(), net[0].bias.detach().double()  # (hidden, d), (hidden,)
    w2, b2 = net[2].weight.detach().double(), net[2].bias.detach().double()  # (d_int, hidden), (d_int,)
    inv = 1.0 / std.double()
    w1_folded = (w1 * inv).T  # ((x - mean) / std) @ w1.T + b1 = x @ (w1 / std).T + (b1 - w1 @ (mean / std))
    b1_folded = b1 - w1 @ (mean.double() * inv)
    weights = tuple(a.numpy().astype(np.float32) for a in (w1_folded, b1_folded, w2.T, b2))
    info = {
        "train_loss": train_loss,
        "val_loss": best if n_val else None,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
    }
    return weights, info


def train_predictors(
    trace: str | Path,
    out: str | Path | None = None,
    *,
    calib_tokens: int = 1024,
    first: int | None = None,
    eval_tokens: int = 512,
    hidden: int = 1000,
    epochs: int = 20,
    top: float = 0.1,
    dtype: str = "float16",
    lr: float = 1e-3,
    batch_size: int = 64,
    val: float = 0.1,
    seed: int = 0,
    batch_tokens: int = 256,
    threads: int = 0,
    progress: bool = False,
) -> dict:
    """Train one predictor per layer of ``trace`` and write them to ``out`` (default
    ``TRACE/predictor.npz``), atomically; returns the file's metadata (``simcore.predictor.store``).

    Calibration tokens: ``calib_tokens`` from ``first`` (default: the trace's last ones); held-out recall
    on up to ``eval_tokens`` tokens just before them (after them when ``first`` is 0). Each layer: an MLP
    |x| (d) -> ``hidden`` -> d_int trained for at most ``epochs`` epochs (Adam, ``lr``, minibatches of
    ``batch_size`` tokens, the last ``val`` share of the calibration tokens picking the epoch) against the
    ``top`` fraction of largest |h| per token; stored as ``dtype``. ``threads``: torch's CPU threads (0: its
    default; 1 is fastest for small predictors on a busy machine). Raises ConfigError or TraceError for
    bad settings or traces, before any training.
    """
    if hidden < 1:
        raise ConfigError(f"--hidden must be a positive number of units, got {hidden}")
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    if not 0 < top < 1:
        raise ConfigError(f"--top must be a fraction in (0, 1) of the neurons, got {top}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if not 0 <= val < 1:
        raise ConfigError(f"--val must be in [0, 1), got {val}: the share of calibration tokens that picks the epoch")
    if lr <= 0 or batch_size < 1 or seed < 0 or batch_tokens < 1 or threads < 0:
        raise ConfigError("--lr and --batch-size must be positive, --seed and --threads >= 0")
    reader = TraceReader(trace)
    out = Path(out) if out is not None else reader.path / "predictor.npz"
    if out.suffix != ".npz":
        raise ConfigError(f"--out: a predictor file ends in .npz; got {str(out)!r}")
    check_output(out)
    reader.check_columns(("x", "h"), "train-predictor")
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "train-predictor needs torch: run `pip install torch==2.13.0` then `pip install 'simcore[trace]'`"
        ) from None
    shape = reader.model
    (c0, c1), (h0, h1) = token_ranges(reader.n_tokens, calib_tokens, first, eval_tokens)
    k_top = max(1, int(round(top * shape.d_int)))
    fractions = sorted({top, *RECALL_AT})
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=shape.n_layers, unit="layer", desc="train-predictor", file=sys.stderr, dynamic_ncols=True)
    layers, infos, recalls, recall_at = [], [], [], {f: [] for f in fractions}
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for layer in range(shape.n_layers):
            ranges = [(c0, c1)] + ([(h0, h1)] if h1 > h0 else [])
            parts = _rows(reader, layer, ranges, batch_tokens)
            cal = parts[0]
            y = np.zeros((c1 - c0, shape.d_int), np.float32)
            np.put_along_axis(y, np.argpartition(-cal["h"].astype(np.float32), k_top - 1, axis=1)[:, :k_top], 1.0, 1)
            weights, info = _fit(
                cal["x"].astype(np.float32), y, hidden, epochs, val, lr, batch_size, seed * 1000 + layer
            )
            stored = tuple(np.asarray(w, dtype).astype(np.float32) for w in weights)  # what replay will use
            layers.append(weights)
            infos.append(info)
            if len(parts) > 1:
                one = store.Predictor("", {"dtype": dtype}, *[[w] for w in stored])
                s = one.scores(0, parts[1]["x"])
                for frac in fractions:
                    recall_at[frac].append(
                        float(recall(s, parts[1]["h"], max(1, int(round(frac * shape.d_int)))).mean())
                    )
                recalls.append(recall_at[top][-1])
            if bar is not None:
                post = {"loss": f"{info['val_loss'] if info['val_loss'] is not None else info['train_loss']:.4f}"}
                if recalls:
                    post["recall"] = f"{recalls[-1]:.3f}"
                bar.set_postfix(post)
                bar.update(1)
    finally:
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
    extra = reader.meta.extra or {}
    offset = int(extra.get("offset") or 0)
    held = None
    if recalls:
        held = {
            "tokens": [h0, h1],
            "k": k_top,
            "recall": recalls,
            "recall_mean": float(np.mean(recalls)),
            "recall_at": {f"{f:g}": float(np.mean(v)) for f, v in recall_at.items()},
        }
    meta = {
        "model": {"name": shape.name, "n_layers": shape.n_layers, "d": shape.d, "d_int": shape.d_int},
        "input": "|x|: float16 magnitudes of the MLP input (traces keep no signs)",
        "hidden": hidden,
        "epochs": epochs,
        "top": top,
        "dtype": dtype,
        "provenance": provenance(shape.name, reader.meta.source, extra.get("text_sha256"), offset + c0, offset + c1),
        "trace": {"path": str(reader.path), "tokens": [c0, c1], "offset": offset, "n_tokens": reader.n_tokens},
        "held_out": held,
        "training": {
            "loss": "binary cross-entropy on the logits against the top fraction of |h| per token",
            "optimizer": "adam",
            "lr": lr,
            "batch_size": batch_size,
            "val": val,
            "patience": PATIENCE,
            "seed": seed,
            "layers": infos,
        },
        "simcore_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "path": str(out),
    }
    atomic_write_bytes(out, store.to_bytes(layers, meta))
    return {"format": store.FORMAT, "version": store.VERSION, **meta}
