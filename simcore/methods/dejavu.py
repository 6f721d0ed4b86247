"""dejavu (Liu et al., Deja Vu: Contextual Sparsity for Efficient LLMs at Inference Time, ICML 2023): a
small MLP per layer (``simcore train-predictor``: |x| -> hidden -> d_int, ReLU) predicts from the MLP input
which GLU neurons matter; the top-k neurons by predicted score are loaded, each a W_u row, a W_g row and
a W_d column (all three matrices sparse, so the neuron fraction is the density).

The selection never looks at h: only the predictor decides (replay and eval read |h| only for the kept
|h|^2 accuracy proxy). The predictors of every layer, at their stored precision, are resident in DRAM and
read every token (``Selection.aux_bytes``, counted in the memory plan). A predictor is never applied to
the tokens it was trained on: replay stops before them (as for layouts), and an overlap that remains, in
replay or eval, is an error.
"""

from __future__ import annotations

from pydantic import Field

from simcore.calibration import TextUse, check_disjoint
from simcore.errors import ConfigError
from simcore.methods.base import Display, KindSpec, MethodOptions, Selection, check_density
from simcore.units import format_bytes

DISPLAY = Display(label="dejavu", color="tab:green", order=50)


class Options(MethodOptions):
    predictor: str | None = Field(
        default=None,
        description="dejavu: a `simcore train-predictor` file (.npz) whose per-layer predictors rank the neurons "
        "(required)",
    )


def _missing(layer, magnitudes):
    raise ConfigError(_MISSING)


_MISSING = "method dejavu needs --predictor FILE: train one with `simcore train-predictor TRACE` (TRACE/predictor.npz)"


def calibrated_on(options: Options) -> dict | None:
    """The provenance of the predictor's training tokens (None without a predictor)."""
    if options.predictor is None:
        return None
    from simcore.predictor.store import load

    return load(options.predictor).provenance


def resolve(shape, density: float, options: Options, use: TextUse | None = None) -> Selection:
    """One kind, "neuron" (3 d weights), top-k by the predictor's scores of |x|; ``use`` (the tokens masked)
    must be disjoint from the predictor's training tokens. Without ``use`` and without a predictor, the
    selection only describes the method (the trace columns it reads): scoring with it is an error."""
    f = check_density(density)
    if options.predictor is None:
        if use is not None:  # a run: a predictor is required
            raise ConfigError(_MISSING)
        kind = KindSpec("neuron", shape.d_int, 3 * shape.d, "topk", score="x", mass=True, score_fn=_missing)
        return Selection((kind,), (f,), {"neuron_fraction": f, "predictor": None})
    from simcore.predictor.store import load

    p = load(options.predictor)
    p.check_fits(shape)
    prov = p.provenance
    if use is not None:
        check_disjoint(prov, f"the predictor {options.predictor}", use.sha256, use.first, use.end)
    held = p.meta.get("held_out") or {}
    detail = {
        "neuron_fraction": f,
        "predictor": str(options.predictor),
        "predictor_bytes": p.nbytes,
        "predictor_dtype": p.meta["dtype"],
        "hidden": p.meta["hidden"],
        "top": p.meta["top"],
        "trained_on": prov,
        "recall": held.get("recall_mean"),
    }
    kind = KindSpec("neuron", shape.d_int, 3 * shape.d, "topk", score="x", mass=True, score_fn=p.scores)
    return Selection((kind,), (f,), detail, aux_bytes=p.nbytes)


def describe(config: dict) -> str:
    """dejavu rho=0.50 (predictors P: 127 MB float16 resident, read every token; hidden 1000; held-out
    recall of the top 10% 0.873)"""
    sel = config.get("selection") or {}
    if not sel.get("predictor"):
        return f"dejavu rho={config['density']:.2f}"
    recall = sel.get("recall")
    a, b = sel["trained_on"]["tokens"]
    return (
        f"dejavu rho={config['density']:.2f} (predictors {sel['predictor']}: {format_bytes(sel['predictor_bytes'])} "
        f"{sel['predictor_dtype']} resident, read every token; hidden {sel['hidden']}; trained on tokens [{a}, {b}); "
        + (
            f"held-out recall of the top {100 * sel['top']:g}% {recall:.3f})"
            if recall is not None
            else "no held-out recall)"
        )
    )
