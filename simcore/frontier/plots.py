"""The frontier's Pareto plots: steady tokens/s against perplexity, one curve per (method, policy).

One PNG per scenario (device, bandwidths, bits, context, Flash model: ``simcore.report.data.SCENARIO``), one
panel per DRAM size. A curve joins the configurations of one method and policy (over densities and γ) that
no other configuration of that method and policy beats on both axes (its Pareto front); the others are drawn
faintly. Dense is a square; dashed vertical lines mark the budgets' perplexity limits. Built as
``simcore.report.plots`` builds figures: ``matplotlib.figure.Figure`` on the Agg canvas, no pyplot.
"""

from __future__ import annotations

import math

from simcore.frontier.budget import Budget
from simcore.report.data import (
    POLICY_ORDER,
    TPS,
    describe_scenario,
    gb,
    is_reference,
    method_color,
    method_display,
    method_key,
    ordered,
    scenario_of,
    scenarios,
    short_scenario,
)
from simcore.report.plots import POLICY_STYLE, Plot

PLOT_GLOB = "pareto*.png"
"""The names of the plots a frontier writes (``pareto.png``, or ``pareto_<n>.png`` for scenario n)."""


def usable(rows: list[dict]) -> list[dict]:
    """Rows with a status ok, a perplexity and a finite tokens/s."""
    return [
        r
        for r in rows
        if r["status"] == "ok"
        and r.get("perplexity") is not None
        and math.isfinite(r["perplexity"])
        and r.get(TPS) is not None
        and math.isfinite(r[TPS])
    ]


def front(rows: list[dict]) -> list[dict]:
    """The rows no other row beats on both axes (lower perplexity, higher tokens/s), by perplexity."""
    out, best = [], -math.inf
    for r in sorted(rows, key=lambda r: (r["perplexity"], -r[TPS])):
        if r[TPS] > best:
            out.append(r)
            best = r[TPS]
    return out


POLICY_MARKER = {"lfu": "o", "lru": "v", "belady": "D", "none": "x"}


def size(nbytes: int) -> str:
    """A DRAM size for titles: MB below 1 GB, GB from there (decimal units)."""
    return f"{nbytes / 1e6:g} MB" if nbytes < 1e9 else f"{gb(nbytes)} GB"


def x_limit(dense: float | None, budgets: list[Budget]) -> float | None:
    """Where the perplexity axis ends: past dense's 1.5 times and the loosest budget's limit (times 1.1), the
    configurations are far from any budget the summary compares at, and drawing them would squeeze those
    that are into one corner. None without a dense perplexity."""
    if dense is None:
        return None
    return max([1.5 * dense] + [1.1 * b.limit(dense) for b in budgets])


def _pol(p) -> tuple:
    return (POLICY_ORDER.index(p) if p in POLICY_ORDER else len(POLICY_ORDER), str(p))


def pareto_plots(rows: list[dict], budgets: list[Budget], dense: float | None) -> list[Plot]:
    """One Plot per scenario of the usable rows (see the module docstring); none when there are none."""
    from matplotlib.figure import Figure

    rows = usable(rows)
    scen = scenarios(rows)
    plots = []
    for i, s in enumerate(scen):
        srows = [r for r in rows if scenario_of(r) == s]
        drams = sorted({r["dram_bytes"] for r in srows})
        ncols = min(3, len(drams))
        nrows = math.ceil(len(drams) / ncols)
        fig = Figure(figsize=(6.2 * ncols, 4.8 * nrows + 0.6), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        ppls = [r["perplexity"] for r in srows]
        cut = x_limit(dense, budgets)
        if cut is not None and max(ppls) <= cut:
            cut = None
        log_x = cut is None and max(ppls) / min(ppls) > 3
        for ax, d in zip(axes, drams):
            at = [r for r in srows if r["dram_bytes"] == d]
            pairs = sorted({(r["method"], r["policy"]) for r in at}, key=lambda k: (method_key(k[0]), _pol(k[1])))
            for method, pol in pairs:
                group = [r for r in at if (r["method"], r["policy"]) == (method, pol)]
                color = method_color(method)
                label = f"{method_display(method).label}, {pol}"
                if is_reference(method):
                    ax.scatter(
                        [r["perplexity"] for r in group],
                        [r[TPS] for r in group],
                        marker="s",
                        s=48,
                        color=color,
                        edgecolors="black",
                        zorder=4,
                        label=label,
                    )
                    continue
                f = front(group)
                rest = [r for r in group if r not in f]
                ax.plot(
                    [r["perplexity"] for r in f],
                    [r[TPS] for r in f],
                    marker=POLICY_MARKER.get(pol, "o"),
                    markersize=4,
                    color=color,
                    linestyle=POLICY_STYLE.get(pol, "-"),
                    label=label,
                    zorder=3,
                )
                if rest:
                    ax.scatter(
                        [r["perplexity"] for r in rest],
                        [r[TPS] for r in rest],
                        s=10,
                        marker=POLICY_MARKER.get(pol, "o"),
                        color=color,
                        alpha=0.3,
                        zorder=2,
                    )
            if dense is not None:
                ax.axvline(dense, color="gray", linestyle=":", linewidth=1)
                for b in budgets:
                    ax.axvline(b.limit(dense), color="gray", linestyle="--", linewidth=0.7, alpha=0.6)
                    ax.annotate(
                        b.label,
                        (b.limit(dense), 0.02),
                        xycoords=("data", "axes fraction"),
                        fontsize=6,
                        rotation=90,
                        color="gray",
                    )
            if log_x:
                ax.set_xscale("log")
            if cut is not None:
                ax.set_xlim(min(ppls + [dense]) - 0.02 * (cut - min(ppls + [dense])), cut)
                shown = [r[TPS] for r in at if r["perplexity"] <= cut]
                if shown:
                    ax.set_ylim(0, 1.08 * max(shown))
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.set_title(f"DRAM {size(d)}", fontsize=10)
            ax.set_xlabel("perplexity (lower is better)" + (", log scale" if log_x else ""))
            ax.set_ylabel("steady-state throughput (tokens/s)")
            ax.legend(title="method, policy", fontsize=7)
        for ax in axes[len(drams) :]:
            ax.set_visible(False)
        hidden = sum(r["perplexity"] > cut for r in srows) if cut is not None else 0
        fig.suptitle(
            f"Throughput vs perplexity — {short_scenario(s)}\nlines: each (method, policy)'s Pareto front over "
            "density and γ; faint: other configurations; dashed: perplexity budgets over dense"
            + (f"; axis cut at perplexity {cut:.3g} ({hidden} configurations beyond)" if hidden else "")
        )
        name = "pareto.png" if len(scen) == 1 else f"pareto_{i + 1}.png"
        pols = ", ".join(ordered((r["policy"] for r in srows), POLICY_ORDER))
        plots.append(
            Plot(
                name,
                fig,
                f"steady tokens/s vs perplexity per (method, policy) — {describe_scenario(s)}; one panel per DRAM size "
                f"({', '.join(size(d) for d in drams)}), policies {pols}"
                + (f"; perplexity axis cut at {cut:.3g}, {hidden} configurations beyond it" if hidden else ""),
            )
        )
    return plots


__all__ = ["PLOT_GLOB", "front", "pareto_plots", "size", "usable", "x_limit"]
