"""Modules given by path: a cache policy or a masking method of one's own, outside the package
(``--policy ./my_policy.py``, ``--method ./my_method.py``)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from simcore.errors import ConfigError


def is_path(name: str) -> bool:
    """Whether an option's value names a ``.py`` file rather than a module of the package."""
    return name.endswith(".py") or "/" in name or "\\" in name


def load_file(name: str, option: str) -> ModuleType:
    """Import the Python file ``name`` (for the message: given as ``option``, e.g. "--policy")."""
    return _load(str(Path(name).expanduser().resolve()), option)


@functools.cache
def _load(path: str, option: str) -> ModuleType:
    """Import a file under a name unique to its path, once per process (so its jitted functions compile
    once); its globals are not shared with a package module of the same name."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{option} {path}: no such file; give a name or the path of a .py file")
    unique = f"simcore_user_{p.stem}_{hashlib.sha1(path.encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(unique, p)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{option} {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module  # as an import would (Numba's cache and pickling look it up there)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a user's file: report any failure as a configuration error
        del sys.modules[unique]
        raise ConfigError(f"{option} {path}: importing it failed: {type(e).__name__}: {e}") from None
    return module
