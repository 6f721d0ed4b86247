"""The ``simcore frontier`` click command (thin: parse, call :func:`simcore.frontier.run_frontier`, print)."""

from __future__ import annotations

import sys

import click

AXIS_HELP = {
    "device": "device profiles, comma-separated (a18,snapdragon-8s-gen3)",
    "dram": "DRAM budgets: 48MB,64MB or a range 32MB:128MB:16MB",
    "flash_bw": "Flash bandwidths in GB/s: 1,2 or 0.5:4:0.5",
    "dram_bw": "DRAM bandwidths in GB/s: 60,77",
    "flash_model": "Flash time models: constant,curve",
    "layout": "`simcore layout` files, comma-separated; with --flash-model curve",
    "method": "methods: dense,glu,gate,up,cats,dip,dip-ca (dense, the reference, is added when missing)",
    "policy": "policies, comma-separated: names (simcore policies) or paths of policy .py files",
    "gamma": "dip-ca gammas: 0.1,0.2 or 0.1:0.5:0.1",
    "density": "MLP densities: 0.4,0.5 or 0.3:0.7:0.1",
    "bits": "weight bits: 4,8",
}
"""Help of the swept settings; the axes themselves are simcore.sweep.grid.AXES."""


def _axis_options(f):
    from simcore.sweep.grid import AXES

    for axis in reversed(AXES):
        f = click.option("--" + axis.replace("_", "-"), axis, help=AXIS_HELP.get(axis, f"values of {axis}"))(f)
    return f


@click.command("frontier")
@click.option(
    "--grid",
    "grid_file",
    type=click.Path(dir_okay=False),
    help="YAML grid file in `simcore sweep --grid` format; flags below add or replace axes",
)
@_axis_options
@click.option("--trace", help="trace of the evaluated model for the replays [default: traces/<model>]")
@click.option("--context", type=int, help="context length (KV cache) [default: 1024]")
@click.option("--warmup", type=int, help="tokens left out of steady-state figures [default: 100]")
@click.option("--replay-tokens", type=int, help="replay only the first N tokens of the trace")
@click.option("--model", "model_name", help="model alias, Hugging Face id or local directory [default: smollm2-135m]")
@click.option("--model-path", help="local model directory or .gguf file")
@click.option("--text", type=click.Path(dir_okay=False), help="evaluate on a local text file")
@click.option("--dataset", help="wikitext2 (local datasets cache) or a local wiki.test.raw")
@click.option("--tokens", "eval_tokens", type=int, default=1024, show_default=True, help="tokens scored per eval")
@click.option("--seq-len", type=int, default=256, show_default=True, help="tokens per eval window")
@click.option("--offset", type=int, default=0, show_default=True, help="first token of the evaluation text")
@click.option("--calib-tokens", type=int, default=512, show_default=True, help="cats: calibration tokens")
@click.option(
    "--calib-offset", type=int, default=8192, show_default=True, help="first calibration token (disjoint from eval)"
)
@click.option(
    "--thresholds",
    default="1,2.5,5,10",
    show_default=True,
    help="perplexity budgets in percent over dense (1,2.5 or 1%,2.5%); 'none' for no relative budgets",
)
@click.option("--abs-thresholds", help="perplexity budgets in points over dense: 0.1,0.2,0.5")
@click.option(
    "--out",
    default="results/frontier",
    show_default=True,
    type=click.Path(file_okay=False),
    help="output directory; re-running the same frontier there resumes it",
)
@click.option(
    "--workers", type=int, default=1, show_default=True, help="eval processes (each loads the model; 1: this one)"
)
@click.option("--sweep-workers", type=int, default=0, show_default=True, help="replay processes (0: one per core)")
@click.option(
    "--executor",
    type=click.Choice(["process", "dask"]),
    default="process",
    show_default=True,
    help="run replays and evals in local processes or on an existing Dask cluster",
)
@click.option("--scheduler", help="Dask scheduler address for --executor dask (tcp://host:8786)")
@click.option("--progress/--no-progress", default=None, help="progress bars on stderr (default: when a terminal)")
def frontier_command(
    grid_file,
    trace,
    context,
    warmup,
    replay_tokens,
    model_name,
    model_path,
    text,
    dataset,
    eval_tokens,
    seq_len,
    offset,
    calib_tokens,
    calib_offset,
    thresholds,
    abs_thresholds,
    out,
    workers,
    sweep_workers,
    executor,
    scheduler,
    progress,
    **axes,
):
    """Accuracy against throughput: replay a grid for tokens/s, run each eval it needs once for perplexity,
    and compare methods at equal accuracy.

    Perplexity is evaluated once per (method, density, options) and reused across DRAM sizes, policies and
    devices, except where the masks depend on the cache (dip-ca with gamma < 1): then once per DRAM size and
    policy too. Writes into --out: frontier.parquet (one row per configuration), summary.md (best tokens/s
    within perplexity budgets, best gamma, DRAM saved), pareto.png, and the resumable logs (evals.jsonl,
    sweep.parquet).

    \b
    Examples:
      simcore frontier --method dip,dip-ca --density 0.4:0.7:0.1 --gamma 0.1,0.2 --dram 48MB,64MB \\
                       --policy lfu,belady --device a18 --tokens 256 --out results/frontier
      simcore frontier --grid grids/frontier.yaml --abs-thresholds 0.1,0.2,0.5
    """
    from simcore.frontier.run import run_frontier
    from simcore.report_text import printable
    from simcore.sweep.grid import AXES, Grid, parse_axis
    from simcore.sweep.run import raise_if_nothing_succeeded

    parsed = {k: parse_axis(k, v) for k, v in axes.items() if k in AXES and v is not None}
    fixed = {
        k: v
        for k, v in {"trace": trace, "context": context, "warmup": warmup, "tokens": replay_tokens}.items()
        if v is not None
    }
    if grid_file:
        grid = Grid.from_yaml(grid_file, overrides=parsed)
        grid.fixed.update(fixed)
    else:
        grid = Grid(parsed, fixed)
    result = run_frontier(
        grid,
        out,
        model=model_name,
        model_path=model_path,
        text=text,
        dataset=dataset,
        tokens=eval_tokens,
        seq_len=seq_len,
        offset=offset,
        calib_tokens=calib_tokens,
        calib_offset=calib_offset,
        thresholds=None if thresholds.strip().lower() == "none" else thresholds,
        abs_thresholds=abs_thresholds,
        workers=workers,
        sweep_workers=sweep_workers,
        executor=executor,
        scheduler=scheduler,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    s = result.stats
    click.echo(
        f"{s['configurations']} configurations ({s['ok']} ok, {s['failed']} failed); {s['evals']} evals needed: "
        f"{s['evals_run']} run now, {s['evals_from_log']} from the log; {s['rows_reusing_an_eval']} configurations "
        f"reuse an eval; {s['wall_s']:.1f} s"
    )
    if result.dense_perplexity is not None:
        click.echo(f"dense perplexity {result.dense_perplexity:.3f}")
    for p in result.paths:
        click.echo(printable(p))
    raise_if_nothing_succeeded(result.table)  # exit status 2 when no configuration succeeded


__all__ = ["frontier_command"]
