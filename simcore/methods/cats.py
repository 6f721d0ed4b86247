"""cats (Lee et al., CATS: Contextually-Aware Thresholding for Sparsity, 2024): neurons whose
|act(W_g x)| exceeds a per-layer threshold; W_g loaded whole. The threshold of each layer is the
quantile of its gate magnitudes that gives the target neuron fraction, calibrated on the first
``calib_tokens`` tokens of the trace (so the achieved density varies per token)."""

from simcore.methods.base import KindSpec, Selection, check_density, neuron_fraction


def resolve(shape, density: float, **_) -> Selection:
    f = neuron_fraction("cats", check_density(density), dense_matrices=1)
    kinds = (
        KindSpec("gate", shape.d_int, shape.d, "all"),
        KindSpec("up_down", shape.d_int, 2 * shape.d, "threshold", score="gate", mass=True),
    )
    return Selection(kinds, (1.0, f), {"neuron_fraction": f})
