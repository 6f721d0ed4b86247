"""Calibrated artefacts on disk: where a model's DIP split calibration is saved and looked up.

A low layer (methods read it; ``simcore calibrate`` in simcore.eval writes it), so that no method imports
the evaluator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from simcore.errors import ConfigError

DEFAULT_DIR = Path("calibration")
"""Where calibrations are saved and looked up (relative to the working directory; SIMCORE_CALIBRATION
overrides)."""


def calibration_dir() -> Path:
    return Path(os.environ.get("SIMCORE_CALIBRATION", DEFAULT_DIR))


def calibration_file(model: str) -> Path:
    return calibration_dir() / f"{model.replace('/', '--')}.json"


def lookup_split(model: str, density: float) -> tuple[float, float] | None:
    """(rho_in, rho_d) calibrated for ``model`` at ``density`` (within 1e-6), or None."""
    path = calibration_file(model)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        for entry in data["splits"]:
            if abs(entry["density"] - density) < 1e-6:
                return float(entry["rho_in"]), float(entry["rho_d"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a simcore calibration file; re-create it with `simcore calibrate`") from None
    return None
