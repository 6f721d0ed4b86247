"""Model shapes: the numbers the memory plan and the synthetic generator need.

A :class:`ModelShape` is stored in every trace's metadata. The families (``simcore.models.<family>``)
declare the presets of DESIGN.md ("Models that matter"); the tracer fills a ModelShape from a real
model's config and counts its static parameters from the real tensors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StaticParams(BaseModel):
    """Parameter counts of the part of the model that stays resident in DRAM (not the MLPs)."""

    model_config = ConfigDict(extra="forbid")

    attention: int = Field(ge=0, description="q, k, v, o projection weights (and biases), all layers")
    embedding: int = Field(ge=0, description="input embedding table (vocab x d)")
    lm_head: int = Field(ge=0, description="output projection; 0 when tied to the embedding")
    norms: int = Field(ge=0, description="all normalisation weights (kept at 16 bits)")
    other: int = Field(default=0, ge=0, description="any auxiliary module kept resident")


class ModelShape(BaseModel):
    """Shapes of a decoder-only SwiGLU/GeGLU language model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="alias or Hugging Face id")
    family: str = Field(default="llama", description="architecture family (llama, mistral, phi3, qwen2, gemma)")
    n_layers: int = Field(gt=0)
    d: int = Field(gt=0, description="hidden size (MLP input width)")
    d_int: int = Field(gt=0, description="MLP intermediate size (GLU width)")
    n_heads: int = Field(gt=0)
    n_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab: int = Field(gt=0)
    tied: bool = Field(description="LM head shares the embedding table")
    activation: Literal["silu", "gelu"] = "silu"
    static_params: StaticParams

    @property
    def mlp_params_per_layer(self) -> int:
        """Weights of one MLP layer: W_u, W_g (d_int x d) and W_d (d x d_int)."""
        return 3 * self.d * self.d_int


def shape_from_dims(
    name: str,
    family: str,
    n_layers: int,
    d: int,
    d_int: int,
    n_heads: int,
    n_kv_heads: int,
    vocab: int,
    tied: bool,
    activation: str = "silu",
    head_dim: int | None = None,
) -> ModelShape:
    """Build a ModelShape whose static parameter counts follow from the dimensions alone
    (no biases; two RMSNorms per layer plus the final one)."""
    head_dim = head_dim or d // n_heads
    q_o = 2 * d * n_heads * head_dim
    k_v = 2 * d * n_kv_heads * head_dim
    static = StaticParams(
        attention=n_layers * (q_o + k_v),
        embedding=vocab * d,
        lm_head=0 if tied else vocab * d,
        norms=(2 * n_layers + 1) * d,
    )
    return ModelShape(
        name=name,
        family=family,
        n_layers=n_layers,
        d=d,
        d_int=d_int,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        vocab=vocab,
        tied=tied,
        activation=activation,
        static_params=static,
    )
