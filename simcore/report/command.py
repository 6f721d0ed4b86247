"""The ``simcore report`` click command (thin: parse, call :func:`simcore.report.make_report`, print paths)."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="directory for the plots and summary.md"
)
@click.option(
    "--eval",
    "eval_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="perplexities (Parquet or CSV: model, method, density, [gamma], perplexity; the dense row is the baseline)",
)
def report_command(results, out, eval_path):
    """Plots and a Markdown summary from a sweep results table (RESULTS, Parquet).

    \b
    Writes into DIR: throughput_vs_density.png, pareto_tokens_vs_perplexity.png (with --eval),
    dram_sweep.png, gamma_effect.png, policies.png and summary.md; plots without data are skipped
    and summary.md says why.

    \b
    Examples:
      simcore report sweep/results.parquet --out report/
      simcore report sweep/results.parquet --out report/ --eval eval.csv
    """
    from simcore.report import make_report
    from simcore.report_text import printable

    for path in make_report(results, out, eval_path=eval_path):
        click.echo(printable(path))
