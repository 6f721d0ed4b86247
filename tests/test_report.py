"""simcore report: plots and summary.md from a sweep results table (and, optionally, perplexities).

The results table is built here from a simple memory model (static bytes + used MLP bytes from DRAM, missed
bytes from Flash), so the numbers look like a real sweep; expected figures are computed in the tests from the
rows themselves, not through the report's code.
"""

from __future__ import annotations

import math

import matplotlib.colors
import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from simcore.errors import ConfigError
from simcore.report import make_report
from simcore.report.command import report_command

PLOTS = [
    "throughput_vs_density.png",
    "pareto_tokens_vs_perplexity.png",
    "dram_sweep.png",
    "gamma_effect.png",
    "policies.png",
]
DRAMS = [2_000_000_000, 4_000_000_000, 6_000_000_000]
DENSITIES = [0.3, 0.5, 0.7]
STATIC, MLP, RESIDENT = 1.2e9, 4.0e9, 1.5e9  # bytes read per token, MLP weight bytes, resident bytes
DRAM_BW, FLASH_BW = 60.0, 1.0  # GB/s
PPL = {
    ("dense", None, None): 10.0,
    ("dip", 0.3, None): 11.2,
    ("dip", 0.5, None): 10.4,
    ("dip", 0.7, None): 10.1,
    ("dip-ca", 0.3, 0.2): 11.5,
    ("dip-ca", 0.5, 0.2): 10.45,
    ("dip-ca", 0.7, 0.2): 10.15,
    ("dip-ca", 0.3, 0.5): 11.3,
    ("dip-ca", 0.5, 0.5): 10.42,
    ("dip-ca", 0.7, 0.5): 10.12,
}


def _row(method, density, gamma, policy, dram):
    cached = min(1.0, (dram - RESIDENT) / MLP)  # fraction of the MLP weights the cache holds
    used = density * MLP
    if method == "dense":
        hit = cached
    else:
        hit = min(1.0, cached / math.sqrt(density)) ** (1.15 if policy == "lru" else 1.05)
        if method == "dip-ca":
            hit = 1 - (1 - hit) * (1 - 0.5 * (1 - gamma))
    flash = used * (1 - hit)
    t_dram, t_flash = (STATIC + used) / (DRAM_BW * 1e6), flash / (FLASH_BW * 1e6)  # ms
    tps = 1000.0 / (t_dram + t_flash)
    dip = method in ("dip", "dip-ca")
    return {
        "trace": "traces/mistral7b-synth",
        "model": "mistral7b",
        "device": "a18",
        "dram_bytes": dram,
        "flash_bw_gbps": FLASH_BW,
        "dram_bw_gbps": DRAM_BW,
        "method": method,
        "density": density,
        "rho_in": (3 * density - math.sqrt(density)) / 2 if dip else None,
        "rho_d": math.sqrt(density) if dip else None,
        "gamma": gamma,
        "policy": policy,
        "bits": 4.0,
        "context": 1024,
        "hit_rate": hit * 0.97,
        "hit_rate_steady": hit,
        "tokens_per_s": tps * 0.98,
        "tokens_per_s_steady": tps,
        "flash_bytes_per_token": flash,
        "dram_bytes_per_token": STATIC + used,
        "t_dram_ms": t_dram,
        "t_flash_ms": t_flash,
        "mlp_density": density * 1.002 if method != "dense" else 1.0,
        "mass_kept": 1.0 if method == "dense" else 0.9 + 0.1 * density,
        "key": f"{method}-{density}-{gamma}-{policy}-{dram}",
        "status": "ok",
        "error": None,
    }


