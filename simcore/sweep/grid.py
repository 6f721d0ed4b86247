"""Sweep grids: the axes a sweep varies, parsed from flags or a YAML file, expanded to configurations.

Axis values are comma lists (``--dram 48MB,64MB``) or ranges ``start:stop:step`` with the stop
included (``--density 0.3:0.7:0.1``, ``--dram 1GB:4GB:512MB``). A YAML grid file::

    trace: traces/smollm2-135m        # any ReplayConfig field not swept: fixed for the whole grid
    context: 1024
    grid:
      dram: [48MB, 64MB, 96MB]        # or "48MB:96MB:16MB"
      method: [dip, dip-ca]
      gamma: 0.1:0.3:0.1

Each configuration is named by :func:`config_key` (a hash of its resolved settings); what its result also
depends on (the trace, the device file, ...) is named by ``simcore.sweep.inputs``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from simcore import methods
from simcore.engine.settings import ReplayConfig
from simcore.errors import ConfigError, SimcoreError, describe_validation
from simcore.units import parse_bandwidth, parse_size

AXES = (
    "device",
    "dram",
    "flash_bw",
    "dram_bw",
    "flash_model",
    "layout",
    "method",
    "policy",
    "gamma",
    "density",
    "bits",
)
"""Settings a sweep can vary; every other ReplayConfig field is fixed for a grid."""
NUMERIC = {"gamma": float, "density": float, "bits": float}
TIMING_ONLY = ("device", "flash_bw", "dram_bw")
"""Axes that change no cache behaviour: hits are computed once and only the timing is derived (except the
device under ``flash_model: curve``, whose page and curve shape the Flash requests: see run.py)."""


def _range(name: str, text: str) -> list:
    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigError(f"--{name.replace('_', '-')} {text!r}: a range is start:stop:step")
    if name == "dram":
        start, stop, step = (parse_size(p, f"--dram {text!r}") for p in parts)
        fmt = str
    elif name in ("flash_bw", "dram_bw"):
        start, stop, step = (parse_bandwidth(p, f"--{name.replace('_', '-')}") for p in parts)
        fmt = lambda v: f"{v:g}"  # noqa: E731
    elif name in NUMERIC:
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"--{name} {text!r}: start:stop:step must be numbers") from None
        fmt = lambda v: round(v, 10)  # noqa: E731
    else:
        raise ConfigError(f"--{name} does not take a range; give a comma list")
    if step <= 0 or stop < start:
        raise ConfigError(f"--{name.replace('_', '-')} {text!r}: needs start <= stop and step > 0")
    n = int((stop - start) / step + 1e-9) + 1
    if n > 10_000:
        raise ConfigError(f"--{name.replace('_', '-')} {text!r} has {n} values; use a coarser step")
    return [fmt(start + i * step) for i in range(n)]


def parse_axis(name: str, value) -> list:
    """The values of one axis from a flag string, a YAML scalar or a YAML list."""
    if name not in AXES:
        raise ConfigError(f"cannot sweep {name!r}; sweepable: {', '.join(AXES)}")
    if isinstance(value, list):
        items = value
    elif isinstance(value, str) and value.count(":") == 2 and "/" not in value:
        items = _range(name, value)
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    else:
        items = [value]
    if not items:
        raise ConfigError(f"--{name.replace('_', '-')}: no values")
    out = []
    for v in items:
        if name in NUMERIC:
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"--{name} value {v!r} is not a number") from None
        elif name == "dram":
            parse_size(v, "--dram")  # validate now, keep the user's spelling
            v = str(v)
        elif name in ("flash_bw", "dram_bw"):
            parse_bandwidth(v, f"--{name.replace('_', '-')}")
            v = str(v)
        else:
            v = str(v)
        if v not in out:
            out.append(v)
    return out


class Grid:
    """Axes (name -> values) and fixed settings (other ReplayConfig fields)."""

    def __init__(self, axes: dict[str, list], fixed: dict | None = None):
        self.axes = {k: v for k, v in axes.items() if v}
        self.fixed = dict(fixed or {})
        unknown = set(self.fixed) - set(ReplayConfig.model_fields)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(sorted(unknown))} in the grid")
        both = set(self.axes) & set(self.fixed)
        if both:
            raise ConfigError(f"{', '.join(sorted(both))} is both swept and fixed; keep one")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> Grid:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"grid file {p} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"grid file {p} is a directory; give a YAML file") from None
        except OSError as e:
            raise ConfigError(f"cannot read grid file {p}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"grid file {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        except yaml.YAMLError:
            raise ConfigError(f"grid file {p} is not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"grid file {p} must be a mapping with a 'grid' section")
        axes = data.pop("grid", None) or {}
        if not isinstance(axes, dict):
            raise ConfigError(f"grid file {p}: 'grid' must map axis names to values")
        parsed = {k: parse_axis(k, v) for k, v in axes.items()}
        parsed.update({k: v for k, v in (overrides or {}).items() if v})
        return cls(parsed, data)

    def to_dict(self) -> dict:
        """The grid as a grid file holds it (``simcore sweep --grid`` reads it back)."""
        return {**self.fixed, "grid": self.axes}

    def digest(self) -> str:
        """A short hash of the grid (axes and fixed settings), naming its file beside a results table."""
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def configurations(self) -> list[dict]:
        """Every combination, as ReplayConfig settings. An option of another method (gamma for dip) takes its
        neutral value, so that a method is not replayed once per value of an option it ignores, and a
        method of one density (dense) takes it, whatever the density axis says. Duplicates are dropped,
        order is stable. Raises ConfigError for a setting ReplayConfig rejects (``--tokens 0``)."""
        names = list(self.axes)
        seen, out = set(), []
        grid_methods = set(self.axes.get("method") or [self.fixed.get("method")])
        for values in itertools.product(*(self.axes[n] for n in names)):
            s = _normalised({**self.fixed, **dict(zip(names, values))}, grid_methods)
            key = config_key(s)
            if key not in seen:
                seen.add(key)
                out.append(s)
        return out


def replay_config(settings: dict) -> ReplayConfig:
    """The ReplayConfig of a configuration's settings; ConfigError (one line) for an invalid value."""
    try:
        return ReplayConfig(**{k: v for k, v in settings.items() if k in ReplayConfig.model_fields})
    except ValidationError as e:
        raise ConfigError(describe_validation(e)) from None


def config_key(settings: dict) -> str:
    """A stable identifier of a configuration (its resolved settings): the ``config`` column of a table."""
    full = replay_config(settings).model_dump()
    for k in ("threads", "batch_tokens"):  # cannot change a result
        full.pop(k, None)
    return hashlib.sha1(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _normalised(s: dict, grid_methods: set | None = None) -> dict:
    """Settings with the options their method ignores at their neutral values (see ``configurations``); an
    option without a neutral value (dejavu's predictor) is dropped where another method of the grid
    (``grid_methods``) owns it, and left to be refused where none does."""
    from simcore.engine.settings import OPTION_OWNERS, neutral

    try:
        module = methods.load(s.get("method", ReplayConfig.model_fields["method"].default))
    except SimcoreError:
        return s  # replaying it reports the unknown method
    for option in OPTION_OWNERS:
        if option in s and option not in module.Options.model_fields:
            if neutral(option) is not None:
                s[option] = neutral(option)
            elif any(m in OPTION_OWNERS[option] for m in grid_methods or ()):
                s.pop(option)
    if hasattr(module, "DENSITY"):
        s["density"] = module.DENSITY
    return s
