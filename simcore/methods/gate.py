"""gate: top-k of |act(W_g x)| selects neurons; W_g is loaded whole, the selected neurons' W_u rows
and W_d columns are loaded (the baseline of e.g. CATS without the threshold)."""

from simcore.methods.base import Display, KindSpec, NoOptions, Selection, check_density, neuron_fraction

Options = NoOptions
DISPLAY = Display(label="gate", color="tab:olive", order=20)


def resolve(shape, density: float, options: NoOptions) -> Selection:
    f = neuron_fraction("gate", check_density(density), dense_matrices=1)
    kinds = (
        KindSpec("gate", shape.d_int, shape.d, "all"),
        KindSpec("up_down", shape.d_int, 2 * shape.d, "topk", score="gate", mass=True),
    )
    return Selection(kinds, (1.0, f), {"neuron_fraction": f})
