"""Masking methods, one module each; the CLI name is the module name with '-' for '_'
(``dip-ca`` -> ``dip_ca.py``), and a method of one's own is a path to its ``.py`` file
(``--method ./my_method.py``). What a module defines: ``simcore.methods.base``."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

from pydantic import ValidationError

from simcore.calibration import TextUse
from simcore.errors import ConfigError, SimcoreError, describe_validation
from simcore.methods.base import Display, KindSpec, MethodOptions, NoOptions, Reweight, Selection
from simcore.plugins import is_path, load_file


@functools.cache
def _names() -> tuple[str, ...]:
    mods = pkgutil.iter_modules(__path__)
    return tuple(sorted(m.name.replace("_", "-") for m in mods if m.name != "base" and not m.name.startswith("_")))


def available() -> list[str]:
    """Names of the package's methods, in display order."""
    return sorted(_names(), key=lambda n: (load(n).DISPLAY.order, n))


def load(name: str) -> ModuleType:
    """The method module called ``name`` or the method file at path ``name``, with ``Options`` and
    ``DISPLAY`` defaulted when it does not define them."""
    if is_path(name):
        module = load_file(name, "--method")
    elif name in _names():
        module = importlib.import_module(f"simcore.methods.{name.replace('-', '_')}")
    else:
        raise ConfigError(
            f"unknown method {name!r}; choose one of: {', '.join(sorted(_names()))}, or give the path of a .py file"
        )
    if not callable(getattr(module, "resolve", None)):
        raise ConfigError(f"method {name}: defines no resolve(shape, density, options); see docs/extending.md")
    if not hasattr(module, "Options"):
        module.Options = NoOptions
    if not (isinstance(module.Options, type) and issubclass(module.Options, MethodOptions)):
        raise ConfigError(f"method {name}: Options must subclass simcore.methods.base.MethodOptions")
    if not hasattr(module, "DISPLAY"):
        module.DISPLAY = Display(label=Path(name).stem if is_path(name) else name)
    return module


def options(name: str, values: dict | None = None) -> MethodOptions:
    """Method ``name``'s options from ``values`` (option name -> value; unset ones take the method's
    defaults), validated by the method: a ConfigError names the option and what is wrong."""
    model = load(name).Options
    try:
        return model(**(values or {}))
    except ValidationError as e:
        raise ConfigError(f"method {name}: {describe_validation(e)}") from None


def _takes_use(module: ModuleType) -> bool:
    """Whether a method's ``resolve`` takes a fourth argument, ``use`` (the tokens its masks apply to)."""
    try:
        return len(inspect.signature(module.resolve).parameters) >= 4
    except (TypeError, ValueError):
        return False


def resolve(
    name: str, shape, density: float, opts: MethodOptions | dict | None = None, use: TextUse | None = None
) -> Selection:
    """Resolve method ``name`` for a model shape and target MLP density under its options. ``use`` (the
    text and tokens the masks apply to) goes to a method whose ``resolve`` takes it (to find a calibration
    of that text, never one made on those tokens)."""
    module = load(name)
    if not isinstance(opts, MethodOptions):
        opts = options(name, opts)
    args = (shape, density, opts, use) if _takes_use(module) else (shape, density, opts)
    if not is_path(name):
        return module.resolve(*args)
    try:  # a user's code: any failure is a configuration error naming the file
        selection = module.resolve(*args)
    except SimcoreError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"method {name}: resolve failed: {type(e).__name__}: {first}") from None
    if not isinstance(selection, Selection):
        raise ConfigError(
            f"method {name}: resolve must return a simcore.methods.base.Selection, not a {type(selection).__name__}"
        )
    return selection


def calibrated_on(name: str, opts: MethodOptions) -> dict | None:
    """The provenance ({model, text, text_sha256, tokens}) of the calibrated artefact method ``name``
    applies under its options ``opts`` (the module's ``calibrated_on``), or None."""
    custom = getattr(load(name), "calibrated_on", None)
    return custom(opts) if callable(custom) else None


def display(name: str) -> Display:
    """How reports show method ``name`` (a name they do not know is shown as itself, last)."""
    try:
        return load(name).DISPLAY
    except ConfigError:
        return Display(label=name, order=1000)


def describe(config: dict) -> str:
    """The method part of a result's printed setting line, every variant in effect named: the method's
    ``describe(config)`` (``config``: a result's resolved configuration), or its label and density."""
    try:
        module = load(config["method"])
    except ConfigError:
        return f"{config['method']} rho={config['density']:.2f}"
    custom = getattr(module, "describe", None)
    if callable(custom):
        return custom(config)
    return f"{module.DISPLAY.label} rho={config['density']:.2f}"


def row_label(row: dict) -> str:
    """A report's line label for a results row: the method's ``row_label(row)``, or its label."""
    try:
        module = load(row["method"])
    except ConfigError:
        return str(row["method"])
    custom = getattr(module, "row_label", None)
    return custom(row) if callable(custom) else module.DISPLAY.label


__all__ = [
    "Display",
    "KindSpec",
    "MethodOptions",
    "NoOptions",
    "Reweight",
    "Selection",
    "available",
    "calibrated_on",
    "describe",
    "display",
    "load",
    "options",
    "resolve",
    "row_label",
]
