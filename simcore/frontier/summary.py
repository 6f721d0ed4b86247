"""The frontier's ``summary.md``: the best throughput within perplexity budgets (the DIP paper's Table 2),
the best γ, the DRAM saved at equal throughput, and the evals behind every number.

Everything here reads the frontier's rows (plain dicts: the sweep's columns plus ``perplexity`` and
``cache_dependent``, simcore/frontier/run.py) and the arithmetic of :mod:`simcore.frontier.budget`.
"""

from __future__ import annotations

from simcore.frontier.budget import Best, Budget, best_within, reach
from simcore.frontier.plots import usable
from simcore.report.data import (
    POLICY_ORDER,
    SCENARIO,
    TPS,
    describe_scenario,
    fmt_tps,
    is_reference,
    method_display,
    method_key,
    ordered,
    scenario_of,
    scenarios,
    takes_gamma,
)

INTERPOLATION = (
    "Between two swept densities of one configuration (same method, policy, γ, DRAM size, device), "
    "log-perplexity and tokens/s are interpolated linearly in the target density; nothing is extrapolated "
    "beyond the densities swept. A density marked ≈ is such an interpolated point (its perplexity is the "
    "budget's limit); the others are swept configurations."
)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:g}"


def _signed_mb(nbytes: float) -> str:
    """A DRAM difference in MB with its sign: one decimal from 1 MB up, three significant digits below."""
    v = nbytes / 1e6
    return f"{v:+.1f}" if abs(v) >= 1 else f"{v:+.3g}"


def _gamma(row: dict):
    """The row's γ where its method takes one, else None (so rows of other methods do not split by it)."""
    return row["gamma"] if takes_gamma(row["method"]) else None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _pol_key(p) -> tuple:
    return (POLICY_ORDER.index(p) if p in POLICY_ORDER else len(POLICY_ORDER), str(p))


def _pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """Distinct (method, policy), dense first, then by method display order and policy order."""
    return sorted({(r["method"], r["policy"]) for r in rows}, key=lambda k: (method_key(k[0]), _pol_key(k[1])))


def best_of(rows: list[dict], limit: float) -> tuple[Best, object] | None:
    """The best point within ``limit`` over the density curves of ``rows`` (one curve per γ; all rows of one
    DRAM size, method and policy): (Best, its γ), or None."""
    curves: dict = {}
    for r in rows:
        curves.setdefault(_gamma(r), []).append((r["density"], r["perplexity"], r[TPS]))
    found = []
    for g, pts in curves.items():
        b = best_within(pts, limit)
        if b is not None:
            found.append((b, g))
    if not found:
        return None
    return max(found, key=lambda x: (x[0].tps, -x[0].density))


def _cell(hit: tuple[Best, object] | None, method: str, gamma: bool = True) -> str:
    if hit is None:
        return "—"
    b, g = hit
    if is_reference(method):
        return fmt_tps(b.tps)
    where = f"ρ {'≈' if b.interpolated else ''}{b.density:.2f}" + (f", γ {g:g}" if g is not None and gamma else "")
    return f"{fmt_tps(b.tps)} ({where})"


def budget_section(rows: list[dict], dense: float, budgets: list[Budget]) -> list[str]:
    """Per DRAM size, method and policy: the best tokens/s within each budget (over density and γ)."""
    out = [
        f"Best steady tokens/s whose perplexity is within each budget over dense ({dense:.3f}), per DRAM size, "
        "method and policy, over every swept density and γ; the cell names the density (and γ) it was found at. "
        "'—': no configuration of that row is within the budget.",
        "",
    ]
    header = ["DRAM (MB)", "method", "policy"] + [f"≤ {b.label} ({b.limit(dense):.2f})" for b in budgets]
    table = []
    for d in sorted({r["dram_bytes"] for r in rows}):
        at = [r for r in rows if r["dram_bytes"] == d]
        for method, pol in _pairs(at):
            group = [r for r in at if (r["method"], r["policy"]) == (method, pol)]
            table.append(
                [_mb(d), method_display(method).label, pol]
                + [_cell(best_of(group, b.limit(dense)), method) for b in budgets]
            )
    return out + _table(header, table) + [""]


