"""Models: shapes (``shape``), the family modules that declare the known models (one file per family:
``llama``, ``mistral``, ``phi3``; see ``families``), where a model's weights are and loading them offline
(``registry``), and one adapter over a decoder layer's MLP (``mlp``) that the tracer, eval and prune use.
Importing this package does not import torch."""

from __future__ import annotations

from simcore.errors import ConfigError
from simcore.models.base import Gguf, Preset
from simcore.models.shape import ModelShape, StaticParams, shape_from_dims


def _presets():
    from simcore.models.families import presets

    return presets()


def __getattr__(name):
    if name == "PRESETS":  # alias -> ModelShape, for the synthetic generator and eval
        return {a: p.shape for a, p in _presets().items()}
    raise AttributeError(f"module 'simcore.models' has no attribute {name!r}")


def preset(name: str) -> ModelShape:
    """The shape preset called ``name``; a ConfigError listing the known names otherwise."""
    presets = _presets()
    if name not in presets:
        raise ConfigError(f"unknown model preset {name!r}; choose one of: {', '.join(presets)}") from None
    return presets[name].shape


__all__ = ["Gguf", "ModelShape", "PRESETS", "Preset", "StaticParams", "preset", "shape_from_dims"]
