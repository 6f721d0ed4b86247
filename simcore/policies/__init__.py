"""Eviction policies, one module each; the CLI name is the module name (STYLE.md #1).

A policy answers one question for the engine: how much it wants to keep a unit, as the weights
``weights(n_tokens) -> (w_count, w_last, w_next)`` of a linear score over the unit's use count,
last-use token and next-use token (higher is kept; all integers, so the score is an exact integer). Plain data keeps the Numba kernels compiled once and cached for
every policy. The engine owns the loop: it keeps the three per-unit numbers (next-use only for
policies with ``NEEDS_FUTURE``) and evicts the cached units of lowest priority that the current
token does not use (ties: lower unit index first).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType

from simcore.errors import ConfigError


@functools.cache
def _names() -> tuple[str, ...]:
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)))


def available() -> list[str]:
    """Names of the policies (the modules of this package); read once per process."""
    return list(_names())


def load(name: str) -> ModuleType:
    """The policy module called ``name``."""
    if name not in _names():
        raise ConfigError(f"unknown policy {name!r}; choose one of: {', '.join(available())}")
    return importlib.import_module(f"simcore.policies.{name}")
