"""Human-readable tables of results."""

from __future__ import annotations

import re

from simcore.units import format_bytes


def printable(text: object, one_line: bool = False) -> str:
    """``text`` safe to print on any UTF-8 stream: path bytes that are not UTF-8 (which Python keeps as
    lone surrogates, os.fsdecode) become U+FFFD instead of raising UnicodeEncodeError; with ``one_line``,
    line breaks become spaces."""
    s = re.sub("[\ud800-\udc7f\udd00-\udfff]", "\ufffd", str(text))  # surrogates that are no escaped byte
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return re.sub(r"\s*\n\s*", " ", s).strip() if one_line else s


def _binary(n: float) -> str:
    """A request or page size as people write them: 4 KiB, 512 KiB, 1 MiB (decimal when not whole)."""
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{int(n // size)} {unit}"
    return format_bytes(n)


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def replay_table(result) -> str:
    """A replay result as a few lines of text and one table (kind rows and a total row)."""
    c, m, t = result.config, result.memory, result.totals
    dev = c["device"]
    from simcore.methods import describe

    method = describe(c)
    curve = c.get("flash_model") == "curve"
    if curve:
        pts = dev.get("flash_curve") or []
        flash_desc = (
            f"Flash curve {_binary(pts[0][0])} {pts[0][1]:g} GB/s .. {_binary(pts[-1][0])} {pts[-1][1]:g} GB/s, "
            f"page {_binary(dev['flash_page_bytes'])}" + (f", layout {c['layout']}" if c.get("layout") else "")
        )
    else:
        flash_desc = f"Flash {dev['flash_bw_gbps']:g} GB/s"
    adapter = []
    if c.get("lora"):
        from simcore.finetune.adapters import describe as describe_adapters

        adapter = [f"adapter  {describe_adapters(c['lora'])}"]
    lines = [
        f"trace    {c['trace']}  ({c['model']}, {t['tokens']} tokens, {len(result.layers) // max(1, len(result.kinds))} layers, {c['trace_source']})",
        f"device   {dev['name']}: DRAM {dev['dram_bw_gbps']:g} GB/s, {flash_desc}, budget {format_bytes(c['dram_bytes'])}",
        f"setting  {method}, policy {c['policy']}, {c['bits']:g}-bit weights ({8 * c['bytes_per_weight']:.3f} bits with scales), context {c['context']}",
        *adapter,
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
    steady = t.get("steady_tokens", t["tokens"]) < t["tokens"] or not c["warmup"]
    if steady:
        over, rate = f"steady, after {c['warmup']} tokens", f"{t['tokens_per_s_steady']:.2f} tokens/s steady"
    else:  # no token left after the warm-up: the "steady" figures are those of all tokens, and say so
        over = f"all {t['tokens']} tokens; no steady state, as --warmup {c['warmup']} is not below them"
        rate = f"{t['tokens_per_s_steady']:.2f} tokens/s without a steady state"
    lines += [
        "",
        f"per token ({over}): DRAM {format_bytes(t['dram_bytes_per_token_steady'])} -> "
        f"{t['t_dram_ms_steady']:.2f} ms, Flash {format_bytes(t['flash_bytes_per_token_steady'])} -> "
        f"{t['t_flash_ms_steady']:.2f} ms"
        + (f", compute {t['t_compute_ms_steady']:.2f} ms" if t["t_compute_ms_steady"] else ""),
        f"throughput  {rate} ({t['tokens_per_s']:.2f} over all tokens); "
        f"MLP density {t['mlp_density']:.3f}; |h|^2 kept {100 * t['mass_kept']:.2f}%",
    ]
    if curve:
        amp, eff, mean = (
            t["read_amplification_steady"],
            t["flash_effective_gbps_steady"],
            t["flash_mean_request_bytes_steady"],
        )
        lines.insert(
            -1,
            f"Flash reads  {t['flash_requests_per_token_steady']:.1f} requests/token of "
            f"{format_bytes(mean) if mean else '-'} on average, {format_bytes(t['flash_bytes_read_per_token_steady'])} "
            f"read with pages and gaps ({'-' if amp is None else f'{amp:.2f}x'} the bytes needed), "
            f"effective {'-' if eff is None else f'{eff:.2f}'} GB/s; constant model "
            f"{dev['flash_bw_gbps']:g} GB/s: {t['tokens_per_s_constant_steady']:.2f} tokens/s",
        )
    if t.get("energy_mj_per_token_steady") is not None:
        lines.append(
            f"energy      {t['energy_mj_per_token_steady']:.2f} mJ/token (DRAM {t['energy_dram_mj_per_token_steady']:.2f}, "
            f"Flash {t['energy_flash_mj_per_token_steady']:.2f}; memory reads only)"
        )
    return "\n".join(lines)
