"""The report's figures, one function per PNG; each returns a Plot or, where its data are absent, a Skip.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no display, no global
state). A plot holds fixed what it does not show; :func:`focus` picks those settings once for all plots
(the most common scenario, the lower median DRAM size and density, the most common policy, the most
common gamma below 1 of the methods that take one) and every title says which it shows. What a plot knows of
a method (label, colour, order, whether it takes a gamma, whether it is the dense reference) comes from the
method itself, through :mod:`simcore.report.data`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simcore.report.data import (
    ORACLE_POLICIES,
    POLICY_ORDER,
    TOL,
    TPS,
    ReportData,
    fastest,
    gb,
    is_reference,
    lower_median,
    method_color,
    method_display,
    method_key,
    mode,
    ordered,
    ordered_methods,
    row_key,
    row_label,
    scenario_of,
    scenarios,
    short_scenario,
    takes_gamma,
)

POLICY_STYLE = {"lfu": "-", "lru": "--", "belady": ":", "none": "-."}
GAMMA_STYLES = ("-", "--", "-.", ":")
NAN = float("nan")


@dataclass
class Plot:
    name: str
    figure: Figure
    caption: str

    def png(self) -> bytes:
        buf = io.BytesIO()
        FigureCanvasAgg(self.figure)
        self.figure.savefig(buf, format="png", dpi=110)
        return buf.getvalue()


@dataclass
class Skip:
    name: str
    reason: str


@dataclass
class Focus:
    """The settings a plot holds fixed when it does not vary them."""

    scenario: tuple
    rows: list[dict]  # ok rows of that scenario
    dram: int
    policy: str
    density: float | None  # target density of the sparse methods
    gamma: float  # the gamma of the methods that take one, where gamma is not an axis
    gamma_methods: tuple[str, ...] = ()  # labels of the methods in the scenario that take a gamma

    def label(self, *show: str) -> str:
        parts = {
            "dram": f"DRAM {gb(self.dram)} GB (median swept)",
            "policy": f"policy {self.policy}",
            "density": f"density {self.density:g}" if self.density is not None else "",
            "gamma": f"{'/'.join(self.gamma_methods)} γ={self.gamma:g}" if self.gamma_methods else "",
        }
        return ", ".join(p for k, p in parts.items() if k in show and p)


def focus(data: ReportData) -> Focus:
    s = scenarios(data.rows)[0]
    rows = [r for r in data.rows if scenario_of(r) == s]
    sparse = [r for r in rows if not is_reference(r["method"])]
    gamma_methods = [m for m in ordered_methods(r["method"] for r in rows) if takes_gamma(m)]
    gammas = [r["gamma"] for r in rows if r["method"] in gamma_methods and r["gamma"] < 1 - TOL]
    return Focus(
        scenario=s,
        rows=rows,
        dram=lower_median(r["dram_bytes"] for r in rows),
        policy=mode(r["policy"] for r in (sparse or rows)),
        density=lower_median(r["density"] for r in sparse),
        gamma=mode(gammas) if gammas else 1.0,
        gamma_methods=tuple(method_display(m).label for m in gamma_methods),
    )


def _select(f: Focus, dram=True, policy=True, density=True, gamma=True) -> list[dict]:
    """Rows of the focus scenario at the focus settings that are switched on; the reference (dense) keeps its
    own policy (its most common one) where it has no row with the focus policy."""
    out = []
    rows = [r for r in f.rows if not dram or r["dram_bytes"] == f.dram]
    ref_policies = [r["policy"] for r in rows if is_reference(r["method"])]
    ref_policy = f.policy if f.policy in ref_policies else mode(ref_policies)
    for r in rows:
        if is_reference(r["method"]):
            if policy and r["policy"] != ref_policy:
                continue
        else:
            if policy and r["policy"] != f.policy:
                continue
            if density and f.density is not None and abs(r["density"] - f.density) > TOL:
                continue
            if gamma and takes_gamma(r["method"]) and abs(r["gamma"] - f.gamma) > TOL:
                continue
        out.append(r)
    return out


def _new_figure(ncols: int = 1, width: float = 8.5) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, 5.2), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, list(axes)


def _lines(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """Rows grouped by line label (the method's ``row_label``: one line per γ for a method that takes one),
    in display order: method order, then γ."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(row_label(r), []).append(r)
    return sorted(groups.items(), key=lambda g: (min(row_key(r) for r in g[1]), g[0]))


def throughput_vs_density(f: Focus) -> Plot | Skip:
    name = "throughput_vs_density.png"
    rows = fastest(_select(f, density=False, gamma=False), ("method", "gamma", "density"))
    sparse = [r for r in rows if not is_reference(r["method"])]
    if len({r["density"] for r in sparse}) < 2:
        return Skip(name, "fewer than two MLP densities at the median DRAM size and the common policy")
    fig, (ax,) = _new_figure()
    lines = _lines(sparse)
    gamma_labels = [lab for lab, group in lines if takes_gamma(group[0]["method"])]
    for lab, group in lines:
        pts = sorted((r["mlp_density"], r[TPS]) for r in group)
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="^" if lab in gamma_labels else "o",
            color=method_color(group[0]["method"]),
            linestyle=GAMMA_STYLES[gamma_labels.index(lab) % len(GAMMA_STYLES)] if lab in gamma_labels else "-",
            label=lab,
        )
    for r in (r for r in rows if is_reference(r["method"])):
        color = method_color(r["method"])
        ax.axhline(r[TPS], color=color, linestyle=":", linewidth=1.2, label=f"{row_label(r)}: {r[TPS]:.3g} tokens/s")
        ax.plot([r["mlp_density"]], [r[TPS]], marker="s", color=color, linestyle="none")
    ax.set_xlabel("achieved MLP density (fraction of MLP weight bytes used per token)")
    ax.set_ylabel("steady-state throughput (tokens/s)")
    ax.set_title(f"Throughput vs MLP density — {short_scenario(f.scenario)}\n{f.label('dram', 'policy')}")
    ax.set_xlim(0, 1.05)
    ax.set_ylim(bottom=0)
    ax.legend(title="method", fontsize=8)
    return Plot(name, fig, f"steady tokens/s vs achieved MLP density, one line per method, {f.label('dram', 'policy')}")


