"""A sweep's results on disk: one Parquet table, an append log per running sweep, a lock, the grids.

    <out>                         the table: every row ever computed into it, at most one per configuration
    <out>.parts/<ns>-<pid>.jsonl  a running sweep's log: one JSON line per finished task
    <out>.grids/<hash>.yaml       each grid run against the table, as a grid file (`simcore sweep --grid`)
    <out>.lock                    locked (flock, exclusive) by whoever merges logs into the table

Writing costs O(rows): a finished task appends one line to its sweep's log (handed to the OS at once,
so killing the process loses nothing written); the table is rewritten atomically twice per sweep, under
the lock: when the sweep starts (merging the logs that killed sweeps left behind) and when it ends
(merging its own log). Killing a sweep therefore loses only the tasks in flight.

Several sweeps may share a table, one after another or at once. A merge keeps the rows of every
configuration and, of two rows of one configuration (columns.py: ``config``), the one computed later.
Each sweep holds a lock on its own log while it runs, so a merge never takes or deletes a live sweep's
log; a log whose lock is free belongs to a sweep that ended or died, and the next merge takes it. Where
``fcntl`` is missing (Windows) nothing is locked: run one sweep per table at a time there.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from simcore.errors import ConfigError, SimcoreError
from simcore.results import atomic_write_bytes, atomic_write_table
from simcore.sweep.columns import COLUMNS

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

_TYPES = {
    "index": pa.int64(),
    "key": pa.string(),
    "config": pa.string(),
    "trace": pa.string(),
    "model": pa.string(),
    "device": pa.string(),
    "dram": pa.string(),
    "dram_bytes": pa.int64(),
    "method": pa.string(),
    "policy": pa.string(),
    "flash_model": pa.string(),
    "layout": pa.string(),
    "adapter": pa.string(),
    "context": pa.int64(),
    "warmup": pa.int64(),
    "tokens": pa.int64(),
    "accesses": pa.int64(),
    "hits": pa.int64(),
    "misses": pa.int64(),
    "status": pa.string(),
    "error": pa.string(),
    "inputs": pa.string(),
    "computed_at": pa.timestamp("us", tz="UTC"),
}
SCHEMA = pa.schema([pa.field(c, _TYPES.get(c, pa.float64())) for c in COLUMNS])
"""The table's schema (every column not named in _TYPES is float64)."""


class SweepError(SimcoreError):
    """A sweep's results cannot be saved, a worker died, or none of a grid's configurations succeeded."""


def now_us() -> int:
    """The ``computed_at`` of a row: microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


def rows_to_table(rows: list[dict]) -> pa.Table:
    """A table with the sweep schema from row dicts (``computed_at`` in microseconds)."""
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)


def _plain(v):
    if hasattr(v, "item"):  # a NumPy scalar
        return v.item()
    raise TypeError(f"cannot store {type(v).__name__} in a sweep log")


def _rank(row: dict) -> tuple:
    """Of two rows of one configuration the later computed wins; ties go to ok rows, then to the key."""
    return (row.get("computed_at") or -1, row.get("status") == "ok", row.get("key") or "")


def _keep(rows: dict[str, dict], row: dict) -> None:
    c = row.get("config")
    if not isinstance(c, str):
        return
    old = rows.get(c)
    if old is None or _rank(row) > _rank(old):
        rows[c] = row  # a replaced configuration keeps its place


def _read_log(path: Path) -> list[dict]:
    """The rows in a sweep log. A line that does not parse is the last line of a sweep killed while
    writing it (its task was in flight) and is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rows = json.loads(line)["rows"]
        except (ValueError, KeyError, TypeError):
            continue
        out.extend(r for r in rows if isinstance(r, dict))
    return out