def results_rows(drams=DRAMS, policies=("lfu", "lru"), gammas=(0.2, 0.5)):
    rows = []
    for dram in drams:
        for policy in policies:
            rows.append(_row("dense", 1.0, 1.0, policy, dram))
            for d in DENSITIES:
                rows.append(_row("dip", d, 1.0, policy, dram))
                for g in gammas:
                    rows.append(_row("dip-ca", d, g, policy, dram))
    bad = _row("dip-ca", 0.5, 0.2, "belady", DRAMS[0])
    bad.update({k: None for k in ("tokens_per_s", "tokens_per_s_steady", "hit_rate", "hit_rate_steady")})
    bad.update(status="error", error="ConfigError: --policy belady needs masks that do not depend on the cache")
    rows.append(bad)
    return rows


def write_results(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_eval(path):
    lines = ["model,method,density,gamma,perplexity"]
    for (m, d, g), p in PPL.items():
        lines.append(f"mistral7b,{m},{'' if d is None else d},{'' if g is None else g},{p}")
    path.write_text("\n".join(lines) + "\n")
    return path


def check_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    assert img[..., :3].std() > 0.05  # not blank


def table_after(summary: str, heading: str, occurrence: int = 0) -> list[list[str]]:
    """Cells of the first Markdown table after the ``occurrence``-th line equal to ``heading``."""
    lines = summary.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == heading]
    i = starts[occurrence] + 1
    while not lines[i].startswith("|"):
        i += 1
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append([c.strip() for c in lines[i].strip("|").split("|")])
        i += 1
    return rows[2:]  # header and separator dropped


def fmt(v):
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def test_report_with_eval_writes_every_plot_and_the_best_throughput_within_budget(tmp_path):
    rows = results_rows()
    res = write_results(tmp_path / "results.parquet", rows)
    paths = make_report(res, tmp_path / "report", eval_path=write_eval(tmp_path / "eval.csv"))
    assert [p.name for p in paths] == PLOTS + ["summary.md"]
    for p in paths[:-1]:
        check_png(p)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"{len(rows)} rows: {len(rows) - 1} ok, 1 failed" in summary
    assert summary.count("skipped") == 1 and "`flash_model.png`: skipped — no --flash-model curve rows" in summary
    assert "| dram_bytes | 3 | 2 GB, 4 GB, 6 GB |" in summary
    assert "| method | 3 | dense, dip, dip-ca |" in summary

    def ppl(r):
        return PPL[
            ("dense", None, None)
            if r["method"] == "dense"
            else (r["method"], r["density"], r["gamma"] if r["method"] == "dip-ca" else None)
        ]

    table = table_after(summary, "#### dip-ca")
    assert [c[0] for c in table] == ["2", "4", "6"]
    for cells, dram in zip(table, DRAMS):
        at = [r for r in ok(rows) if r["dram_bytes"] == dram]
        dense = max(r["tokens_per_s_steady"] for r in at if r["method"] == "dense")
        assert cells[1] == fmt(dense)
        for col, budget in ((2, 0.2), (4, 0.5)):
            cand = [r for r in at if r["method"] == "dip-ca" and ppl(r) <= 10.0 + budget + 1e-9]
            best = max(cand, key=lambda r: r["tokens_per_s_steady"])
            assert cells[col] == fmt(best["tokens_per_s_steady"])
            assert f"density {best['density']:g}, γ {best['gamma']:g}" in cells[col + 1]
            assert best["policy"] in cells[col + 1]
    # within +0.2 only density 0.7 qualifies, within +0.5 density 0.5 does too and is faster
    assert "density 0.7" in table[1][3] and "density 0.5" in table[1][5]

    # DRAM saved: dense's tokens/s at 6 GB (lfu) reached by dip-ca within +0.5 ppl, interpolated by hand
    saved = {(c[0], c[1]): c for c in table_after(summary, "### DRAM saved at equal throughput")}
    target = max(
        r["tokens_per_s_steady"]
        for r in ok(rows)
        if r["method"] == "dense" and r["policy"] == "lfu" and r["dram_bytes"] == DRAMS[-1]
    )
    best_gb = math.inf
    for d in (0.5, 0.7):
        for g in (0.2, 0.5):
            pts = sorted(
                (r["dram_bytes"], r["tokens_per_s_steady"])
                for r in ok(rows)
                if r["method"] == "dip-ca" and r["policy"] == "lfu" and r["density"] == d and r["gamma"] == g
            )
            x, y = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts])
            if y.max() >= target:
                best_gb = min(best_gb, float(np.interp(target, y, x)) / 1e9)  # y rises with DRAM here
    assert 2 < best_gb < 6
    cells = saved[("lfu", "dip-ca")]
    assert cells[2] == f"{fmt(target)} at 6 GB"
    assert cells[3] == f"{best_gb:.2f}"
    assert cells[5] == f"{6 - best_gb:.2f}"


