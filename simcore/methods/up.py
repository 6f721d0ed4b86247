"""up: top-k of |W_u x| selects neurons; W_u is loaded whole, the selected neurons' W_g rows and
W_d columns are loaded."""

from simcore.methods.base import Display, KindSpec, NoOptions, Selection, check_density, neuron_fraction

Options = NoOptions
DISPLAY = Display(label="up", color="tab:brown", order=30)


def resolve(shape, density: float, options: NoOptions) -> Selection:
    f = neuron_fraction("up", check_density(density), dense_matrices=1)
    kinds = (
        KindSpec("up", shape.d_int, shape.d, "all"),
        KindSpec("gate_down", shape.d_int, 2 * shape.d, "topk", score="up", mass=True),
    )
    return Selection(kinds, (1.0, f), {"neuron_fraction": f})