class ResultStore:
    """The files of one results table (see the module docstring). ``start`` before the first task,
    ``append`` after each, ``finish`` at the end (also after an error: it saves what finished)."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.grids = self.out.with_name(self.out.name + ".grids")
        self.lock_path = self.out.with_name(self.out.name + ".lock")
        self._log: Path | None = None
        self._log_fd: int | None = None
        self.write_s = 0.0
        """Seconds spent writing results (log lines, merges, grid files), for benchmarks/sweep.py."""

    def grid_file(self, digest: str) -> Path:
        return self.grids / f"{digest}.yaml"

    # ------------------------------------------------------------------ the sweep's life
    def start(self, order: list[str], grid_name: str, grid_yaml: bytes) -> dict[str, dict]:
        """Merge the logs of dead sweeps into the table, save the grid, open this sweep's log.
        Returns the table's rows by configuration."""
        if self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a directory; give a file name such as {self.out}/sweep.parquet")
        t0 = time.perf_counter()
        with self._locked():
            rows = self._merge(order)
            atomic_write_bytes(self.grid_file(grid_name), grid_yaml)
            self._open_log()
        self.write_s += time.perf_counter() - t0
        return rows

    def append(self, rows: list[dict]) -> None:
        """Add one finished task's rows to this sweep's log (one line, handed to the OS at once)."""
        t0 = time.perf_counter()
        data = (json.dumps({"rows": rows}, default=_plain) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._log_fd, view) :]
        except OSError as e:
            raise SweepError(
                f"cannot append to the sweep log {self._log}: {e.strerror}; the tasks finished so far are in "
                "it, re-run the sweep to resume"
            ) from None
        self.write_s += time.perf_counter() - t0

    def finish(self, order: list[str]) -> dict[str, dict]:
        """Merge this sweep's log (and those of sweeps that died meanwhile) into the table and remove it.
        Returns the table's rows by configuration."""
        if self._log_fd is None:
            raise RuntimeError("ResultStore.finish without a start, or twice")
        t0 = time.perf_counter()
        with self._locked():
            rows = self._merge(order, own=True)
            with contextlib.suppress(OSError):
                self.parts.rmdir()  # only when empty
        self.write_s += time.perf_counter() - t0
        return rows

    # ------------------------------------------------------------------ pieces
    @contextlib.contextmanager
    def _locked(self):
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise SweepError(f"cannot write the results table {self.out}: {e.strerror} ({e.filename})") from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _open_log(self) -> None:
        try:
            self.parts.mkdir(exist_ok=True)
            path = self.parts / f"{time.time_ns()}-{os.getpid()}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)
        except OSError as e:
            raise SweepError(f"cannot create a sweep log in {self.parts}: {e.strerror}") from None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        self._log, self._log_fd = path, fd

    def _claim(self, path: Path) -> int | None:
        """An open descriptor locking ``path`` when its sweep has ended or died; None while it runs."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def _read_table(self) -> dict[str, dict]:
        if not self.out.exists():
            return {}
        try:
            table = pq.read_table(self.out)
        except (pa.ArrowException, OSError) as e:
            raise ConfigError(
                f"{self.out} exists but is not a readable results table ({e}); move it away or pick --out"
            ) from None
        if "key" not in table.column_names:
            raise ConfigError(f"{self.out} is not a simcore sweep table (no key column); move it away or pick --out")
        if "computed_at" in table.column_names:
            i = table.column_names.index("computed_at")
            table = table.set_column(i, "computed_at", table.column(i).cast(pa.int64()))
        rows: dict[str, dict] = {}
        for r in table.to_pylist():
            if r.get("config") is None:  # a table from before the config column: its key named the settings
                r["config"] = r["key"]
            _keep(rows, r)
        return rows

    def _merge(self, order: list[str], own: bool = False) -> dict[str, dict]:
        """Under the lock: the table plus every log not held by a live sweep (and this sweep's own when
        ``own``), written back when anything changed; merged logs are removed after the write."""
        rows = self._read_table()
        changed = not self.out.exists()
        merged: list[tuple[Path, int | None]] = []
        for path in sorted(self.parts.glob("*.jsonl")) if self.parts.is_dir() else []:
            if path == self._log:
                if not own:
                    continue
                fd = None
            else:
                fd = self._claim(path)
                if fd is None:
                    continue
            for r in _read_log(path):
                _keep(rows, r)
            merged.append((path, fd))
            changed = True
        for stale in [*self.out.parent.glob(f".{self.out.name}.*.tmp"), *self.grids.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)  # a writer killed mid-write (merges and grid files hold the lock)
        if changed:
            wanted = dict.fromkeys(order)
            first = [rows[c] for c in wanted if c in rows]
            rest = [r for c, r in rows.items() if c not in wanted]
            ordered = [{**r, "index": i} for i, r in enumerate(first + rest)]
            try:
                atomic_write_table(rows_to_table(ordered), self.out)
            except OSError as e:
                raise SweepError(f"cannot write the results table {self.out}: {e.strerror}") from None
        for path, fd in merged:
            path.unlink(missing_ok=True)
            if fd is not None:
                os.close(fd)
        if own:
            os.close(self._log_fd)
            self._log_fd = None
        return rows
