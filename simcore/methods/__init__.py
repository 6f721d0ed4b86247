"""Masking methods, one module each; the CLI name is the module name with '-' for '_'
(``dip-ca`` -> ``dip_ca.py``). A module exposes ``resolve(shape, density, **options) -> Selection``."""

from __future__ import annotations

import importlib
import pkgutil

from simcore.errors import ConfigError
from simcore.methods.base import KindSpec, Selection


def available() -> list[str]:
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if m.name != "base")


def resolve(name: str, shape, density: float, **options) -> Selection:
    """Resolve method ``name`` for a model shape and target MLP density."""
    if name not in available():
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(available())}")
    module = importlib.import_module(f"simcore.methods.{name.replace('-', '_')}")
    return module.resolve(shape, density, **options)


__all__ = ["KindSpec", "Selection", "available", "resolve"]
