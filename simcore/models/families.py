"""The model families: every module of ``simcore.models`` other than the machinery (base, shape, mlp,
families, registry) is one family and declares ``PRESETS`` (``simcore.models.base.Preset``). A new
family is one file."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

from simcore.models.base import Preset

MACHINERY = {"base", "shape", "mlp", "families", "registry"}


def family_modules() -> list:
    """The family modules, by name."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in MACHINERY)
    return [importlib.import_module(f"simcore.models.{n}") for n in names]


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
