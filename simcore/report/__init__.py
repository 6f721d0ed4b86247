"""``simcore report``: plots and a Markdown summary from a sweep results table.

    from simcore.report import make_report
    paths = make_report("sweep/results.parquet", "report/", eval_path="eval.csv")

Writes ``throughput_vs_density.png``, ``pareto_tokens_vs_perplexity.png`` (only with eval data),
``dram_sweep.png``, ``gamma_effect.png``, ``policies.png``, ``flash_model.png`` (only with --flash-model
curve rows) and ``summary.md`` into ``out_dir``. A plot whose
data are absent (one DRAM size, one gamma, no eval) is skipped and the summary says why. Files are written
atomically (temporary file in the same directory, then a rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from simcore.errors import ConfigError

PLOT_NAMES = (
    "throughput_vs_density.png",
    "pareto_tokens_vs_perplexity.png",
    "dram_sweep.png",
    "gamma_effect.png",
    "policies.png",
    "flash_model.png",
)


def make_report(
    results: str | os.PathLike | pa.Table, out_dir: str | os.PathLike, eval_path: str | os.PathLike | None = None
) -> list[Path]:
    """Write the report's plots and ``summary.md`` into ``out_dir``; return the paths written (summary last).

    ``results``: the sweep results table (Parquet path or pyarrow Table, one row per configuration, see
    ``simcore.report.data.REQUIRED``); rows whose ``status`` is not "ok" are counted and left out.
    ``eval_path``: optional Parquet or CSV with model, method, density, [gamma], perplexity.
    A plot skipped in this run is removed from ``out_dir`` if an earlier run left one there, so the directory
    matches the summary. Raises ConfigError for a missing or malformed input.
    """
    from simcore.report.data import join_eval, load_eval, load_results
    from simcore.report.plots import Plot, all_plots
    from simcore.report.summary import summary_markdown
    from simcore.results import atomic_write_bytes

    data = load_results(results)
    if eval_path is not None:
        join_eval(data, load_eval(eval_path))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a directory for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from simcore.results import output_error

        raise output_error(out / "summary.md", e, "report") from None
    written: list[Path] = []
    plots = all_plots(data)
    for p in plots:
        path = out / p.name
        if isinstance(p, Plot):
            atomic_write_bytes(path, p.png())
            p.figure.clear()
            written.append(path)
        elif path.exists():
            path.unlink()
            data.notes.append(f"removed `{p.name}` left by an earlier report (skipped this time)")
    summary = out / "summary.md"
    atomic_write_bytes(summary, summary_markdown(data, plots).encode())
    written.append(summary)
    return written


__all__ = ["make_report", "PLOT_NAMES"]
