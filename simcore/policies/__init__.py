"""Eviction policies, one module each; the CLI name is the module name (STYLE.md #1), and a policy of
one's own is a path to its ``.py`` file (``--policy ./my_policy.py``).

Two families; the engine tells them apart by what a module defines, never by its name:

* **score family** (lru, lfu, belady, none): ``weights(n_tokens) -> (w_count, w_last, w_next)``, the
  integer weights of a linear priority over a unit's use count, last-use token and next-use token
  (higher is kept). The engine keeps those three numbers per unit (next use only with ``NEEDS_FUTURE``)
  and evicts the cached units of lowest priority the current token does not use (ties: lower unit
  index first), by radix selection over the whole selection at once: the fast path. ``STACK = True``
  (lru) says the policy is a stack algorithm, so one pass gives the hits of every capacity;
  ``NO_CACHE = True`` (none) gives every cache capacity 0.
* **hook family** (fifo, clock, sieve, s3fifo, arc, twoq, lfuda, and policies given by path):
  ``init(n_units, capacity) -> state`` (a tuple of arrays) and the jitted hooks ``hit``, ``evict``,
  ``insert`` (optional ``miss``, ``admit``) that ``simcore.engine.hooks`` calls in its loop, one unit at
  a time; see that module for the contract and how a token of many units maps onto them, and
  ``docs/extending.md`` for a worked example.

Every policy may set ``NEEDS_FUTURE = True`` (it reads next-use times; only cache-independent masks).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from types import ModuleType

from simcore.errors import ConfigError
from simcore.plugins import is_path, load_file

HOOKS = ("init", "hit", "evict", "insert")


@functools.cache
def _names() -> tuple[str, ...]:
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def available() -> list[str]:
    """Names of the policies (the modules of this package); read once per process."""
    return list(_names())


def family(module: ModuleType) -> str:
    """ "hooks" or "score": which of the two families (module docstring) a policy module belongs to."""
    if all(callable(getattr(module, h, None)) for h in HOOKS):
        if callable(getattr(module, "weights", None)):
            raise ConfigError(
                f"policy {getattr(module, '__file__', module.__name__)} defines both weights() and the hooks "
                f"{', '.join(HOOKS)}; keep one interface (see docs/extending.md)"
            )
        return "hooks"
    if callable(getattr(module, "weights", None)):
        return "score"
    missing = ", ".join(h for h in HOOKS if not callable(getattr(module, h, None)))
    raise ConfigError(
        f"policy {getattr(module, '__file__', module.__name__)} defines neither weights() nor the hooks "
        f"{', '.join(HOOKS)} (missing: {missing}); see docs/extending.md"
    )


def load(name: str) -> ModuleType:
    """The policy module called ``name``, or the policy file at path ``name`` (a ``.py`` file), checked
    for what the engine needs (a ConfigError says what is missing)."""
    if is_path(name):
        return _checked(load_file(name, "--policy"))
    if name not in _names():
        raise ConfigError(
            f"unknown policy {name!r}; choose one of: {', '.join(available())}, or give the path of a .py file"
        )
    return _checked(importlib.import_module(f"simcore.policies.{name}"))


def _checked(module: ModuleType) -> ModuleType:
    """``module`` once it is known to be a usable policy; its optional flags defaulted."""
    where = getattr(module, "__file__", None) or module.__name__
    kind = family(module)
    for flag in ("NEEDS_FUTURE", "STACK", "NO_CACHE"):
        if not hasattr(module, flag):
            setattr(module, flag, False)
    if kind == "hooks" and module.NEEDS_FUTURE:
        raise ConfigError(
            f"policy {where}: NEEDS_FUTURE is for score-family policies (weights()); hooks get no next-use times"
        )
    if module.STACK:
        w = tuple(module.weights(2)) if kind == "score" else None
        if w is None or w[0] != 0 or w[2] != 0 or w[1] <= 0:
            raise ConfigError(
                f"policy {where}: STACK = True is implemented for recency order only (weights (0, w, 0), w > 0, "
                "as lru); drop STACK for other policies"
            )
    return module
