"""``summary.md``: what the sweep covered, the best throughput per method, and DRAM saved at equal throughput.

Every table is computed per scenario (model, device, bandwidths, bits, context, trace) and opens with one
line saying how its numbers were obtained. Throughput is always the steady-state figure (after warm-up).
"Best" never counts the belady policy: it is an oracle that needs future masks. Methods are named, ordered and
told apart by what they say of themselves (:mod:`simcore.report.data`); "dense" is the reference method, the one
that always uses every weight.
"""

from __future__ import annotations

from simcore.report.data import (
    ORACLE_POLICIES,
    POLICY_ORDER,
    SETTINGS,
    TOL,
    TPS,
    ReportData,
    describe_scenario,
    fmt_tps,
    gb,
    is_reference,
    method_display,
    mode,
    ordered,
    ordered_methods,
    scenario_of,
    scenarios,
    takes_gamma,
)
from simcore.report.plots import Plot, Skip

BUDGETS = (0.2, 0.5)
SAVED_BUDGET = 0.5  # with eval data, "DRAM saved" only counts configurations within +0.5 perplexity of dense


def _values(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _heading(method: str) -> str:
    """A method's heading: its label, and the name it was given by where that differs (a path)."""
    label = method_display(method).label
    return label if label == method else f"{label} (`{method}`)"


def _setting(r: dict, ppl: bool = False, policy: bool = True) -> str:
    parts = [f"density {r['density']:g}"] if not is_reference(r["method"]) else []
    if takes_gamma(r["method"]):
        parts.append(f"γ {r['gamma']:g}")
    if r["rho_in"] is not None and r["rho_d"] is not None:
        parts.append(f"ρ_in {r['rho_in']:.3g}/ρ_d {r['rho_d']:.3g}")
    if policy:
        parts.append(r["policy"])
    if ppl and r["perplexity"] is not None:
        parts.append(f"ppl {r['perplexity']:.2f}")
    return ", ".join(parts)


def _best(rows: list[dict]) -> dict | None:
    rows = [r for r in rows if r[TPS] is not None and r["policy"] not in ORACLE_POLICIES]
    return max(rows, key=lambda r: r[TPS]) if rows else None


def grid_section(data: ReportData) -> list[str]:
    rows = []
    shown_settings = [*SETTINGS, *(["adapter"] if any(r.get("adapter") for r in data.rows) else [])]
    for c in shown_settings:  # adapters (traces made with simcore trace --lora) only where some row has them
        vals = ordered((r.get(c) for r in data.rows), POLICY_ORDER if c == "policy" else ())
        if c == "dram_bytes":
            shown = [f"{gb(v)} GB" for v in vals]
        else:
            shown = [_values(v) for v in vals]
        if not shown:
            shown = ["(null)"]
        text = ", ".join(shown[:10]) + (f", … ({len(shown) - 10} more)" if len(shown) > 10 else "")
        rows.append([c, str(len(vals)), text])
    return [
        "## Grid covered",
        "",
        "Distinct values per setting over the ok rows (rho_in/rho_d are null for methods without a ρ split; a null gamma is read "
        "as 1, no re-weighting).",
        "",
        *_table(["setting", "count", "values"], rows),
        "",
    ]


def budget_section(rows: list[dict], data: ReportData, model: str) -> list[str]:
    """Per method: at each DRAM size, the fastest configuration within +0.2 / +0.5 perplexity of dense."""
    base = data.baseline.get(model)
    if base is None:
        return [f"No dense perplexity for {model} in the eval table: no perplexity budgets.", ""]
    drams = sorted({r["dram_bytes"] for r in rows})
    out = [
        f"Best steady tokens/s within +0.2 and +0.5 perplexity of dense ({base:.2f}), at each DRAM size: the fastest "
        "configuration of the method (any density, γ, ρ split, policy but belady) whose perplexity is within the "
        "budget; '—' when none is.",
        "",
    ]
    for method in ordered_methods(r["method"] for r in rows if not is_reference(r["method"])):
        table = []
        for d in drams:
            at = [r for r in rows if r["dram_bytes"] == d]
            dense = _best([r for r in at if is_reference(r["method"])])
            cells = [f"{gb(d)}", fmt_tps(dense[TPS] if dense else None)]
            for b in BUDGETS:
                best = _best(
                    [
                        r
                        for r in at
                        if r["method"] == method and r["perplexity"] is not None and r["perplexity"] <= base + b + TOL
                    ]
                )
                cells += [fmt_tps(best[TPS] if best else None), _setting(best, ppl=True) if best else "—"]
            table.append(cells)
        out += [f"#### {_heading(method)}", ""]
        out += _table(
            ["DRAM (GB)", "dense tok/s", "best tok/s ≤ +0.2 ppl", "setting", "best tok/s ≤ +0.5 ppl", "setting"], table
        )
        out.append("")
    return out


def density_section(rows: list[dict]) -> list[str]:
    """Without eval data: per method, the fastest configuration at each (density, DRAM size)."""
    drams = sorted({r["dram_bytes"] for r in rows})
    gamma_labels = [method_display(m).label for m in ordered_methods(r["method"] for r in rows) if takes_gamma(m)]
    with_gamma = f" (and γ for {'/'.join(gamma_labels)})" if gamma_labels else ""
    out = [
        "No eval data (perplexity) given: best steady tokens/s per method and target density at each DRAM size, over "
        f"γ, ρ split and policy (belady left out); the cell names the policy{with_gamma}. Lower density is "
        "faster but less accurate — run `simcore eval` and pass `--eval` to weigh that.",
        "",
    ]
    for method in ordered_methods(r["method"] for r in rows):
        mrows = [r for r in rows if r["method"] == method]
        table = []
        for dens in sorted({r["density"] for r in mrows}):
            cells = [f"{dens:g}"]
            for d in drams:
                best = _best([r for r in mrows if r["dram_bytes"] == d and abs(r["density"] - dens) <= TOL])
                extra = f", γ {best['gamma']:g}" if best and takes_gamma(method) else ""
                cells.append(f"{fmt_tps(best[TPS])} ({best['policy']}{extra})" if best else "—")
            table.append(cells)
        out += [f"#### {_heading(method)}", ""]
        out += _table(["density"] + [f"{gb(d)} GB" for d in drams], table)
        out.append("")
    return out


def reach_dram(points: list[tuple[int, float]], target: float) -> tuple[float, bool] | None:
    """Smallest DRAM size (GB) at which a throughput curve reaches ``target``: the first crossing, interpolated
    linearly between the two swept sizes around it. ``points`` are (dram_bytes, tokens/s). Returns
    (GB, at_smallest) — at_smallest when the smallest swept size already reaches it — or None if never."""
    pts = sorted(points)
    for i, (d, t) in enumerate(pts):
        if t >= target - TOL * max(1.0, abs(target)):
            if i == 0:
                return d / 1e9, True
            d0, t0 = pts[i - 1]
            return (d0 + (target - t0) / (t - t0) * (d - d0)) / 1e9, False
    return None


def saved_section(rows: list[dict], data: ReportData, model: str) -> list[str]:
    base = data.baseline.get(model) if data.has_eval else None
    if data.has_eval and base is None:
        return [
            "DRAM saved: no dense perplexity for this model in the eval table, so no accuracy limit can be set.",
            "",
        ]
    dense_all = [r for r in rows if is_reference(r["method"]) and r[TPS] is not None]
    if not dense_all:
        return ["DRAM saved: no dense rows in this scenario, nothing to compare with.", ""]
    limit = (
        f"only configurations within +{SAVED_BUDGET:g} perplexity of dense count"
        if base is not None
        else "any density counts (no eval data: read the setting column, low density costs accuracy)"
    )
    out = [
        "For each method and policy: dense's steady tokens/s at its largest DRAM size is the target; the column "
        "'reaches it at' is the smallest DRAM size at which some configuration of the method with the same policy "
        f"reaches it (linear interpolation between swept sizes; '≤' when already at the smallest swept size); {limit}.",
        "",
    ]
    table = []
    for pol in ordered((r["policy"] for r in rows), POLICY_ORDER):
        dense = [r for r in dense_all if r["policy"] == pol]
        dense_pol = pol
        if not dense:
            dense_pol = mode(r["policy"] for r in dense_all)
            dense = [r for r in dense_all if r["policy"] == dense_pol]
        dmax = max(r["dram_bytes"] for r in dense)
        target = max(r[TPS] for r in dense if r["dram_bytes"] == dmax)
        ref = f"{fmt_tps(target)} at {gb(dmax)} GB" + ("" if dense_pol == pol else f" (dense with {dense_pol})")
        for method in ordered_methods(r["method"] for r in rows if not is_reference(r["method"])):
            cand = [r for r in rows if r["method"] == method and r["policy"] == pol and r[TPS] is not None]
            if base is not None:
                cand = [r for r in cand if r["perplexity"] is not None and r["perplexity"] <= base + SAVED_BUDGET + TOL]
            if not cand:
                continue
            configs: dict[tuple, list[dict]] = {}
            for r in cand:
                configs.setdefault((r["density"], r["gamma"], r["rho_in"], r["rho_d"]), []).append(r)
            best = None  # (gb, at_smallest, example row)
            for crow in configs.values():
                per_dram: dict[int, float] = {}
                for r in crow:
                    per_dram[r["dram_bytes"]] = max(per_dram.get(r["dram_bytes"], float("-inf")), r[TPS])
                hit = reach_dram(list(per_dram.items()), target)
                if hit is not None and (best is None or hit[0] < best[0]):
                    best = (hit[0], hit[1], crow[0])
            if best is None:
                table.append([pol, method_display(method).label, ref, "not reached", "—", "—"])
            else:
                where = ("≤ " if best[1] else "") + f"{best[0]:.2f}"
                saved = dmax / 1e9 - best[0]
                table.append(
                    [
                        pol,
                        method_display(method).label,
                        ref,
                        where,
                        _setting(best[2], ppl=True, policy=False),
                        ("≥ " if best[1] else "") + f"{saved:.2f}",
                    ]
                )
    if not table:
        return out + ["No method/policy pair to compare.", ""]
    return (
        out
        + _table(["policy", "method", "dense tok/s (target)", "reaches it at (GB)", "with", "DRAM saved (GB)"], table)
        + [""]
    )


def summary_markdown(data: ReportData, plots: list[Plot | Skip]) -> str:
    n_err = len(data.errors)
    lines = [
        "# simcore report",
        "",
        f"Results: `{data.source}` — {data.n_total} rows: {len(data.rows)} ok, {n_err} failed "
        f"(status not 'ok', left out of everything below)."
        + (f" First error: {data.errors[0]['key']}: {data.errors[0]['error']}" if n_err else ""),
        "",
        "Throughput is steady-state tokens/s (after the warm-up tokens); DRAM sizes are in GB = 10^9 bytes; "
        "perplexity, when given, comes from the eval table joined on (model, method, density, γ), so it does not "
        "vary with DRAM size or policy.",
        "",
    ]
    lines += grid_section(data)
    lines += ["## Plots", ""]
    for p in plots:
        if isinstance(p, Plot):
            lines.append(f"- `{p.name}`: {p.caption}.")
        else:
            lines.append(f"- `{p.name}`: skipped — {p.reason}.")
    lines.append("")
    lines.append(
        "Plots show the most common scenario only; where several ρ_in/ρ_d splits share a density, the fastest is shown."
    )
    lines.append("")
    if data.notes:
        lines += ["## Notes", ""] + [f"- {n}." for n in data.notes] + [""]
    scen = scenarios(data.rows)
    for i, s in enumerate(scen):
        rows = [r for r in data.rows if scenario_of(r) == s]
        model = rows[0]["model"]
        lines += [f"## Scenario {i + 1}: {describe_scenario(s)}" if len(scen) > 1 else f"## {describe_scenario(s)}", ""]
        if data.has_eval:
            lines += ["### Best throughput within a perplexity budget", ""]
            lines += budget_section(rows, data, model)
        else:
            lines += ["### Best throughput per method and density", ""]
            lines += density_section(rows)
        lines += ["### DRAM saved at equal throughput", ""]
        lines += saved_section(rows, data, model)
    return "\n".join(lines).rstrip() + "\n"
