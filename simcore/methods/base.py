"""What a masking method tells the engine: which unit kinds an MLP layer has, where each kind's
per-token scores come from, how many units to select for a target MLP density, and how a kind's
scores are re-weighted by the cache (cache-aware methods).

The engine owns the per-token loop (``simcore.engine``); a method only describes itself. A method
module defines:

* ``resolve(shape, density, options) -> Selection``;
* ``Options``: a :class:`MethodOptions` model of its own settings (their ``description`` is the CLI's
  help; ``json_schema_extra={"neutral": v}`` names the value at which an option has no effect, which
  other methods then accept in a grid); :class:`NoOptions` when it has none;
* ``DISPLAY``: a :class:`Display` (label, colour and order in reports);
* optionally ``row_label(row) -> str``, a report's line label for a results row (default: the label);
* optionally ``calibrated_on(options) -> dict | None``: the provenance (``simcore.calibration.provenance``)
  of a calibrated artefact the masks come from (dejavu's predictors), so that replay stops before the
  tokens it was calibrated on, as it does for layouts.

MLP density rho = fraction of one layer's MLP weight bytes used per token; the three matrices
W_u, W_g, W_d each hold d * d_int weights, so a kind covering ``m`` matrices' worth of weights
contributes ``m/3 * fraction_selected`` to rho.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from simcore.errors import ConfigError

Mode = Literal["all", "topk", "threshold"]


class MethodOptions(BaseModel):
    """Base of a method's options: unknown fields and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class NoOptions(MethodOptions):
    """A method without options of its own."""


@dataclass(frozen=True)
class Display:
    """How reports show a method: its ``label``, a matplotlib ``color`` and its ``order`` among methods
    (ascending: baselines first)."""

    label: str
    color: str = "tab:cyan"
    order: int = 100


@dataclass(frozen=True)
class Reweight:
    """Cache-aware re-weighting of a kind's scores before its top-k (dip-ca): units not in the cache
    count ``gamma`` times their score, gamma warming up per ``gamma_schedule``: "linear" (from 1 over
    the run's first ``gamma_warmup`` tokens) or "authors" (1 - (1 - gamma)(1 - gamma^(t/4)), t the
    token's index in its sequence); the ``fixed_top_n`` largest are exempt; ``approx_m`` > 1 instead
    selects approximately from the ``approx_m * k`` largest (the fixed top n, then cached units first),
    ranking scores blended with the units' normalised use counts, weight ``approx_gamma``, when > 0."""

    gamma: float = 1.0
    gamma_warmup: int = 0
    fixed_top_n: int = 0
    approx_m: float = 0.0
    gamma_schedule: str = "linear"
    approx_gamma: float = 0.0

    @property
    def cache_dependent(self) -> bool:
        """Whether the masks depend on the cache's contents (so tokens must replay in order with the
        cache in the loop, and no policy may look into the future)."""
        return self.gamma < 1 or self.approx_m > 1


@dataclass(frozen=True)
class KindSpec:
    """One unit kind of a layer: its own cache, its own mask.

    Attributes:
        name: "input", "down", "neuron", "gate_up", ...
        n_units: units in one layer (d or d_int).
        weights_per_unit: weights a unit bundles (e.g. a W_u column + a W_g column = 2 * d_int).
        mode: "all" (every unit every token), "topk" (a constant count per token) or
            "threshold" (units whose score exceeds a per-layer threshold).
        score: trace column whose magnitudes rank the units (None for mode "all").
        reweight: cache-aware re-weighting of the scores (None: the mask ignores the cache).
        mass: this kind's selection is scored against |h| for the kept-mass accuracy proxy.
        score_fn: ``score_fn(layer, magnitudes) -> scores``: the kind's scores computed from the
            ``score`` column of one layer, float16 (T, width) -> float16 (T, n_units) >= 0 (dejavu's
            predictors); None: the column's magnitudes rank the units themselves.
    """

    name: str
    n_units: int
    weights_per_unit: int
    mode: Mode
    score: str | None = None
    reweight: Reweight | None = None
    mass: bool = False
    score_fn: Callable | None = field(default=None, compare=False)

    @property
    def cache_aware(self) -> bool:
        return self.reweight is not None

    def scores(self, layer: int, magnitudes):
        """The scores ranking this kind's units for tokens of ``layer``: float16 (T, n_units), the
        ``score`` column's ``magnitudes`` (T, width) or what ``score_fn`` computes from them."""
        return magnitudes if self.score_fn is None else self.score_fn(layer, magnitudes)


@dataclass(frozen=True)
class Selection:
    """A method resolved for one model and density: kinds and the selected fraction of each; ``detail``
    (plain data) is recorded with every result (e.g. dip's rho split and where it came from).

    Kinds of mode "threshold" need a per-layer threshold: ``threshold(magnitudes, fraction)`` computes
    it from the scores of the first ``calib_tokens`` tokens of a layer (replay: of the trace; eval: of
    calibration text). ``aux_bytes``: auxiliary modules the method keeps resident in DRAM and reads
    whole every token (dejavu's predictors), counted in the memory plan's resident part."""

    kinds: tuple[KindSpec, ...]
    fractions: tuple[float, ...]
    detail: dict
    threshold: Callable | None = None
    calib_tokens: int = 0
    aux_bytes: float = 0.0

    @property
    def cache_dependent(self) -> bool:
        return any(k.reweight is not None and k.reweight.cache_dependent for k in self.kinds)


def neuron_fraction(method: str, density: float, dense_matrices: int) -> float:
    """Fraction of neurons to select when ``dense_matrices`` of the three are loaded whole.

    rho = (dense_matrices + (3 - dense_matrices) * f) / 3  =>  f = (3 rho - dense_matrices) / (3 - dense_matrices)
    """
    f = (3 * density - dense_matrices) / (3 - dense_matrices)
    if f < 0:
        floor = dense_matrices / 3
        raise ConfigError(
            f"method {method} loads {dense_matrices} of the 3 MLP matrices whole, so its MLP density cannot go below "
            f"{floor:.3f}; ask for --density >= {floor:.3f} or pick dip/dip-ca"
        )
    return min(1.0, f)


def check_density(density: float) -> float:
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"--density must be in (0, 1], got {density}")
    return density
