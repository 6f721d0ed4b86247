"""The throughput model of DESIGN.md: bytes per token and bandwidths to time per token and tokens/s."""

from __future__ import annotations

from simcore.device import Device
from simcore.engine.result import ReplayResult
from simcore.errors import ConfigError


def token_time(
    b_dram: float,
    b_flash: float,
    ops: float,
    device: Device,
    overlap: bool = False,
    t_flash: float | None = None,
    b_flash_read: float | None = None,
) -> dict:
    """The throughput model of DESIGN.md for mean bytes per token: t = B_dram/BW_dram + t_flash (+ compute
    time ``ops / compute_tops`` when the device gives it, overlapped with I/O if asked).

    ``t_flash`` is B_flash/BW_flash (the constant model) unless given: the curve model's mean seconds of
    a token's Flash requests (``simcore.engine.flash``), whose bytes read, pages included, are
    ``b_flash_read``. Energy per token (mJ) where the device gives pJ per byte: DRAM bytes read and Flash
    bytes read."""
    t_dram = b_dram / (device.dram_bw_gbps * 1e9)
    if t_flash is None:
        t_flash = b_flash / (device.flash_bw_gbps * 1e9)
    read = b_flash if b_flash_read is None else b_flash_read
    t_io = t_dram + t_flash
    t_compute = ops / (device.compute_tops * 1e12) if device.compute_tops else 0.0
    t = max(t_io, t_compute) if overlap else t_io + t_compute
    e_dram = b_dram * device.dram_pj_per_byte * 1e-9 if device.dram_pj_per_byte else None
    e_flash = read * device.flash_pj_per_byte * 1e-9 if device.flash_pj_per_byte else None
    return {
        "dram_bytes_per_token": b_dram,
        "flash_bytes_per_token": b_flash,
        "ops_per_token": ops,
        "t_dram_ms": t_dram * 1e3,
        "t_flash_ms": t_flash * 1e3,
        "t_compute_ms": t_compute * 1e3,
        "t_token_ms": t * 1e3,
        "tokens_per_s": 1.0 / t,
        "energy_dram_mj_per_token": e_dram,
        "energy_flash_mj_per_token": e_flash,
        "energy_mj_per_token": e_dram + e_flash if e_dram is not None and e_flash is not None else None,
    }


def retime(result: ReplayResult, device: Device, overlap: bool | None = None) -> ReplayResult:
    """The same replay on another device's bandwidths (and compute): the cache behaviour does not
    depend on them, so only the timing figures are recomputed from the bytes per token."""
    overlap = result.config["overlap_compute"] if overlap is None else overlap
    totals = dict(result.totals)
    curve = result.config.get("flash_model") == "curve"
    if curve:
        was = result.config["device"]
        if (was.get("flash_page_bytes"), [list(p) for p in was.get("flash_curve") or []]) != (
            device.flash_page_bytes,
            [list(p) for p in device.flash_curve or []],
        ):
            raise ConfigError(
                f"a --flash-model curve result of device {was['name']} cannot be retimed on {device.name}: "
                "its Flash requests depend on the page size and curve; replay on that device"
            )
    for suffix in ("", "_steady"):
        t = token_time(
            totals["dram_bytes_per_token" + suffix],
            totals["flash_bytes_per_token" + suffix],
            totals["ops_per_token" + suffix],
            device,
            overlap,
            totals["t_flash_ms" + suffix] / 1e3 if curve else None,
            totals["flash_bytes_read_per_token" + suffix] if curve else None,
        )
        totals.update({k + suffix: v for k, v in t.items()})
        if curve:  # the constant model's figure beside the curve's
            const = token_time(
                totals["dram_bytes_per_token" + suffix],
                totals["flash_bytes_per_token" + suffix],
                totals["ops_per_token" + suffix],
                device,
                overlap,
            )
            totals["tokens_per_s_constant" + suffix] = const["tokens_per_s"]
    config = dict(result.config, device=device.model_dump(), overlap_compute=overlap)
    return ReplayResult(config, result.memory, totals, result.kinds, result.layers)
