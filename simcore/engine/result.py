"""What a replay returns: :class:`ReplayResult`, plain data (rendering lives in ``simcore.report_text``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ReplayResult:
    """What a replay measured. ``layers`` has one record per (layer, kind); ``totals`` and ``kinds``
    aggregate them; ``config`` is the resolved configuration that produced the numbers."""

    config: dict
    memory: dict
    totals: dict
    kinds: dict
    layers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "config": self.config,
            "memory": self.memory,
            "totals": self.totals,
            "kinds": self.kinds,
            "layers": self.layers,
        }

    @property
    def warnings(self) -> list[str]:
        """What the user should know about how the request was served (e.g. no steady state)."""
        return list(self.config.get("warnings") or [])

    def to_json(self) -> str:
        """Strict JSON: a non-finite number (no such value in JSON) is written as null."""
        return json.dumps(_finite(self.to_dict()), indent=2, allow_nan=False)

    def to_parquet(self, path: str | os.PathLike) -> None:
        from simcore.results import write_replay_parquet

        write_replay_parquet(self, path)


def _finite(obj):
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
