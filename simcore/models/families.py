"""The model families: every module of ``simcore.models`` other than the machinery (base, shape, mlp,
families, registry) is one family, found here with pkgutil; it declares ``PRESETS`` and, when its MLP
is not laid out as Llama's, ``MLP`` (see ``simcore.models.base``). A new family is one file."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from simcore.models.base import MlpLayout, Preset

MACHINERY = {"base", "shape", "mlp", "families", "registry"}


@functools.cache
def family_modules() -> tuple[ModuleType, ...]:
    """The family modules, by name."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in MACHINERY)
    return tuple(importlib.import_module(f"simcore.models.{n}") for n in names)


@functools.cache
def presets() -> dict[str, Preset]:
    """Every family's presets by alias; an alias declared twice is an error of the package."""
    out: dict[str, Preset] = {}
    for module in family_modules():
        for p in module.PRESETS:
            if p.alias in out:
                raise RuntimeError(f"model alias {p.alias!r} is declared twice ({module.__name__})")
            out[p.alias] = p
    return out


@functools.cache
def layouts() -> tuple[MlpLayout, ...]:
    """The distinct MLP layouts the families declare, the most specific first (more attributes to
    match), so that a layout never shadows one that extends it."""
    seen: list[MlpLayout] = []
    for module in family_modules():
        layout = getattr(module, "MLP", MlpLayout())
        if layout not in seen:
            seen.append(layout)
    return tuple(sorted(seen, key=lambda lay: -len(lay.parts)))


@functools.cache
def architectures() -> tuple[str, ...]:
    """The Hugging Face architectures the families cover (their ``ARCHITECTURES``), for messages."""
    return tuple(a for module in family_modules() for a in getattr(module, "ARCHITECTURES", ()))