def gamma_section(rows: list[dict], dense: float, budgets: list[Budget]) -> list[str]:
    """For methods that take γ: the best tokens/s within each budget per γ; the best γ of each budget in bold."""
    gm = [r for r in rows if takes_gamma(r["method"])]
    if not gm:
        return ["No method with a γ option in the grid.", ""]
    table, several = [], False
    for d in sorted({r["dram_bytes"] for r in gm}):
        at = [r for r in gm if r["dram_bytes"] == d]
        for method, pol in _pairs(at):
            group = [r for r in at if (r["method"], r["policy"]) == (method, pol)]
            gammas = sorted({r["gamma"] for r in group})
            several |= len(gammas) > 1
            per = {g: [best_of([r for r in group if r["gamma"] == g], b.limit(dense)) for b in budgets] for g in gammas}
            best_g = []
            for j in range(len(budgets)):
                cand = [(per[g][j][0].tps, g) for g in gammas if per[g][j] is not None]
                best_g.append(max(cand)[1] if cand else None)
            for g in gammas:
                cells = []
                for j, hit in enumerate(per[g]):
                    text = _cell(hit, method, gamma=False)
                    cells.append(f"**{text}**" if hit is not None and best_g[j] == g and len(gammas) > 1 else text)
                table.append([_mb(d), method_display(method).label, pol, f"{g:g}"] + cells)
    head = (
        "Best steady tokens/s within each budget at each γ (over density); in bold, the best γ of the row's DRAM "
        "size, method and policy for that budget."
    )
    if not several:
        head += " Only one γ was swept per method, so there is no best γ to pick: sweep `--gamma 0.1,0.2,0.3`."
    header = ["DRAM (MB)", "method", "policy", "γ"] + [f"≤ {b.label}" for b in budgets]
    return [head, ""] + _table(header, table) + [""]


def saved_section(rows: list[dict], dense: float, budgets: list[Budget]) -> list[str]:
    """DRAM saved at equal throughput, per budget (definition in the text)."""
    drams = sorted({r["dram_bytes"] for r in rows})
    out = [
        "Within each budget, a row's throughput T is its best tokens/s at its DRAM size (as in the table above). "
        "The reference at each DRAM size is the best tokens/s within the same budget of any configuration of "
        "*another* method whose masks do not depend on the cache (any policy, belady included). 'DRAM saved' is "
        "the DRAM the reference needs to reach T (the first crossing, linear between swept DRAM sizes) minus the "
        "row's DRAM size, in MB: positive when this method needs less DRAM for the same tokens/s. '≤ x': the "
        "reference already reaches T at the smallest swept size; '> x': it does not reach T at the largest; '—': "
        "no configuration of the row is within the budget, or no reference is.",
        "",
    ]
    if len(drams) < 2:
        return out + ["Only one DRAM size in the grid: sweep several (`--dram 48MB,64MB,96MB`) to compare.", ""]
    methods = sorted({r["method"] for r in rows}, key=method_key)
    table = []
    limits = [b.limit(dense) for b in budgets]
    # reference candidates: per (dram, method), the best over the method's cache-independent rows, any policy
    ref = {
        (d, m, j): best_of(
            [r for r in rows if r["dram_bytes"] == d and r["method"] == m and not r["cache_dependent"]], lim
        )
        for d in drams
        for m in methods
        for j, lim in enumerate(limits)
    }
    for method, pol in _pairs(rows):
        if is_reference(method):
            continue
        for d in drams:
            group = [r for r in rows if r["dram_bytes"] == d and (r["method"], r["policy"]) == (method, pol)]
            if not group:
                continue
            cells = []
            for j, lim in enumerate(limits):
                hit = best_of(group, lim)
                curve = []
                for dd in drams:
                    vals = [ref[(dd, m, j)][0].tps for m in methods if m != method and ref[(dd, m, j)] is not None]
                    if vals:
                        curve.append((dd, max(vals)))
                if hit is None or not curve:
                    cells.append("—")
                    continue
                where = reach(curve, hit[0].tps)
                if where is None:
                    cells.append(f"> {_signed_mb(max(dd for dd, _ in curve) - d)}")
                else:
                    x, how = where
                    cells.append(("≤ " if how == "below" else "") + _signed_mb(x - d))
            table.append([method_display(method).label, pol, _mb(d)] + cells)
    header = ["method", "policy", "DRAM (MB)"] + [f"saved (MB) ≤ {b.label}" for b in budgets]
    return out + _table(header, table) + [""]


