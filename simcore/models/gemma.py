"""Gemma models: GeGLU, the Llama projections (``gate_proj``, ``up_proj``, ``down_proj``) with a
GELU-tanh ``act_fn``; head_dim 256 is not d / n_heads, and the embedding is tied to the LM head.
(Gemma's RMSNorm scales by 1 + w; its weight count is the same.)"""

from simcore.models.base import MlpLayout

ARCHITECTURES = ("Gemma",)
MLP = MlpLayout(gate="gate_proj", up="up_proj", down="down_proj", act=("act_fn",))

PRESETS = ()  # the layout only; Gemma-3-270M (issue #14) will be its first preset
