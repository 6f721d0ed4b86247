"""Models: every model simcore knows, where its weights are, and how its MLP is read.

* ``shape``: :class:`ModelShape` / :class:`StaticParams` (the numbers the memory plan and the synthetic
  generator need) and ``shape_from_dims``;
* one file per family (``llama``, ``mistral``, ``phi3``, ``gemma``; found by ``families``), each
  declaring its presets (alias, Hugging Face id, shape, GGUF source, licence) and its MLP layout;
* ``registry``: a name (alias, Hugging Face id, path) to weights, loaded offline (``resolve``,
  ``load_model``), and ``decoder_layers``;
* ``mlp``: :class:`Mlp`, the one adapter over a decoder layer's MLP (gate/up/down, fused gate_up,
  SiLU or GELU) that the tracer, eval and prune use.

Importing this package does not import torch; ``load_model`` imports it when called. Code that must
see a test's replacement of ``registry.load_model`` calls it through the ``registry`` module.
"""

from __future__ import annotations

from simcore.errors import ConfigError
from simcore.models import registry
from simcore.models.base import Gguf, MlpLayout, Preset
from simcore.models.mlp import Mlp
from simcore.models.registry import (
    ALIASES,
    DEFAULT_MODEL,
    LoadedModel,
    decoder_layers,
    gguf_path,
    load_model,
    resolve,
    smollm2_gguf_path,
)
from simcore.models.shape import ModelShape, StaticParams, shape_from_dims

PRESETS: dict[str, ModelShape] = {alias: p.shape for alias, p in ALIASES.items()}
"""alias -> ModelShape of every preset, for the synthetic generator and eval's early checks."""


def preset(name: str) -> ModelShape:
    """The shape preset called ``name``; a ConfigError listing the known names otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
    return PRESETS[name]


def spec(name: str) -> Preset:
    """The preset called ``name`` (alias, Hugging Face id, shape, GGUF source, licence); ConfigError
    listing the known names otherwise."""
    if name not in ALIASES:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(ALIASES)}") from None
    return ALIASES[name]


__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "PRESETS",
    "Gguf",
    "LoadedModel",
    "Mlp",
    "MlpLayout",
    "ModelShape",
    "Preset",
    "StaticParams",
    "decoder_layers",
    "gguf_path",
    "load_model",
    "preset",
    "registry",
    "resolve",
    "shape_from_dims",
    "smollm2_gguf_path",
    "spec",
]