def test_report_without_eval_skips_pareto_and_lists_best_per_density(tmp_path):
    rows = results_rows()
    table = pa.Table.from_pylist(rows)
    out = tmp_path / "report"
    (out).mkdir()
    (out / "pareto_tokens_vs_perplexity.png").write_bytes(b"stale")  # from an earlier run with --eval
    paths = make_report(table, out)
    names = [p.name for p in paths]
    assert "pareto_tokens_vs_perplexity.png" not in names and not (out / "pareto_tokens_vs_perplexity.png").exists()
    assert names == [n for n in PLOTS if "pareto" not in n] + ["summary.md"]
    for p in paths[:-1]:
        check_png(p)
    summary = (out / "summary.md").read_text()
    assert "`pareto_tokens_vs_perplexity.png`: skipped — no eval data" in summary
    table = table_after(summary, "#### dip")
    assert [c[0] for c in table] == ["0.3", "0.5", "0.7"]
    for cells, dens in zip(table, DENSITIES):
        for cell, dram in zip(cells[1:], DRAMS):
            cand = [r for r in ok(rows) if r["method"] == "dip" and r["density"] == dens and r["dram_bytes"] == dram]
            best = max(cand, key=lambda r: r["tokens_per_s_steady"])
            assert cell == f"{fmt(best['tokens_per_s_steady'])} ({best['policy']})"
    assert table_after(summary, "#### dip-ca")[0][1].endswith(", γ 0.2)")  # lower gamma, more hits, faster


def test_report_skips_plots_whose_data_are_absent(tmp_path):
    rows = results_rows(drams=DRAMS[1:2], policies=("lfu",), gammas=(0.2,))
    paths = make_report(write_results(tmp_path / "r.parquet", rows), tmp_path / "out")
    assert [p.name for p in paths] == ["throughput_vs_density.png", "summary.md"]
    summary = paths[-1].read_text()
    assert "`dram_sweep.png`: skipped — only one DRAM size (4 GB)" in summary
    assert "`gamma_effect.png`: skipped" in summary
    assert "`policies.png`: skipped — only one cache policy (lfu)" in summary
    cells = {c[1]: c for c in table_after(summary, "### DRAM saved at equal throughput")}
    assert cells["dip"][3].startswith("≤ 4.00")  # one size: reached at the smallest swept, no interpolation


