"""Human-readable tables of results."""

from __future__ import annotations

from simcore.units import format_bytes


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def replay_table(result) -> str:
    """A replay result as a few lines of text and one table (kind rows and a total row)."""
    c, m, t = result.config, result.memory, result.totals
    dev = c["device"]
    sel = c.get("selection") or {}
    method = c["method"]
    if method in ("dip", "dip-ca"):
        method += f" rho={c['density']:.2f} (rho_in {sel['rho_in']:.3f}, rho_d {sel['rho_d']:.3f}, {sel.get('split', 'given')})"
        if c["method"] == "dip-ca":
            method += f" gamma={c['gamma']:g}"
    elif method != "dense":
        method += f" rho={c['density']:.2f}"
    lines = [
        f"trace    {c['trace']}  ({c['model']}, {t['tokens']} tokens, {len(result.layers) // max(1, len(result.kinds))} layers, {c['trace_source']})",
        f"device   {dev['name']}: DRAM {dev['dram_bw_gbps']:g} GB/s, Flash {dev['flash_bw_gbps']:g} GB/s, budget {format_bytes(c['dram_bytes'])}",
        f"setting  {method}, policy {c['policy']}, {c['bits']:g}-bit weights ({8 * c['bytes_per_weight']:.3f} bits with scales), context {c['context']}",
        f"memory   resident {format_bytes(m['static_resident'])} (KV {format_bytes(m['kv_cache'])}), "
        f"MLP cache {format_bytes(m['mlp_cache'])} of {format_bytes(m['mlp_total'])} MLP weights "
        f"({100 * min(1.0, m['mlp_cache'] / m['mlp_total']):.1f}%)",
        "",
        f"{'kind':<10}{'units':>7}{'cached':>8}{'unit':>10}{'used/tok':>10}{'hit rate':>10}{'steady':>9}{'Flash/tok':>11}{'DRAM/tok':>11}",
    ]
    layers = len(result.layers) // max(1, len(result.kinds))
    for name, k in result.kinds.items():
        lines.append(
            f"{name:<10}{k['units_per_layer']:>7}{k['capacity_per_layer']:>8}{format_bytes(k['unit_bytes']):>10}"
            f"{k['accesses'] / t['tokens'] / layers:>10.1f}{_pct(k['hit_rate']):>10}{_pct(k['hit_rate_steady']):>9}"
            f"{format_bytes(k['flash_bytes_per_token']):>11}{format_bytes(k['dram_bytes_per_token']):>11}"
        )
    lines.append(
        f"{'total':<10}{'':>7}{'':>8}{'':>10}{'':>10}{_pct(t['hit_rate']):>10}{_pct(t['hit_rate_steady']):>9}"
        f"{format_bytes(t['flash_bytes_per_token']):>11}{format_bytes(t['dram_bytes_per_token']):>11}"
    )
    lines += [
        "",
        f"per token (steady, after {c['warmup']} tokens): DRAM {format_bytes(t['dram_bytes_per_token_steady'])} -> "
        f"{t['t_dram_ms_steady']:.2f} ms, Flash {format_bytes(t['flash_bytes_per_token_steady'])} -> "
        f"{t['t_flash_ms_steady']:.2f} ms"
        + (f", compute {t['t_compute_ms_steady']:.2f} ms" if t["t_compute_ms_steady"] else ""),
        f"throughput  {t['tokens_per_s_steady']:.2f} tokens/s steady ({t['tokens_per_s']:.2f} over all tokens); "
        f"MLP density {t['mlp_density']:.3f}; |h|^2 kept {100 * t['mass_kept']:.2f}%",
    ]
    return "\n".join(lines)
