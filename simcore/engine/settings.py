"""The settings of a replay and their resolution against a model shape: the :class:`ReplayConfig`
schema (whose descriptions are the CLI's help), the checks of bad combinations, and the resolved
:class:`Setting` (device, policy, method selection, memory plans) that replay and eval both use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simcore import methods, policies
from simcore.device import Device, load_device, override
from simcore.errors import ConfigError
from simcore.memory import Quant, plan, pruned_cost
from simcore.units import parse_bandwidth, parse_size

DEFAULT_MODEL = "smollm2-135m"


class ReplayConfig(BaseModel):
    """Every setting of a replay; the descriptions are what ``simcore replay --help`` shows."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    trace: str | None = Field(default=None, description="trace directory (default: traces/<model>)")
    model: str | None = Field(
        default=None, description="model alias; short for --trace traces/NAME (default smollm2-135m)"
    )
    device: str = Field(default="a18", description="device profile: a name in devices/ or a YAML path")
    dram: str | None = Field(
        default=None,
        description="DRAM available to the model, e.g. 4GB or 512MiB (default: the device's dram_budget_gb)",
    )
    flash_bw: str | None = Field(
        default=None, description="override the device's Flash read bandwidth, GB/s (1 or 1GB/s)"
    )
    dram_bw: str | None = Field(default=None, description="override the device's DRAM bandwidth, GB/s (60 or 60GB/s)")
    method: str = Field(default="dip-ca", description="masking method: dense, glu, gate, up, cats, dip, dip-ca")
    density: float = Field(default=0.5, description="target MLP density: fraction of MLP weight bytes used per token")
    rho_in: float | None = Field(
        default=None, description="dip/dip-ca: input-channel density (rho_d follows from --density)"
    )
    rho_d: float | None = Field(
        default=None, description="dip/dip-ca: down-channel density (rho_in follows from --density)"
    )
    gamma: float = Field(
        default=0.2, description="dip-ca: score weight of units not in the cache, 0 < gamma <= 1 (1 = dip)"
    )
    fixed_top_n: int = Field(
        default=0, ge=0, description="dip-ca: this many top units per token are exempt from re-weighting"
    )
    gamma_warmup: int = Field(
        default=0, ge=0, description="dip-ca: gamma falls linearly from 1 over this many first tokens"
    )
    approx_m: float = Field(
        default=0.0,
        ge=0,
        description="dip-ca: approximate selection from the top m = approx_m * k units, cached first (0: off; > 1 to use)",
    )
    policy: str = Field(
        default="lfu",
        description=f"eviction policy: {', '.join(policies.available())}, or the path of a policy .py file",
    )
    pruned: str | None = Field(
        default=None,
        description="a `simcore prune` output: the MLP matrices are statically pruned (kept weights plus mask or N:M metadata in the memory plan)",
    )
    bits: float = Field(default=4, description="weight bits")
    group_size: int = Field(default=128, description="quantization group size (0: none)")
    scale_bits: float = Field(default=16, description="bits of each group's scale")
    kv_bits: float = Field(default=16, description="bits per KV-cache element")
    context: int = Field(
        default=1024, ge=0, description="context length whose KV cache stays in DRAM and is read every token"
    )
    kind_split: list[float] | None = Field(
        default=None, description="weights splitting a layer's MLP cache between unit kinds (default: by weight bytes)"
    )
    warmup: int = Field(default=100, ge=0, description="tokens excluded from steady-state figures")
    tokens: int | None = Field(default=None, gt=0, description="replay only the first N tokens")
    cats_calib_tokens: int = Field(
        default=256, gt=0, description="cats: first tokens of each layer used to calibrate its threshold"
    )
    batch_tokens: int = Field(default=256, gt=0, description="trace rows read at a time (bounds memory)")
    threads: int = Field(
        default=0, ge=0, description="layers replayed in parallel (0: one per core); results do not depend on it"
    )
    overlap_compute: bool = Field(
        default=False, description="with a device compute_tops: overlap compute with memory traffic"
    )

    def quant(self) -> Quant:
        try:
            return Quant(bits=self.bits, group_size=self.group_size, scale_bits=self.scale_bits, kv_bits=self.kv_bits)
        except ValidationError as e:
            raise ConfigError(describe_validation(e)) from None


def describe_validation(e: ValidationError) -> str:
    """One line for the first error of a settings model: the option, what is wrong, the value given."""
    err = e.errors()[0]
    loc = err["loc"]
    option = "--" + str(loc[0]).replace("_", "-") if loc else "settings"
    got = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    if err["type"] == "extra_forbidden":
        return f"unknown setting {option}"
    return f"{option}: {err['msg']}{got}"


def resolve_trace_path(trace: str | None, model: str | None) -> Path:
    if trace is None:
        return Path("traces") / (model or DEFAULT_MODEL)
    return Path(trace)


def resolve_device(cfg: ReplayConfig) -> Device:
    dev = load_device(cfg.device)
    return override(
        dev,
        flash_bw_gbps=parse_bandwidth(cfg.flash_bw, "--flash-bw") if cfg.flash_bw is not None else None,
        dram_bw_gbps=parse_bandwidth(cfg.dram_bw, "--dram-bw") if cfg.dram_bw is not None else None,
    )