def pareto(f: Focus, data: ReportData) -> Plot | Skip:
    name = "pareto_tokens_vs_perplexity.png"
    if not data.has_eval:
        return Skip(name, "no eval data (give --eval FILE with perplexities)")
    rows = [r for r in fastest(_select(f, density=False, gamma=False), ("method", "gamma", "density"))]
    rows = [r for r in rows if r["perplexity"] is not None]
    if len(rows) < 2:
        return Skip(name, "fewer than two configurations with a perplexity at the median DRAM size")
    fig, (ax,) = _new_figure()
    for lab, pts in _lines(rows):
        method = pts[0]["method"]
        ax.scatter(
            [r["perplexity"] for r in pts],
            [r[TPS] for r in pts],
            color=method_color(method),
            marker="s" if is_reference(method) else ("^" if takes_gamma(method) else "o"),
            s=36,
            label=lab,
            zorder=3,
        )
    front, best = [], float("-inf")
    for r in sorted(rows, key=lambda r: (r["perplexity"], -r[TPS])):
        if r[TPS] > best:
            front.append(r)
            best = r[TPS]
    ax.step(
        [r["perplexity"] for r in front],
        [r[TPS] for r in front],
        where="post",
        color="black",
        linewidth=1.3,
        zorder=2,
        label="Pareto front",
    )
    ax.scatter(
        [r["perplexity"] for r in front],
        [r[TPS] for r in front],
        s=120,
        facecolors="none",
        edgecolors="black",
        linewidths=1.3,
        zorder=4,
    )
    base = data.baseline.get(dict(zip(("trace", "model"), f.scenario))["model"])
    if base is not None:
        ax.axvline(base, color="gray", linestyle=":", linewidth=1, label=f"dense perplexity {base:.2f}")
        for d in (0.2, 0.5):
            ax.axvline(base + d, color="gray", linestyle="--", linewidth=0.8, alpha=0.6)
            ax.annotate(f"dense +{d:g}", (base + d, 0.02), xycoords=("data", "axes fraction"), fontsize=7, rotation=90)
    ax.set_xlabel("perplexity (lower is better)")
    ax.set_ylabel("steady-state throughput (tokens/s)")
    ax.set_title(
        f"Throughput vs perplexity — {short_scenario(f.scenario)}\n{f.label('dram', 'policy')}; circled: Pareto front"
    )
    ax.set_ylim(bottom=0)
    ax.legend(title="method", fontsize=8)
    return Plot(
        name, fig, f"steady tokens/s vs perplexity per method, Pareto front circled, {f.label('dram', 'policy')}"
    )


