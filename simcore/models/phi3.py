"""Phi-3 models: one fused ``gate_up_proj`` (output features [0, d_int) the gate, [d_int, 2 d_int) the
up projection; ``simcore.models.mlp`` splits it), then ``down_proj``; a SiLU ``activation_fn``."""

from simcore.models.base import MlpLayout, Preset
from simcore.models.shape import shape_from_dims

ARCHITECTURES = ("Phi-3",)
MLP = MlpLayout(gate=None, up=None, gate_up="gate_up_proj", down="down_proj", act=("activation_fn",))

PRESETS = (
    Preset(
        "phi3-mini",
        "microsoft/Phi-3-mini-4k-instruct",
        shape_from_dims("phi3-mini", "phi3", 32, 3072, 8192, 32, 32, 32064, False),
        licence="MIT",
    ),
    Preset(
        "phi3-medium",
        "microsoft/Phi-3-medium-4k-instruct",
        shape_from_dims("phi3-medium", "phi3", 40, 5120, 17920, 40, 10, 32064, False),
        licence="MIT",
    ),
)
