"""``simcore train-predictor``: train DejaVu predictors from a trace (torch is imported only when it runs)."""

from __future__ import annotations

import sys

import click

from simcore.predictor.train import DTYPES


def summary_lines(meta: dict) -> list[str]:
    """What a predictor file holds and how well it predicts, as text lines."""
    from simcore.units import format_bytes

    m, prov, tr = meta["model"], meta["provenance"], meta["trace"]
    n_params = m["n_layers"] * (m["d"] * meta["hidden"] + meta["hidden"] + meta["hidden"] * m["d_int"] + m["d_int"])
    size = n_params * (2 if meta["dtype"] == "float16" else 4)
    a, b = tr["tokens"]
    ta, tb = prov["tokens"]
    epochs = [info["best_epoch"] for info in meta["training"]["layers"]]
    lines = [
        f"wrote {meta['path']}: dejavu predictors for {m['name']} ({m['n_layers']} layers, |x| {m['d']} -> "
        f"{meta['hidden']} -> {m['d_int']} neurons), {format_bytes(size)} {meta['dtype']} (resident and read "
        "every token with --method dejavu)",
        f"  trained on tokens [{a}, {b}) of {tr['path']} (tokens [{ta}, {tb}) of {prov['text']}) against the top "
        f"{100 * meta['top']:g}% of |h| per token; epochs kept per layer {min(epochs)}-{max(epochs)} of at most "
        f"{meta['epochs']}",
    ]
    held = meta.get("held_out")
    if held is None:
        lines.append("  no held-out tokens to measure recall on (the calibration covers the trace)")
    else:
        r = held["recall"]
        at = ", ".join(f"top {100 * float(f):g}% {v:.3f}" for f, v in held["recall_at"].items())
        lines.append(
            f"  held-out tokens [{held['tokens'][0]}, {held['tokens'][1]}): recall of the true top "
            f"{100 * meta['top']:g}% {held['recall_mean']:.3f} (layers {min(r):.3f}-{max(r):.3f}); by fraction: {at}"
        )
    return lines


@click.command(name="train-predictor")
@click.argument("trace", type=click.Path())
@click.option(
    "--calib-tokens", type=int, default=1024, show_default=True, help="tokens of the trace the predictors train on"
)
@click.option("--first", type=int, help="first calibration token  [default: the trace's last --calib-tokens tokens]")
@click.option(
    "--eval-tokens",
    type=int,
    default=512,
    show_default=True,
    help="held-out tokens (before the calibration ones, or after them with --first 0) to measure recall on",
)
@click.option("--hidden", type=int, default=1000, show_default=True, help="hidden units of each layer's predictor")
@click.option("--epochs", type=int, default=20, show_default=True, help="at most this many epochs per layer")
@click.option("--top", type=float, default=0.1, show_default=True, help="fraction of largest |h| per token trained on")
@click.option("--dtype", type=click.Choice(DTYPES), default="float16", show_default=True, help="stored precision")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate")
@click.option("--batch-size", type=int, default=64, show_default=True, help="tokens per training step")
@click.option(
    "--val",
    type=float,
    default=0.1,
    show_default=True,
    help="share of the calibration tokens (the last) held back to pick each layer's epoch",
)
@click.option("--seed", type=int, default=0, show_default=True, help="random seed")
@click.option("--threads", type=int, default=0, show_default=True, help="torch CPU threads (0: torch's default)")
@click.option(
    "--out", type=click.Path(dir_okay=False), help="predictor file to write (FILE.npz)  [default: TRACE/predictor.npz]"
)
@click.option("--progress/--no-progress", default=None, help="progress bar on stderr (default: when a terminal)")
def train_predictor_command(
    trace,
    calib_tokens,
    first,
    eval_tokens,
    hidden,
    epochs,
    top,
    dtype,
    lr,
    batch_size,
    val,
    seed,
    threads,
    out,
    progress,
):
    """Train DejaVu predictors from a trace: per layer a small MLP (|x| -> hidden -> d_int, ReLU) that
    predicts which GLU neurons are among the largest |h| of a token; `--method dejavu --predictor FILE`
    applies them in replay, sweep and eval (on other tokens than those trained on).

    \b
    Example:
      simcore train-predictor traces/smollm2-135m --calib-tokens 1024 --out predictors/smollm2.npz
    """
    from simcore.predictor.train import train_predictors

    meta = train_predictors(
        trace,
        out,
        calib_tokens=calib_tokens,
        first=first,
        eval_tokens=eval_tokens,
        hidden=hidden,
        epochs=epochs,
        top=top,
        dtype=dtype,
        lr=lr,
        batch_size=batch_size,
        val=val,
        seed=seed,
        threads=threads,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    click.echo("\n".join(summary_lines(meta)))
