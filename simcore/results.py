"""Machine-readable outputs, written atomically (temporary name, then rename).

A path that cannot be written (a read-only directory, a full disk, a file where a directory should
be) is a ConfigError naming the path and the reason, never a traceback. An existing special file
(``/dev/stdout``, a named pipe) is written in place: it cannot be replaced by a rename, nor should be.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from simcore.errors import ConfigError

_UMASK = os.umask(0)
os.umask(_UMASK)


def finite(obj):
    """``obj`` (nested dicts, lists, tuples) with every non-finite float replaced by None: JSON has no
    NaN or Infinity, and strict parsers reject Python's bare ``NaN``."""
    if isinstance(obj, float):
        return obj if obj - obj == 0 else None  # inf - inf and nan - nan are nan
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def strict_json(obj, **kwargs) -> str:
    """``json.dumps`` of :func:`finite` ``(obj)`` with ``allow_nan=False``: always valid JSON."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def _publishable(tmp: str) -> None:
    """mkstemp makes files private (0600); a result is an ordinary file (0666 less the umask)."""
    os.chmod(tmp, 0o666 & ~_UMASK)


def _blocker(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a directory (a file in the way)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def output_error(path: str | os.PathLike, e: OSError | None = None, what: str = "") -> ConfigError:
    """A one-line ConfigError for an output that cannot be written: the path and the OS's reason."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if path.is_dir():
        return ConfigError(f"cannot write {name}: it is a directory; give a file path")
    blocker = _blocker(path)
    if blocker is not None or (e is not None and e.errno in (errno.ENOTDIR, errno.EEXIST) and not path.exists()):
        return ConfigError(f"cannot write {name}: {blocker or path.parent} is a file, not a directory")
    if e is None:
        reason = "cannot be written"
    else:
        reason = os.strerror(e.errno) if e.errno else (e.strerror or str(e).splitlines()[0])
    return ConfigError(f"cannot write {name}: {reason}")


def check_output(path: str | os.PathLike, what: str = "--out") -> None:
    """Raise ConfigError now, before any work, when ``path`` clearly cannot be written as a file: it is a
    directory, a file stands where a directory should be, or the directory it would go into is read-only."""
    path = Path(path)
    if path.is_dir() or _blocker(path) is not None:
        raise output_error(path, what=what)
    where = next((p for p in path.parents if p.exists()), Path("."))
    target = path if path.exists() else where
    if not os.access(target, os.W_OK):
        raise ConfigError(f"cannot write {what} {path}: permission denied on {target}")


def _write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """``write(name)`` into a temporary file beside ``path``, then rename it to ``path``; an existing
    special file is written in place. OSError becomes a ConfigError naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        st = path.stat() if path.exists() else None
        if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            write(str(path))
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        _publishable(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise output_error(path, e) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""

    def write(name: str) -> None:
        with open(name, "wb") as f:
            f.write(data)

    _write_atomically(path, write)


def atomic_write_table(table: pa.Table, path: str | os.PathLike) -> None:
    """Write ``table`` as Parquet to ``path`` through a temporary file in the same directory and a rename."""

    def write(name: str) -> None:
        with open(name, "wb") as f:  # a file object: given a path that fails, Arrow deletes the path
            pq.write_table(table, f)  # Arrow's I/O errors are OSErrors

    _write_atomically(path, write)


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
    table = table.replace_schema_metadata({"simcore": strict_json(meta)})
    atomic_write_table(table, path)
