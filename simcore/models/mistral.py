"""Mistral models: the Llama MLP layout (``gate_proj``, ``up_proj``, ``down_proj``; SiLU ``act_fn``)."""

from simcore.models.base import MlpLayout, Preset
from simcore.models.shape import shape_from_dims

ARCHITECTURES = ("Mistral",)
MLP = MlpLayout(gate="gate_proj", up="up_proj", down="down_proj", act=("act_fn",))

PRESETS = (
    Preset(
        "mistral7b",
        "mistralai/Mistral-7B-v0.1",
        shape_from_dims("mistral7b", "mistral", 32, 4096, 14336, 32, 8, 32000, False),
        licence="Apache-2.0",
    ),
)
