"""What a sweep configuration's result depends on besides its settings, and the key naming both.

A results row is reused by a resumed sweep only when its ``key`` is the one the inputs give now. The
inputs are the files a replay reads, by content (a path alone would keep stale rows after a file is
rewritten in place):

- ``trace``: the trace's ``trace.json`` (it records the creation time, the source and the per-layer
  checksums, so re-creating a trace at the same path changes it);
- ``device``: the device profile's YAML (it sets bandwidths and may set the default DRAM budget);
- ``pruned``: the ``--pruned`` output's ``manifest.json``;
- ``layout``: the ``--layout`` file (the Flash order of the units);
- ``calibration``: the ``--calibration`` file, or the saved calibration of the trace's model on the
  trace's text (``simcore.calibration``; it sets dip's rho split when it exists); every method's key
  includes it, since recomputing too much is safe and a stale row is not;
- ``policy`` / ``method``: only when the setting is the path of one's own ``.py`` file, that file;
- ``simcore``: the simcore version.

A file that cannot be read counts as ``None`` (the configuration then fails, and is retried on resume).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from simcore import __version__


def file_digest(path: str | Path) -> str | None:
    """The first 16 hex digits of the SHA-256 of a file's bytes, or None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except (OSError, ValueError):  # missing, a directory, unreadable, a path with a NUL byte
        return None


def device_file(name_or_path: str) -> Path:
    """The YAML file a device setting names (as ``simcore.device.load_device`` finds it)."""
    from simcore.device import DEVICES_DIR

    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return DEVICES_DIR / f"{name_or_path}.yaml"


def trace_dir(settings: dict) -> Path:
    """The trace directory of a configuration (``trace``, else ``traces/<model>``)."""
    from simcore.engine.settings import resolve_trace_path

    return resolve_trace_path(settings.get("trace"), settings.get("model"))


def trace_model(trace: Path) -> str | None:
    """The model name recorded in a trace's metadata, or None when it cannot be read."""
    try:
        return json.loads((trace / "trace.json").read_bytes())["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def trace_text_hash(trace: Path) -> str | None:
    """The sha256 of the text a trace was made from, as its tracer recorded it, or None."""
    try:
        return json.loads((trace / "trace.json").read_bytes())["extra"].get("text_sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def calibration_digest(model: str | None, text_hash: str | None, explicit: str | None = None) -> str | None:
    """The identity of the dip split calibration a configuration may use: the ``--calibration`` file, or
    the saved calibration of ``model`` on the text whose sha256 is ``text_hash``."""
    from simcore.calibration import calibration_file

    if explicit is not None:
        return file_digest(Path(explicit).expanduser())
    if model is None or text_hash is None:
        return None
    return file_digest(calibration_file(model, text_hash))


def inputs_of(settings: dict, memo: dict | None = None) -> dict:
    """The identities of the files a configuration's replay reads (see the module docstring).

    ``memo`` caches them per (trace, model, device, pruned) within one sweep, so a grid of thousands of
    configurations reads each file once."""
    ident = (
        settings.get("trace"),
        settings.get("model"),
        settings.get("device", "a18"),
        settings.get("pruned"),
        settings.get("calibration"),
    )
    if memo is not None and ident in memo:
        return memo[ident]
    trace = trace_dir(settings)
    model = trace_model(trace)
    pruned = settings.get("pruned")
    out = {
        "trace": file_digest(trace / "trace.json"),
        "device": file_digest(device_file(str(settings.get("device", "a18")))),
        "pruned": file_digest(Path(pruned) / "manifest.json") if pruned is not None else None,
        "calibration": calibration_digest(model, trace_text_hash(trace), settings.get("calibration")),
        "simcore": __version__,
    }
    if memo is not None:
        memo[ident] = out
    from simcore.plugins import is_path

    for option in ("policy", "method"):  # files of one's own: their content is an input too
        value = settings.get(option)
        if isinstance(value, str) and is_path(value):
            out = dict(out, **{option: file_digest(Path(value).expanduser())})
    if settings.get("layout") is not None:
        out = dict(out, layout=file_digest(Path(settings["layout"]).expanduser()))
    return out


def row_key(config: str, inputs: dict) -> str:
    """The ``key`` of a row: its configuration (``grid.config_key``) and its inputs' identities."""
    text = json.dumps({"config": config, "inputs": inputs}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]