def _config(config: ReplayConfig | None, settings: dict) -> ReplayConfig:
    if config is not None:
        return config
    try:
        return ReplayConfig(**settings)
    except ValidationError as e:
        raise ConfigError(describe_validation(e)) from None


CACHE_AWARE_OPTIONS = {"gamma": 1.0, "fixed_top_n": 0, "gamma_warmup": 0, "approx_m": 0.0}
"""dip-ca's options and their neutral values: another method given one of them at another value is an error."""


def _refuse_ignored_options(cfg: ReplayConfig, aware: bool, has_split: bool) -> None:
    """No option is silently ignored: settings given explicitly that the method would not use are errors
    (a neutral value, e.g. gamma 1 for dip, is accepted, so that grids can hold it)."""
    given = cfg.model_fields_set
    if not aware:
        ignored = [f for f, neutral in CACHE_AWARE_OPTIONS.items() if f in given and getattr(cfg, f) != neutral]
        if ignored:
            flags = ", ".join("--" + f.replace("_", "-") for f in ignored)
            raise ConfigError(
                f"{flags} {'applies' if len(ignored) == 1 else 'apply'} only to cache-aware masking (dip-ca); "
                f"method {cfg.method} would ignore {'it' if len(ignored) == 1 else 'them'}: drop "
                f"{'it' if len(ignored) == 1 else 'them'} or use --method dip-ca"
            )
    if not has_split:
        ignored = [f for f in ("rho_in", "rho_d") if f in given and getattr(cfg, f) is not None]
        if ignored:
            flags = ", ".join("--" + f.replace("_", "-") for f in ignored)
            raise ConfigError(
                f"{flags} {'applies' if len(ignored) == 1 else 'apply'} only to dip and dip-ca; "
                f"method {cfg.method} has no input/down split"
            )
    if cfg.method == "dense" and "density" in given and cfg.density != 1:
        raise ConfigError(
            f"method dense uses every weight (density 1); drop --density {cfg.density:g} or pick a method"
        )


@dataclass
class Setting:
    """A configuration resolved against a model shape: what replay and eval both need."""

    device: Device
    policy: object
    selection: object
    budgets: list
    mems: list
    cache_dependent: bool


def resolve_setting(cfg: ReplayConfig, shape, drams: list) -> Setting:
    """Device, policy, method selection and memory plans of a configuration for a model shape, with the
    checks of bad combinations (SimcoreError)."""
    device = resolve_device(cfg)
    policy = policies.load(cfg.policy)
    selection = methods.resolve(cfg.method, shape, cfg.density, rho_in=cfg.rho_in, rho_d=cfg.rho_d)
    aware = any(k.cache_aware for k in selection.kinds)
    _refuse_ignored_options(cfg, aware, "rho_in" in selection.detail)
    if cfg.overlap_compute and not device.compute_tops:
        raise ConfigError(
            f"--overlap-compute needs a compute term, but device {device.name} has no compute_tops; "
            "give a device profile with compute_tops or drop --overlap-compute"
        )
    if aware and not 0 < cfg.gamma <= 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {cfg.gamma}")
    if 0 < cfg.approx_m <= 1:
        raise ConfigError(
            f"--approx-m must be 0 (off) or above 1 (select from the top approx_m * k units), got {cfg.approx_m:g}"
        )
    cache_dependent = aware and (cfg.gamma < 1 or cfg.approx_m > 1)
    if policy.NEEDS_FUTURE and cache_dependent:
        raise ConfigError(
            f"--policy {cfg.policy} needs masks that do not depend on the cache, but {cfg.method} "
            f"with gamma {cfg.gamma} re-weights by cache state; use --policy lfu or lru, or --gamma 1"
        )
    budgets = []
    for dram in drams:
        if dram is None:
            b = int((device.dram_budget_gb or 0) * 1e9)
            if b <= 0:
                raise ConfigError(f"device {device.name} has no dram_budget_gb; give --dram (e.g. --dram 4GB)")
        else:
            b = parse_size(dram, "--dram")
            if b <= 0:
                raise ConfigError(f"--dram must be positive, got {dram!r}: it is the DRAM the model may use (e.g. 4GB)")
        budgets.append(b)
    quant = cfg.quant()
    split = tuple(cfg.kind_split) if cfg.kind_split else None
    no_cache = getattr(policy, "NO_CACHE", False)
    mlp_bpw = None
    if cfg.pruned is not None:
        model, kept, meta_bits = pruned_cost(cfg.pruned)
        if model != shape.name:
            raise ConfigError(f"--pruned {cfg.pruned} prunes {model!r}, not this trace's model {shape.name!r}")
        mlp_bpw = kept * quant.bytes_per_weight + meta_bits / 8
    mems = [
        plan(shape, selection, b, quant, cfg.context, split, cache=not no_cache, mlp_bytes_per_weight=mlp_bpw)
        for b in budgets
    ]
    return Setting(device, policy, selection, budgets, mems, cache_dependent)
