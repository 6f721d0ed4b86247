"""The settings of a replay and their resolution against a model shape: the :class:`ReplayConfig`
schema (whose descriptions are the CLI's help), the checks of bad combinations, and the resolved
:class:`Setting` (device, policy, method selection, memory plans) that replay and eval both use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from simcore import methods, policies
from simcore.device import Device, load_device, override
from simcore.errors import ConfigError, describe_validation
from simcore.memory import Quant, plan, pruned_cost
from simcore.units import parse_bandwidth, parse_size

DEFAULT_MODEL = "smollm2-135m"


class _Settings(BaseModel):
    """The settings of a replay that are not a method's own options."""

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
    flash_model: Literal["constant", "curve"] = Field(
        default="constant",
        description="Flash time: constant (missed bytes / the device's flash_bw_gbps, the DIP paper's model) or "
        "curve (missed units as page-rounded, coalesced requests timed on the device's flash_curve)",
    )
    flash_bundle: bool = Field(
        default=False,
        description="with --flash-model curve: store each neuron's slices of a unit together (W_u row + W_d "
        "column, as LLM in a Flash does) instead of each matrix in its own region",
    )
    layout: str | None = Field(
        default=None,
        description="a `simcore layout` file: the order of the units in Flash (with --flash-model curve; "
        "default: the stored order)",
    )
    method: str = Field(
        default="dip-ca",
        description=f"masking method: {', '.join(methods.available())}, or the path of a method .py file",
    )
    density: float = Field(default=0.5, description="target MLP density: fraction of MLP weight bytes used per token")
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


def _method_option_fields() -> tuple[dict, dict]:
    """The options of the package's methods, as settings fields (each described once, by its method),
    and which methods take each option."""
    fields: dict = {}
    owners: dict[str, list[str]] = {}
    for name in methods.available():
        for option, info in methods.load(name).Options.model_fields.items():
            owners.setdefault(option, []).append(name)
            if option not in fields:  # validated by the method; here only its type, default and help
                fields[option] = (info.annotation, Field(default=info.default, description=info.description))
    return fields, owners


_FIELDS, OPTION_OWNERS = _method_option_fields()

ReplayConfig = create_model("ReplayConfig", __base__=_Settings, **_FIELDS)
ReplayConfig.__doc__ = """Every setting of a replay, the methods' options among them; the descriptions are what
``simcore replay --help`` shows. A method validates its own options (:func:`method_options`)."""


def neutral(option: str):
    """The value at which a method option has no effect (declared by the method), or None."""
    for name in OPTION_OWNERS.get(option, ()):
        extra = methods.load(name).Options.model_fields[option].json_schema_extra
        if isinstance(extra, dict) and "neutral" in extra:
            return extra["neutral"]
    return None


def method_options(cfg: ReplayConfig) -> methods.MethodOptions:
    """The options of ``cfg``'s method, validated by it from the settings given explicitly. No option is
    silently ignored: an option of another method given explicitly is an error unless it holds its
    neutral value (gamma 1, so that grids can hold it)."""
    module = methods.load(cfg.method)
    declared = module.Options.model_fields
    given = cfg.model_fields_set
    ignored = [
        f for f in OPTION_OWNERS if f in given and f not in declared and getattr(cfg, f) not in (None, neutral(f))
    ]
    if ignored:
        owners = sorted({m for f in ignored for m in OPTION_OWNERS[f]})
        flags = ", ".join("--" + f.replace("_", "-") for f in ignored)
        it = "it" if len(ignored) == 1 else "them"
        raise ConfigError(
            f"{flags} {'applies' if len(ignored) == 1 else 'apply'} only to method {' and '.join(owners)}; "
            f"method {cfg.method} would ignore {it}: drop {it} or use --method {owners[-1]}"
        )
    return methods.options(cfg.method, {f: getattr(cfg, f) for f in declared if f in given})


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


def config_of(config: ReplayConfig | None, settings: dict) -> ReplayConfig:
    """``config`` itself, or a ReplayConfig of ``settings`` (a ConfigError names the first bad one)."""
    if config is not None:
        return config
    try:
        return ReplayConfig(**settings)
    except ValidationError as e:
        raise ConfigError(describe_validation(e)) from None


def _describe(options) -> str:
    """The options in effect that do something, for a message: "gamma 0.2"."""
    on = {k: v for k, v in options.model_dump().items() if v is not None and v != neutral(k)}
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in on.items()) or "its options"


@dataclass
class Setting:
    """A configuration resolved against a model shape: what replay and eval both need."""

    device: Device
    policy: object
    selection: object
    budgets: list
    mems: list
    cache_dependent: bool
    options: object = None  # the method's options (a MethodOptions), as it validated them
    density: float = 1.0  # the MLP density in effect


def resolve_setting(cfg: ReplayConfig, shape, drams: list, use=None, aux_bytes: float = 0.0) -> Setting:
    """Device, policy, method selection and memory plans of a configuration for a model shape, with the
    checks of bad combinations (SimcoreError). ``use`` (a ``simcore.calibration.TextUse``): the text and
    tokens the masks apply to, for methods that look up calibrations. ``aux_bytes``: modules beside the
    weights that stay resident and are read every token (a trace's unmerged LoRA adapters)."""
    device = resolve_device(cfg)
    policy = policies.load(cfg.policy)
    module = methods.load(cfg.method)
    options = method_options(cfg)
    density = cfg.density
    if hasattr(module, "DENSITY"):  # a method with one density (dense)
        if "density" in cfg.model_fields_set and cfg.density != module.DENSITY:
            raise ConfigError(
                f"method {cfg.method} has density {module.DENSITY:g} only; drop --density {cfg.density:g} or pick a method"
            )
        density = module.DENSITY
    selection = methods.resolve(cfg.method, shape, density, options, use)
    if cfg.flash_model == "curve":
        if cfg.flash_bw is not None:
            raise ConfigError(
                f"--flash-bw {cfg.flash_bw} sets a constant Flash bandwidth, which --flash-model curve replaces by "
                "the device's read curve; drop one of them"
            )
        if device.flash_curve is None:
            raise ConfigError(
                f"--flash-model curve needs the device's flash_curve, and device {device.name} has none; "
                "use a profile with one (simcore devices), measure one (simcore probe-flash), or --flash-model constant"
            )
    else:
        for flag, on in (("--layout", cfg.layout is not None), ("--flash-bundle", cfg.flash_bundle)):
            if on:
                raise ConfigError(
                    f"{flag} changes where units lie in Flash, which only --flash-model curve models; "
                    "add --flash-model curve"
                )
    if cfg.overlap_compute and not device.compute_tops:
        raise ConfigError(
            f"--overlap-compute needs a compute term, but device {device.name} has no compute_tops; "
            "give a device profile with compute_tops or drop --overlap-compute"
        )
    cache_dependent = selection.cache_dependent
    if policy.NEEDS_FUTURE and cache_dependent:
        raise ConfigError(
            f"--policy {cfg.policy} needs masks that do not depend on the cache, but {cfg.method} "
            f"with {_describe(options)} selects by cache state; use --policy lfu or lru, or --gamma 1"
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
        plan(
            shape,
            selection,
            b,
            quant,
            cfg.context,
            split,
            cache=not no_cache,
            mlp_bytes_per_weight=mlp_bpw,
            aux_bytes=aux_bytes,
        )
        for b in budgets
    ]
    return Setting(device, policy, selection, budgets, mems, cache_dependent, options, density)