def test_cli_prints_the_paths_written(tmp_path):
    res = write_results(tmp_path / "results.parquet", results_rows())
    r = CliRunner().invoke(report_command, [str(res), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [str(tmp_path / "rep" / n) for n in PLOTS if "pareto" not in n] + [
        str(tmp_path / "rep" / "summary.md")
    ]


def test_bad_input_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make_report(tmp_path / "missing.parquet", tmp_path / "out")
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet\n")
    with pytest.raises(ConfigError, match="cannot read results table .* as a Parquet file"):
        make_report(junk, tmp_path / "out")
    rows = results_rows()
    no_policy = pa.Table.from_pylist(rows).drop_columns(["policy", "hit_rate_steady"])
    with pytest.raises(ConfigError, match="lacks the column\\(s\\) policy, hit_rate_steady"):
        make_report(no_policy, tmp_path / "out")
    failed = [dict(r, status="error", error="boom") for r in rows[:3]]
    with pytest.raises(ConfigError, match="no rows with status 'ok'"):
        make_report(pa.Table.from_pylist(failed), tmp_path / "out")
    bad_eval = tmp_path / "eval.csv"
    bad_eval.write_text("model,method,ppl\nmistral7b,dense,10\n")
    with pytest.raises(ConfigError, match="eval table .* lacks the column\\(s\\) density, perplexity"):
        make_report(pa.Table.from_pylist(rows), tmp_path / "out", eval_path=bad_eval)
    r = CliRunner().invoke(report_command, [str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, ConfigError) and "\n" not in str(r.exception)
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()  # nothing written on bad input


def test_methods_the_package_does_not_know_show_by_their_label_in_the_default_colour_last(tmp_path):
    """A method given by path (here: a file without DISPLAY, and one not on this machine) or by a name this
    version does not know is shown as its file stem / name, in the default colour, after the package's."""
    from simcore.methods.base import Display
    from simcore.report.data import join_eval, load_eval, load_results
    from simcore.report.plots import Plot, all_plots, dram_sweep, focus, throughput_vs_density

    mine = tmp_path / "my_method.py"
    mine.write_text("def resolve(shape, density, options):\n    raise NotImplementedError\n")
    others = {str(mine): "my_method", "/elsewhere/gone_method.py": "gone_method", "future-method": "future-method"}
    rows = results_rows()
    for i, method in enumerate(others):
        for r in [r for r in rows if r["method"] == "dip" and r["status"] == "ok"]:
            rows.append(
                dict(r, method=method, rho_in=None, rho_d=None, key=f"{method}-{r['key']}")
                | {"tokens_per_s_steady": r["tokens_per_s_steady"] * (0.9 - 0.1 * i)}
            )
    ev = write_eval(tmp_path / "eval.csv")
    ev.write_text(ev.read_text() + "".join(f"mistral7b,{m},{d},,{10.1 + d / 2:g}\n" for m in others for d in DENSITIES))

    paths = make_report(pa.Table.from_pylist(rows), tmp_path / "report", eval_path=ev)
    assert [p.name for p in paths] == PLOTS + ["summary.md"]
    for p in paths[:-1]:
        check_png(p)
    summary = paths[-1].read_text()
    headings = [line[5:] for line in summary.splitlines() if line.startswith("#### ")]
    assert headings == ["dip", "dip-ca", f"my_method (`{mine}`)", "gone_method (`/elsewhere/gone_method.py`)"] + [
        "future-method"
    ]
    saved = table_after(summary, "### DRAM saved at equal throughput")
    assert [c[1] for c in saved if c[0] == "lfu"] == ["dip", "dip-ca", "my_method", "gone_method", "future-method"]
    mine_table = table_after(summary, f"#### my_method (`{mine}`)")
    assert [c[5] for c in mine_table] == ["density 0.3, lfu, ppl 10.25"] * 3  # no γ, no ρ split: not its options

    data = load_results(pa.Table.from_pylist(rows))
    join_eval(data, load_eval(ev))
    assert all(isinstance(p, Plot) for p in all_plots(data)[:-1])  # all but flash_model.png: no curve rows
    f = focus(data)
    ax = throughput_vs_density(f).figure.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    labels = [lab for lab in lines if not lab.startswith("_")]
    assert labels[:3] == ["dip", "dip-ca γ=0.2", "dip-ca γ=0.5"]
    assert labels[3:6] == ["my_method", "gone_method", "future-method"]
    default = matplotlib.colors.to_rgba(Display("x").color)
    for lab in labels[3:6]:
        assert matplotlib.colors.to_rgba(lines[lab].get_color()) == default
    assert matplotlib.colors.to_rgba(lines["dip-ca γ=0.2"].get_color()) == matplotlib.colors.to_rgba("tab:red")
    sweep = [line.get_label() for line in dram_sweep(f).figure.axes[1].get_lines()]
    assert "my_method, lfu" in sweep and "gone_method, lru" in sweep
