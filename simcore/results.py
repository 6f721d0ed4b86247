"""Machine-readable outputs, written atomically (temporary name, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_UMASK = os.umask(0)
os.umask(_UMASK)


def _publishable(tmp: str) -> None:
    """mkstemp makes files private (0600); a result is an ordinary file (0666 less the umask)."""
    os.chmod(tmp, 0o666 & ~_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _publishable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_table(table: pa.Table, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        _publishable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_replay_parquet(result, path: str | os.PathLike) -> None:
    """One row per (layer, kind), plus one row per kind and a total row (layer = -1, kind "total");
    the resolved configuration and the memory plan are in the schema metadata (key ``simcore``)."""
    rows = list(result.layers)
    for name, k in result.kinds.items():
        rows.append(
            {
                "layer": -1,
                "kind": name,
                "capacity": k["capacity_per_layer"],
                "accesses": k["accesses"],
                "hits": k["hits"],
                "misses": k["misses"],
                "hit_rate": k["hit_rate"],
                "hit_rate_steady": k["hit_rate_steady"],
            }
        )
    t = result.totals
    rows.append(
        {
            "layer": -1,
            "kind": "total",
            "accesses": t["accesses"],
            "hits": t["hits"],
            "misses": t["misses"],
            "hit_rate": t["hit_rate"],
            "hit_rate_steady": t["hit_rate_steady"],
            "tokens_per_s": t["tokens_per_s"],
            "tokens_per_s_steady": t["tokens_per_s_steady"],
            "flash_bytes_per_token": t["flash_bytes_per_token"],
            "dram_bytes_per_token": t["dram_bytes_per_token"],
            "mlp_density": t["mlp_density"],
            "mass_kept": t["mass_kept"],
        }
    )
    table = pa.Table.from_pylist(rows)
    meta = {"config": result.config, "memory": result.memory, "totals": result.totals}
    table = table.replace_schema_metadata({"simcore": json.dumps(meta)})
    atomic_write_table(table, path)