def evals_section(rows: list[dict], dense: float | None) -> list[str]:
    """One line per eval: what it settled, its perplexity, and how many configurations use it."""
    by_key: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("eval_key") is not None and r.get("perplexity") is not None:
            by_key.setdefault(r["eval_key"], []).append(r)
    table = []
    for key, group in sorted(
        by_key.items(), key=lambda kv: (method_key(kv[1][0]["method"]), kv[1][0]["density"], str(_gamma(kv[1][0])))
    ):
        r = next((x for x in group if not x["eval_reused"]), group[0])
        dep = bool(r["cache_dependent"])
        ppl = r["perplexity"]
        table.append(
            [
                method_display(r["method"]).label,
                f"{r['density']:g}",
                f"{r['gamma']:g}" if takes_gamma(r["method"]) else "",
                f"{r['policy']}, {_mb(r['dram_bytes'])} MB" if dep else "any",
                f"{ppl:.3f}",
                f"{100 * (ppl / dense - 1):+.2f} %" if dense else "",
                str(len(group)),
                f"`{key}`",
            ]
        )
    header = ["method", "density", "γ", "cache (policy, DRAM)", "perplexity", "vs dense", "configurations", "eval key"]
    return _table(header, table) + [""]


def summary_markdown(
    rows: list[dict], dense: float | None, budgets: list[Budget], stats: dict, notes: list[str], spec, plots
) -> str:
    ok = usable(rows)
    failed = [r for r in rows if r["status"] != "ok"]
    text = spec.text or spec.dataset or "the embedded pydoc_data.topics text"
    lines = [
        "# simcore frontier",
        "",
        f"Model `{spec.model}`; perplexity over {spec.tokens} tokens of {text} from token {spec.offset} "
        f"(windows of {spec.seq_len}); throughput from replays of the trace `{ok[0]['trace'] if ok else rows[0]['trace']}`. "
        f"Dense perplexity: {f'{dense:.3f}' if dense is not None else 'none (the dense eval did not run)'}.",
        "",
        f"- configurations: {stats['configurations']} ({stats['ok']} ok, {stats['failed']} failed"
        + (f"; first error: {failed[0]['error']}" if failed else "")
        + ")",
        f"- evals: {stats['evals']} needed ({stats['evals_cache_dependent']} of them for cache-dependent masks), "
        f"{stats['evals_run']} run now, {stats['evals_from_log']} taken from the log `evals.jsonl`; "
        f"{stats['rows_reusing_an_eval']} configurations reuse an eval run with other cache settings",
        f"- time: sweep {stats['sweep_s']:.1f} s, evals {stats['evals_wall_s']:.1f} s (of which model loading "
        f"{stats['model_load_s']:.1f} s), total {stats['wall_s']:.1f} s",
        "",
        "**Reuse rule.** An eval's perplexity depends on the method, its density and options; where the method "
        "says its masks depend on the cache (`cache_dependent`, e.g. dip-ca with γ < 1), also on the policy and "
        "the cache capacity per unit kind (DRAM size, bits, context). The device and bandwidths never change it. "
        "One eval runs per distinct setting of those, and every other configuration reuses it "
        "(`eval_reused` in frontier.parquet). Throughput is the replay of the dense trace; the gap between "
        "replay and the exact in-loop cache run is what `simcore eval --fidelity` reports.",
        "",
        f"**Interpolation.** {INTERPOLATION}",
        "",
    ]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}." for n in notes] + [""]
    lines += ["## Plots", ""] + [f"- `{p.name}`: {p.caption}." for p in plots] + [""]
    if dense is None or not ok:
        lines += ["No dense perplexity or no usable configuration: no budget tables.", ""]
        return "\n".join(lines).rstrip() + "\n"
    scen = scenarios(ok)
    for i, s in enumerate(scen):
        srows = [r for r in ok if scenario_of(r) == s]
        title = describe_scenario(s)
        lines += [f"## Scenario {i + 1}: {title}" if len(scen) > 1 else f"## {title}", ""]
        lines += ["### Best throughput within a perplexity budget (Table 2)", ""]
        lines += budget_section(srows, dense, budgets)
        lines += ["### Best γ", ""]
        lines += gamma_section(srows, dense, budgets)
        lines += ["### DRAM saved at equal throughput", ""]
        lines += saved_section(srows, dense, budgets)
    lines += ["## Evals", ""]
    lines += evals_section(ok, dense)
    policies = ", ".join(ordered((r["policy"] for r in ok), POLICY_ORDER))
    lines += [f"Policies swept: {policies}. Scenario columns: {', '.join(SCENARIO)}.", ""]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["INTERPOLATION", "best_of", "budget_section", "gamma_section", "saved_section", "summary_markdown"]