def dram_sweep(f: Focus) -> Plot | Skip:
    name = "dram_sweep.png"
    drams = {r["dram_bytes"] for r in f.rows}
    if len(drams) < 2:
        return Skip(name, f"only one DRAM size ({gb(next(iter(drams)))} GB) in the sweep")
    rows = fastest(_select(f, dram=False, policy=False), ("method", "policy", "dram_bytes"))
    fig, axes = _new_figure(2, width=12)
    keys = sorted({(r["method"], r["policy"]) for r in rows}, key=lambda k: (method_key(k[0]), _pol(k[1])))
    for method, pol in keys:
        pts = sorted(
            (r["dram_bytes"] / 1e9, r["hit_rate_steady"], r[TPS])
            for r in rows
            if (r["method"], r["policy"]) == (method, pol)
        )
        for ax, i in zip(axes, (1, 2)):
            ax.plot(
                [p[0] for p in pts],
                [p[i] if p[i] is not None else float("nan") for p in pts],
                marker="o",
                markersize=4,
                color=method_color(method),
                linestyle=POLICY_STYLE.get(pol, "-"),
                label=f"{method_display(method).label}, {pol}",
            )
    axes[0].set_ylabel("steady-state hit rate (fraction of unit reads from DRAM)")
    axes[0].set_ylim(0, 1.02)
    axes[0].set_title("Hit rate vs DRAM size")
    axes[1].set_ylabel("steady-state throughput (tokens/s)")
    axes[1].set_ylim(bottom=0)
    axes[1].set_title("Throughput vs DRAM size")
    for ax in axes:
        ax.set_xlabel("DRAM available to the model (GB, 10^9 bytes)")
    axes[1].legend(title="method, policy", fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"DRAM sweep — {short_scenario(f.scenario)}; {f.label('density', 'gamma')}")
    return Plot(
        name,
        fig,
        f"steady hit rate and tokens/s vs DRAM size, one line per (method, policy), {f.label('density', 'gamma')}",
    )


def gamma_effect(f: Focus) -> Plot | Skip:
    """Throughput and hit rate against γ for the methods that take a ``gamma`` option (cache-aware
    re-weighting), one line per target density (and method, where several have two γ or more)."""
    name = "gamma_effect.png"
    gamma_methods = [m for m in ordered_methods(r["method"] for r in f.rows) if takes_gamma(m)]
    if not gamma_methods:
        return Skip(name, "no method with a gamma option in the sweep")
    ca = [r for r in f.rows if r["method"] in gamma_methods and r["dram_bytes"] == f.dram]
    policy = mode(r["policy"] for r in ca if r["policy"] not in ORACLE_POLICIES)
    ca = [r for r in ca if r["policy"] == policy]
    gammas = {m: {r["gamma"] for r in ca if r["method"] == m} for m in gamma_methods}
    shown = [m for m in gamma_methods if len(gammas[m]) >= 2]
    if not shown:
        counts = ", ".join(f"{method_display(m).label} has {len(gammas[m]) or 'no'}" for m in gamma_methods)
        return Skip(name, f"{counts} gamma value(s) at the median DRAM size")
    labels = [method_display(m).label for m in shown]
    rows = fastest([r for r in ca if r["method"] in shown], ("method", "density", "gamma"))
    fig, axes = _new_figure(2, width=12)
    cmap = matplotlib.colormaps["viridis"]
    dens = sorted({r["density"] for r in rows})
    for k, (m, lab) in enumerate(zip(shown, labels)):
        for j, d in enumerate(dens):
            pts = sorted(
                (r["gamma"], r[TPS], r["hit_rate_steady"]) for r in rows if (r["method"], r["density"]) == (m, d)
            )
            if not pts:
                continue
            color = cmap(j / max(1, len(dens) - 1) * 0.85)
            for ax, i in zip(axes, (1, 2)):
                ax.plot(
                    [p[0] for p in pts],
                    [p[i] if p[i] is not None else float("nan") for p in pts],
                    marker="o",
                    color=color,
                    linestyle=GAMMA_STYLES[k % len(GAMMA_STYLES)],
                    label=f"density {d:g}" if len(shown) == 1 else f"{lab}, density {d:g}",
                )
    axes[0].set_ylabel("steady-state throughput (tokens/s)")
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("Throughput vs γ")
    axes[1].set_ylabel("steady-state hit rate (fraction of unit reads from DRAM)")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_title("Hit rate vs γ")
    for ax in axes:
        ax.set_xlabel("γ, score weight of uncached units (1 = no re-weighting)")
        ax.legend(title=f"{labels[0]} target density" if len(shown) == 1 else "method, target density", fontsize=8)
    names = "/".join(labels)
    fig.suptitle(f"Cache-aware masking ({names}) — {short_scenario(f.scenario)}; DRAM {gb(f.dram)} GB, policy {policy}")
    per = "density" if len(shown) == 1 else "method and density"
    return Plot(
        name,
        fig,
        f"{names} steady tokens/s and hit rate vs γ, one line per {per}, DRAM {gb(f.dram)} GB, policy {policy}",
    )


def _pol(p: str) -> int:
    return POLICY_ORDER.index(p) if p in POLICY_ORDER else len(POLICY_ORDER)


def _tick(method: str, gamma: float) -> str:
    label = method_display(method).label
    return f"{label} (γ={gamma:g})" if takes_gamma(method) else label


