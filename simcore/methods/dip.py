"""dip (Federici et al., Dynamic Input Pruning, arXiv:2412.01380): top-k_in of |x| over the d input
channels selects W_u and W_g columns (cached together as one "input" unit); top-k_d of |h~| over
d_int selects W_d columns ("down" units). From a dense trace, replay ranks by |h| (DESIGN.md,
"Trace"). rho = (2 rho_in + rho_d) / 3.

Split: a calibration (``simcore calibrate``) of this model on this text when one exists for the density
(looked up in one place, ``simcore.calibration.calibration_dir``; ``--calibration FILE`` names one
explicitly), never one made on the masked tokens; otherwise the default rule rho_d = sqrt(rho), rho_in = (3 rho - rho_d)/2,
i.e. more density on the down matrix; below rho = 1/9 the split is uniform. --rho-in or --rho-d
sets one side and the other follows from rho.
"""

from __future__ import annotations

import math

from pydantic import Field

from simcore.calibration import TextUse, find_split
from simcore.errors import ConfigError
from simcore.methods.base import Display, KindSpec, MethodOptions, Reweight, Selection, check_density

DISPLAY = Display(label="dip", color="tab:blue", order=60)


def split(density: float, rho_in: float | None = None, rho_d: float | None = None) -> tuple[float, float]:
    """(rho_in, rho_d) for a target MLP density; one of them may be given."""
    check_density(density)
    if rho_in is not None and rho_d is not None:
        got = (2 * rho_in + rho_d) / 3
        if abs(got - density) > 1e-6:
            raise ConfigError(
                f"--rho-in {rho_in} and --rho-d {rho_d} give density {got:.4f}, not --density {density}; "
                "give only one of them"
            )
    elif rho_in is not None:
        rho_d = 3 * density - 2 * rho_in
    elif rho_d is not None:
        rho_in = (3 * density - rho_d) / 2
    else:
        rho_d = math.sqrt(density)
        rho_in = (3 * density - rho_d) / 2
        if rho_in <= 0 or density <= 1 / 9:
            rho_in = rho_d = density
    rho_in, rho_d = (min(max(v, 0.0), 1.0) if -1e-9 <= v <= 1 + 1e-9 else v for v in (rho_in, rho_d))  # rounding
    for name, v in (("rho_in", rho_in), ("rho_d", rho_d)):
        if not 0 <= v <= 1:
            raise ConfigError(f"density {density} needs {name} = {v:.4f}, outside [0, 1]; choose another split")
    return rho_in, rho_d


class Options(MethodOptions):
    rho_in: float | None = Field(
        default=None, ge=0, le=1, description="dip/dip-ca: input-channel density (rho_d follows from --density)"
    )
    rho_d: float | None = Field(
        default=None, ge=0, le=1, description="dip/dip-ca: down-channel density (rho_in follows from --density)"
    )
    calibration: str | None = Field(
        default=None,
        description="dip/dip-ca: a `simcore calibrate` file whose split to use (default: the calibration of this "
        "model on this text, if one was saved)",
    )


def kinds(
    shape, density: float, options: Options, reweight: Reweight | None = None, use: TextUse | None = None
) -> Selection:
    """dip's two kinds ("input": a W_u + W_g column per input channel, ranked by |x|; "down": a W_d
    column per GLU neuron, ranked by |h|) at the split of ``options`` or of a calibration of this model
    on ``use``'s text (the tokens being masked), or the default rule; ``reweight`` makes them
    cache-aware (dip-ca)."""
    rho_in, rho_d = options.rho_in, options.rho_d
    source = "given"
    if rho_in is not None or rho_d is not None:
        if options.calibration is not None:
            raise ConfigError("--calibration gives the split that --rho-in/--rho-d set; give one of them")
    else:
        found, source = find_split(shape.name, density, use, options.calibration)
        if found is not None:
            rho_in, rho_d = found
    r_in, r_d = split(density, rho_in, rho_d)
    kinds = (
        KindSpec("input", shape.d, 2 * shape.d_int, "topk", score="x", reweight=reweight),
        KindSpec("down", shape.d_int, shape.d, "topk", score="h", reweight=reweight, mass=True),
    )
    return Selection(kinds, (r_in, r_d), {"rho_in": r_in, "rho_d": r_d, "split": source})


def resolve(shape, density: float, options: Options, use: TextUse | None = None) -> Selection:
    return kinds(shape, density, options, use=use)


def describe(config: dict) -> str:
    """dip rho=0.50 (rho_in 0.396, rho_d 0.707, default rule)"""
    sel = config.get("selection") or {}
    return (
        f"{config['method']} rho={config['density']:.2f} (rho_in {sel['rho_in']:.3f}, rho_d {sel['rho_d']:.3f}, "
        f"{sel.get('split', 'given')})"
    )
