"""What a masking method tells the engine: which unit kinds an MLP layer has, where each kind's
per-token scores come from, and how many units to select for a target MLP density.

The engine owns the per-token loop (engine/kernels.py); a method only describes itself.
MLP density rho = fraction of one layer's MLP weight bytes used per token; the three matrices
W_u, W_g, W_d each hold d * d_int weights, so a kind covering ``m`` matrices' worth of weights
contributes ``m/3 * fraction_selected`` to rho.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simcore.errors import ConfigError

Mode = Literal["all", "topk", "threshold"]


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
        cache_aware: scores are re-weighted by cache state (dip-ca).
        mass: this kind's selection is scored against |h| for the kept-mass accuracy proxy.
    """

    name: str
    n_units: int
    weights_per_unit: int
    mode: Mode
    score: str | None = None
    cache_aware: bool = False
    mass: bool = False


@dataclass(frozen=True)
class Selection:
    """A method resolved for one model and density: kinds and the selected fraction of each."""

    kinds: tuple[KindSpec, ...]
    fractions: tuple[float, ...]
    detail: dict


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
