"""dense: no sparsity; every neuron (a W_u row, a W_g row and a W_d column) is used every token.
The cache still holds a fixed part of them."""

from simcore.methods.base import KindSpec, Selection


def resolve(shape, density: float = 1.0, **_) -> Selection:
    kind = KindSpec("neuron", shape.d_int, 3 * shape.d, "all")
    return Selection((kind,), (1.0,), {})
