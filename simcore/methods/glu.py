"""glu (oracle): top-k of |h| over the d_int GLU neurons selects W_d columns; W_u and W_g are
loaded whole (h must be computed before it can be pruned)."""

from simcore.methods.base import Display, KindSpec, NoOptions, Selection, check_density, neuron_fraction

Options = NoOptions
DISPLAY = Display(label="glu", color="tab:gray", order=10)


def resolve(shape, density: float, options: NoOptions) -> Selection:
    f = neuron_fraction("glu", check_density(density), dense_matrices=2)
    kinds = (
        KindSpec("gate_up", shape.d_int, 2 * shape.d, "all"),
        KindSpec("down", shape.d_int, shape.d, "topk", score="h", mass=True),
    )
    return Selection(kinds, (1.0, f), {"neuron_fraction": f})
