"""The throughput model of DESIGN.md: bytes per token and bandwidths to time per token and tokens/s."""

from __future__ import annotations

from simcore.device import Device
from simcore.engine.result import ReplayResult


def token_time(b_dram: float, b_flash: float, ops: float, device: Device, overlap: bool = False) -> dict:
    """The throughput model of DESIGN.md for mean bytes per token: t = B_dram/BW_dram + B_flash/BW_flash
    (+ compute time ``ops / compute_tops`` when the device gives it, overlapped with I/O if asked)."""
    t_dram, t_flash = b_dram / (device.dram_bw_gbps * 1e9), b_flash / (device.flash_bw_gbps * 1e9)
    t_io = t_dram + t_flash
    t_compute = ops / (device.compute_tops * 1e12) if device.compute_tops else 0.0
    t = max(t_io, t_compute) if overlap else t_io + t_compute
    return {
        "dram_bytes_per_token": b_dram,
        "flash_bytes_per_token": b_flash,
        "ops_per_token": ops,
        "t_dram_ms": t_dram * 1e3,
        "t_flash_ms": t_flash * 1e3,
        "t_compute_ms": t_compute * 1e3,
        "t_token_ms": t * 1e3,
        "tokens_per_s": 1.0 / t,
    }


def retime(result: ReplayResult, device: Device, overlap: bool | None = None) -> ReplayResult:
    """The same replay on another device's bandwidths (and compute): the cache behaviour does not
    depend on them, so only the timing figures are recomputed from the bytes per token."""
    overlap = result.config["overlap_compute"] if overlap is None else overlap
    totals = dict(result.totals)
    for suffix in ("", "_steady"):
        t = token_time(
            totals["dram_bytes_per_token" + suffix],
            totals["flash_bytes_per_token" + suffix],
            totals["ops_per_token" + suffix],
            device,
            overlap,
        )
        totals.update({k + suffix: v for k, v in t.items()})
    config = dict(result.config, device=device.model_dump(), overlap_compute=overlap)
    return ReplayResult(config, result.memory, totals, result.kinds, result.layers)
