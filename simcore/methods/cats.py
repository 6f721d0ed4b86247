"""cats (Lee et al., CATS: Contextually-Aware Thresholding for Sparsity, 2024): neurons whose
|act(W_g x)| exceeds a per-layer threshold; W_g loaded whole. The threshold of each layer is the
quantile of its gate magnitudes that gives the target neuron fraction (:func:`threshold`), calibrated
on the first ``cats_calib_tokens`` tokens of the trace in replay, on calibration text in eval (so the
achieved density varies per token)."""

import numpy as np
from pydantic import Field

from simcore.methods.base import Display, KindSpec, MethodOptions, Selection, check_density, neuron_fraction

DISPLAY = Display(label="cats", color="tab:purple", order=40)


class Options(MethodOptions):
    cats_calib_tokens: int = Field(
        default=256, gt=0, description="cats: first tokens of each layer used to calibrate its threshold"
    )


def threshold(magnitudes: np.ndarray, fraction: float) -> float:
    """The gate magnitude above which ``fraction`` of the values in ``magnitudes`` (any shape) lie."""
    if fraction >= 1:
        return -1.0
    if fraction <= 0:
        return float(np.inf)
    return float(np.quantile(np.asarray(magnitudes, np.float64).ravel(), 1.0 - fraction))


def resolve(shape, density: float, options: Options) -> Selection:
    f = neuron_fraction("cats", check_density(density), dense_matrices=1)
    kinds = (
        KindSpec("gate", shape.d_int, shape.d, "all"),
        KindSpec("up_down", shape.d_int, 2 * shape.d, "threshold", score="gate", mass=True),
    )
    return Selection(kinds, (1.0, f), {"neuron_fraction": f}, threshold, options.cats_calib_tokens)