def policies(f: Focus) -> Plot | Skip:
    name = "policies.png"
    rows = fastest(_select(f, policy=False), ("method", "policy"))
    pols = ordered((r["policy"] for r in rows), POLICY_ORDER)
    if len(pols) < 2:
        return Skip(name, f"only one cache policy ({', '.join(pols)}) at the median DRAM size")
    methods = ordered_methods(r["method"] for r in rows)
    fig, axes = _new_figure(2, width=12)
    width = 0.8 / len(pols)
    cmap = {"lfu": "tab:blue", "lru": "tab:orange", "belady": "tab:green", "none": "tab:gray"}
    by = {(r["method"], r["policy"]): r for r in rows}
    for i, pol in enumerate(pols):
        xs = [m + (i - (len(pols) - 1) / 2) * width for m in range(len(methods))]
        for ax, col in zip(axes, (TPS, "hit_rate_steady")):
            vals = [by[(m, pol)][col] if (m, pol) in by and by[(m, pol)][col] is not None else NAN for m in methods]
            ax.bar(xs, vals, width=width, color=cmap.get(pol, f"C{i}"), label=pol, edgecolor="white")
    for ax in axes:
        ax.set_xticks(range(len(methods)), [_tick(m, f.gamma) for m in methods])
        ax.set_xlabel("sparsity method")
        ax.legend(title="cache policy", fontsize=8)
    axes[0].set_ylabel("steady-state throughput (tokens/s)")
    axes[0].set_title("Throughput per policy")
    axes[1].set_ylabel("steady-state hit rate (fraction of unit reads from DRAM)")
    axes[1].set_ylim(0, 1.02)
    axes[1].set_title("Hit rate per policy")
    fig.suptitle(
        f"Cache policies — {short_scenario(f.scenario)}; {f.label('dram', 'density')} (missing bar: not swept)"
    )
    return Plot(
        name,
        fig,
        f"grouped bars of steady tokens/s and hit rate per policy and method, {f.label('dram', 'density', 'gamma')}",
    )


def flash_model(data: ReportData) -> Plot | Skip:
    """Tokens/s under the curve model and under the constant model (which every curve row also carries),
    and read amplification, against DRAM size: the rows of the most common --flash-model curve scenario."""
    name = "flash_model.png"
    curve = [r for r in data.rows if r.get("flash_model") == "curve" and r.get("read_amplification_steady") is not None]
    if not curve:
        return Skip(name, "no --flash-model curve rows (sweep with --flash-model curve to compare the Flash models)")
    s = scenarios(curve)[0]
    rows = [r for r in curve if scenario_of(r) == s]
    f = Focus(s, rows, 0, mode(r["policy"] for r in rows), lower_median(r["density"] for r in rows), 1.0)
    rows = fastest(_select(f, dram=False, policy=False, gamma=False), ("method", "policy", "dram_bytes"))
    fig, axes = _new_figure(2, width=12)
    keys = sorted({(r["method"], r["policy"]) for r in rows}, key=lambda k: (method_key(k[0]), _pol(k[1])))
    for method, pol in keys:
        pts = sorted(
            (r["dram_bytes"] / 1e9, r[TPS], r["tokens_per_s_constant_steady"], r["read_amplification_steady"])
            for r in rows
            if (r["method"], r["policy"]) == (method, pol)
        )
        x = [p[0] for p in pts]
        label = f"{method_display(method).label}, {pol}"
        style = dict(marker="o", markersize=4, color=method_color(method))
        axes[0].plot(x, [p[1] for p in pts], linestyle="-", label=f"{label}: curve", **style)
        axes[0].plot(x, [p[2] for p in pts], linestyle="--", label=f"{label}: constant", **style)
        axes[1].plot(x, [p[3] for p in pts], linestyle=POLICY_STYLE.get(pol, "-"), label=label, **style)
    axes[0].set_ylabel("steady-state throughput (tokens/s)")
    axes[0].set_ylim(bottom=0)
    axes[0].set_title("Tokens/s: read curve (solid) vs constant bandwidth (dashed)")
    axes[1].set_ylabel("read amplification (bytes read / bytes needed)")
    axes[1].set_ylim(bottom=1)
    axes[1].set_title("Read amplification vs DRAM size")
    for ax in axes:
        ax.set_xlabel("DRAM available to the model (GB, 10^9 bytes)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Flash models — {short_scenario(s)}; {f.label('density')}")
    return Plot(
        name, fig, "tokens/s under the read curve and under a constant bandwidth, and read amplification, vs DRAM size"
    )


def all_plots(data: ReportData) -> list[Plot | Skip]:
    """Every figure of the report, in order, or why it was skipped."""
    f = focus(data)
    return [throughput_vs_density(f), pareto(f, data), dram_sweep(f), gamma_effect(f), policies(f), flash_model(data)]
