"""dense: no sparsity; every neuron (a W_u row, a W_g row and a W_d column) is used every token.
The cache still holds a fixed part of them."""

from simcore.errors import ConfigError
from simcore.methods.base import Display, KindSpec, NoOptions, Selection

Options = NoOptions
DISPLAY = Display(label="dense", color="black", order=0)
DENSITY = 1.0  # the only density it has


def resolve(shape, density: float, options: NoOptions) -> Selection:
    if density != 1:
        raise ConfigError(f"method dense uses every weight (density 1); drop --density {density:g} or pick a method")
    kind = KindSpec("neuron", shape.d_int, 3 * shape.d, "all")
    return Selection((kind,), (1.0,), {})


def describe(config: dict) -> str:
    return "dense"
