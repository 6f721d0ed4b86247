"""The memory plan: what stays resident in DRAM, what is left for the MLP cache, and how that
cache is split over layers and unit kinds (DESIGN.md, "Memory plan and the throughput model").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field

from simcore.errors import ConfigError
from simcore.methods.base import Selection
from simcore.models import ModelShape
from simcore.units import format_bytes

NORM_BYTES = 2  # normalisation weights stay at 16 bits


class Quant(BaseModel):
    """Weight quantization: ``bits`` per weight plus a ``scale_bits`` scale per group of
    ``group_size`` weights (INT4, group 128, 16-bit scale = 4.125 bits per weight)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    bits: float = Field(default=4, gt=0, le=32, description="bits per weight")
    group_size: int = Field(default=128, ge=0, description="weights per quantization group (0: no groups)")
    scale_bits: float = Field(default=16, ge=0, description="bits of each group's scale (plus zero point, if any)")
    kv_bits: float = Field(default=16, gt=0, description="bits per KV-cache element")

    @property
    def bytes_per_weight(self) -> float:
        overhead = self.scale_bits / self.group_size if self.group_size else 0.0
        return (self.bits + overhead) / 8


@dataclass(frozen=True)
class KindPlan:
    """The cache of one unit kind in every layer."""

    name: str
    n_units: int
    unit_bytes: float
    capacity: int  # units per layer


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes of the static part and of the MLP cache, and per-kind capacities (per layer)."""

    dram_budget: int
    static_resident: float  # attention, embedding, LM head, norms, other, KV cache
    kv_cache: float
    static_read_per_token: float  # resident bytes read per token (one embedding row, whole KV cache)
    mlp_total: float  # all MLP weights of the model
    mlp_cache: float  # DRAM left for the MLP cache, all layers
    kinds: tuple[KindPlan, ...]
    aux_resident: float = 0.0  # auxiliary modules (unmerged LoRA adapters, predictors), within static_resident

    def as_dict(self) -> dict:
        return asdict(self)


def pruned_cost(path: str) -> tuple[str, float, float]:
    """(model, kept fraction, metadata bits per original weight) of a ``simcore prune`` output: what a
    statically pruned MLP costs per weight of the dense matrix (1 bit of mask per weight for
    unstructured sparsity, ceil(log2 C(M, N)) bits per group of M for N:M)."""
    import json
    from pathlib import Path

    manifest = Path(path) / "manifest.json"
    if not Path(path).is_dir():
        what = "does not exist" if not Path(path).exists() else "is a file"
        raise ConfigError(f"--pruned {path} {what}; give the directory a `simcore prune` run wrote")
    try:
        data = json.loads(manifest.read_text())
        mats = data["matrices"].values()
        total = sum(m["shape"][0] * m["shape"][1] for m in mats)
        kept = sum(m["kept"] for m in mats)
        meta = sum(m["metadata_bits"] for m in mats)
        return data["model"], kept / total, meta / total
    except FileNotFoundError:
        raise ConfigError(f"--pruned {path}: not a `simcore prune` output (no manifest.json there)") from None
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        raise ConfigError(f"{manifest} is not a simcore prune manifest; re-create it with `simcore prune`") from None


def kv_cache_bytes(shape: ModelShape, context: int, quant: Quant) -> float:
    """K and V for ``context`` tokens in every layer."""
    return 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * context * quant.kv_bits / 8


def plan(
    shape: ModelShape,
    selection: Selection,
    dram_budget: int,
    quant: Quant,
    context: int,
    kind_shares: tuple[float, ...] | None = None,
    cache: bool = True,
    mlp_bytes_per_weight: float | None = None,
    aux_bytes: float = 0.0,
) -> MemoryPlan:
    """Lay out DRAM for a model, a method's unit kinds and a budget.

    The MLP cache (budget - static part) is split uniformly over layers and, within a layer,
    between unit kinds in proportion to their weight bytes unless ``kind_shares`` (one weight per
    kind, normalised here) says otherwise. ``cache=False`` (policy none) gives every kind capacity 0.
    ``aux_bytes``: auxiliary modules (unmerged LoRA adapters) resident in DRAM and read whole every token;
    the selection's own (``selection.aux_bytes``: dejavu's predictors) are added to them.
    """
    aux_bytes = aux_bytes + selection.aux_bytes
    bpw = quant.bytes_per_weight
    sp = shape.static_params
    kv = kv_cache_bytes(shape, context, quant)
    weights = sp.attention + sp.embedding + sp.lm_head + sp.other
    static_resident = weights * bpw + sp.norms * NORM_BYTES + kv + aux_bytes
    # read per token: all resident weights but the embedding table, of which one row (when tied, the
    # LM head is the embedding table and is read whole), plus norms and the whole KV cache
    head = sp.embedding if shape.tied else sp.lm_head + shape.d
    static_read = (sp.attention + sp.other + head) * bpw + sp.norms * NORM_BYTES + kv + aux_bytes
    mlp_bpw = bpw if mlp_bytes_per_weight is None else mlp_bytes_per_weight
    mlp_total = shape.n_layers * shape.mlp_params_per_layer * mlp_bpw
    mlp_cache = dram_budget - static_resident
    if mlp_cache < 0:
        raise ConfigError(
            f"DRAM budget {format_bytes(dram_budget)} is smaller than the model's resident part "
            f"{format_bytes(static_resident)} (weights {format_bytes(static_resident - kv)} + KV cache "
            f"{format_bytes(kv)} for {context} tokens); raise --dram, lower --context or --bits"
        )
    kind_bytes = [k.n_units * k.weights_per_unit * mlp_bpw for k in selection.kinds]
    shares = list(kind_shares) if kind_shares is not None else kind_bytes
    if len(shares) != len(selection.kinds) or min(shares) < 0 or sum(shares) <= 0:
        n = len(selection.kinds)
        raise ConfigError(
            f"--kind-split {','.join(f'{v:g}' for v in shares)}: this method caches {n} unit kind{'s' * (n > 1)} "
            f"per layer ({', '.join(k.name for k in selection.kinds)}); give {n} non-negative "
            f"weight{'s' * (n > 1)}, not all zero"
        )
    per_layer = min(mlp_cache, mlp_total) / shape.n_layers
    kinds = []
    for k, share in zip(selection.kinds, shares):
        unit_bytes = k.weights_per_unit * mlp_bpw
        cap = int(per_layer * share / sum(shares) // unit_bytes) if cache else 0
        kinds.append(KindPlan(k.name, k.n_units, unit_bytes, min(cap, k.n_units)))
    return MemoryPlan(dram_budget, static_resident, kv, static_read, mlp_total, mlp_cache, tuple(kinds), aux_bytes)
