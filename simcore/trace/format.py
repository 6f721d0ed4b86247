"""Trace format v1: one directory, a metadata file and one Parquet file per decoder layer.

::

    TRACE_DIR/
      trace.json            TraceMeta (format_version, model shapes, static params, source, ...)
      layers/000.parquet    rows = tokens in order; columns:
                              token_id  int32
                              position  int32   (position inside its window of seq_len tokens)
                              x         float16[d]      |MLP input after norm|
                              h         float16[d_int]  |GLU activation|
                              gate      float16[d_int]  |act(W_g x)|
                              up        float16[d_int]  |W_u x|
                            (float16[w]: w float16 values per row, see value_field)
      layers/001.parquet ...

The writer writes into a hidden temporary directory beside the target (with a ``.writer`` file
naming its process) and renames it into place only when every layer is complete, so a directory
with a ``trace.json`` is always whole; leftovers of writers that died are removed by the next
writer to the same target. ``trace.json`` records a SHA-256 of every layer file, hashed while it
is written. The reader checks that metadata and files agree on open, streams one layer at a time
in batches of rows (memory bounded by one batch), and refuses magnitudes that are NaN, infinite or
negative in the columns it reads. This module is the single implementation of the format: the
tracer and the synthetic generator write through :class:`TraceWriter`; replay reads through
:class:`TraceReader`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simcore import __version__
from simcore.config import NJIT
from simcore.errors import ConfigError, TraceError
from simcore.models import ModelShape

FORMAT_VERSION = 1
META_FILE = "trace.json"
LAYER_DIR = "layers"
WRITER_FILE = ".writer"
"""In a writer's temporary directory: JSON {pid, host, start} of the process writing it."""
CHECKSUM = "sha256"
VALUE_COLUMNS = ("x", "h", "gate", "up")
"""Magnitude columns a trace may hold; ``x`` and ``h`` are required."""
REQUIRED_COLUMNS = ("x", "h")


def _columns_problem(columns: Iterable[str]) -> str | None:
    cols = list(columns)
    unknown = [c for c in cols if c not in VALUE_COLUMNS]
    if unknown:
        return f"unknown column {unknown[0]!r}; choose among {', '.join(VALUE_COLUMNS)}"
    dup = next((c for c in cols if cols.count(c) > 1), None)
    if dup is not None:
        return f"column {dup!r} is listed twice"
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        return f"columns {' and '.join(REQUIRED_COLUMNS)} are required (missing: {', '.join(missing)})"
    return None


def parse_columns(spec: str | Iterable[str], option: str = "--columns") -> tuple[str, ...]:
    """Magnitude columns from ``"x,h,gate"`` or a sequence, in the canonical order of VALUE_COLUMNS.

    Raises ConfigError for an unknown or repeated column, or when ``x`` or ``h`` is missing."""
    cols = [c.strip() for c in spec.split(",")] if isinstance(spec, str) else [str(c).strip() for c in spec]
    cols = [c for c in cols if c]
    problem = _columns_problem(cols)
    if problem is not None:
        raise ConfigError(f"{option} {','.join(cols) or repr(spec)}: {problem}")
    return tuple(c for c in VALUE_COLUMNS if c in cols)


def method_columns(method: str, shape: ModelShape) -> set[str]:
    """Trace columns replaying ``method`` reads: the columns its unit kinds are scored by, and ``h``
    for the kept-mass proxy."""
    from simcore import methods  # the methods describe what they score; the format only stores it

    sel = methods.resolve(method, shape, 1.0)
    return {k.score for k in sel.kinds if k.score} | ({"h"} if any(k.mass for k in sel.kinds) else set())


def methods_served(columns: Iterable[str], shape: ModelShape) -> list[str]:
    """The methods a trace holding ``columns`` can replay, in ``simcore.methods.available()`` order."""
    from simcore import methods

    have = set(columns)
    return [m for m in methods.available() if method_columns(m, shape) <= have]


# --------------------------------------------------------------------------- finite magnitudes

_BAD_FROM = 0x7C00
"""float16 bit patterns at or above this are +inf (0x7C00), NaN (0x7C01-0x7FFF) or negative (sign
bit set): never a valid magnitude. Below it lie exactly the finite values >= +0."""


@njit(**NJIT)
def _first_bad(bits):
    """Index (row * width + column) of the first value of ``bits`` (uint16[T, W], float16 bit
    patterns, C-contiguous) that is not a finite magnitude >= 0, or -1 when all are.

    Each row is reduced by an unsigned max first, a loop without branches the compiler vectorises;
    only a row that holds a bad value is scanned again for its position."""
    T, W = bits.shape
    for t in range(T):
        m = np.uint16(0)
        for j in range(W):
            m = max(m, bits[t, j])
        if m >= _BAD_FROM:
            for j in range(W):
                if bits[t, j] >= _BAD_FROM:
                    return t * W + j
    return -1


def first_bad_value(values: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first value of a float16 matrix (T, W) that is NaN, infinite or
    negative (sign bit set, -0 included), or None when every value is a finite magnitude."""
    bits = np.ascontiguousarray(values).view(np.uint16)
    if bits.ndim != 2 or bits.size == 0:
        return None
    i = int(_first_bad(bits))
    return None if i < 0 else divmod(i, bits.shape[1])


def _describe_bad(v: float) -> str:
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "an infinite value" if v > 0 else "-inf"
    return f"the negative value {v:g}"


class TraceMeta(BaseModel):
    """Metadata of a trace (``trace.json``)."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    model: ModelShape
    tokenizer: str | None = Field(default=None, description="tokenizer name or path")
    source: str = Field(description="text source: a data set, a file, or 'synthetic'")
    n_tokens: int = Field(default=0, ge=0, description="rows in every layer file")
    seq_len: int = Field(gt=0, description="tokens per evaluation window")
    columns: list[str] = Field(default_factory=lambda: list(VALUE_COLUMNS))
    dtype: str = Field(default="float16", description="dtype of the magnitude columns")
    simcore_version: str = __version__
    command: str = ""
    created: str = ""
    extra: dict = Field(default_factory=dict, description="free-form producer details (seed, model dtype, ...)")
    checksums: dict[str, str] = Field(
        default_factory=dict,
        description="layer file -> 'sha256:<hex>' of its bytes, recorded when the trace was written "
        "(empty for traces written before simcore recorded them); `simcore info --verify` checks them",
    )

    @field_validator("columns")
    @classmethod
    def _valid_columns(cls, v: list[str]) -> list[str]:
        problem = _columns_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("dtype")
    @classmethod
    def _float16_only(cls, v: str) -> str:
        if v != "float16":
            raise ValueError(f"dtype {v!r} is not supported; traces hold float16 magnitudes")
        return v

    def widths(self) -> dict[str, int]:
        """Length of each magnitude column's lists."""
        w = {"x": self.model.d, "h": self.model.d_int, "gate": self.model.d_int, "up": self.model.d_int}
        return {c: w[c] for c in self.columns}


def layer_file(layer: int) -> str:
    return f"{LAYER_DIR}/{layer:03d}.parquet"


def value_field(name: str, width: int) -> pa.Field:
    """A magnitude column: ``width`` little-endian IEEE float16 values per row, stored as one Parquet
    FIXED_LEN_BYTE_ARRAY of 2 * width bytes (Arrow ``fixed_size_binary``), with field metadata
    ``simcore.dtype = float16`` and ``simcore.width``. Logically a float16 fixed-size list; stored
    without Parquet's per-value repetition levels, which makes a layer about 7x faster to read and
    5x faster to write than ``fixed_size_list<float16>`` (docs/trace-format.md). The reader also
    accepts ``fixed_size_list<float16>[width]`` columns."""
    meta = {b"simcore.dtype": b"float16", b"simcore.width": str(width).encode()}
    return pa.field(name, pa.binary(2 * width), nullable=False, metadata=meta)


def _fixed_binary(values: np.ndarray) -> pa.FixedSizeBinaryArray:
    values = np.ascontiguousarray(values, dtype="<f2")
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(2 * values.shape[1]), values.shape[0], [None, pa.py_buffer(values.view(np.uint8))]
    )


def _float16_matrix(col: pa.Array, width: int) -> np.ndarray:
    """(rows, width) float16 view of a magnitude column (zero-copy for the binary layout)."""
    if pa.types.is_fixed_size_binary(col.type):
        return np.frombuffer(
            col.buffers()[1], dtype="<f2", count=len(col) * width, offset=col.offset * 2 * width
        ).reshape(len(col), width)
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), width)


def _is_float16_column(typ: pa.DataType | None, width: int) -> bool:
    if typ is None:
        return False
    if pa.types.is_fixed_size_binary(typ):
        return typ.byte_width == 2 * width
    return pa.types.is_fixed_size_list(typ) and typ.list_size == width and typ.value_type == pa.float16()


class _HashingFile:
    """A binary file that hashes what is written to it, in order (a Parquet writer only appends), so
    a layer file's checksum costs no second read."""

    def __init__(self, path: Path):
        self._f = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._hash = hashlib.new(CHECKSUM)
        self._pos = 0

    def write(self, data) -> int:
        self._hash.update(data)
        self._pos += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def digest(self) -> str:
        return f"{CHECKSUM}:{self._hash.hexdigest()}"


def file_checksum(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.new(CHECKSUM)
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return f"{CHECKSUM}:{h.hexdigest()}"


# --------------------------------------------------------------------------- writers' leftovers


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first, start time at index 19); None where unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def _writer_record() -> dict:
    stat = _proc_stat(os.getpid())
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": stat[19] if stat else None}


def _writer_alive(record: dict) -> bool:
    """Whether the process that wrote ``record`` (a .writer file, same host) still runs: its pid
    exists, is not a zombie, and (where /proc tells) started when the record says."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True  # cannot tell: keep
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a process of another user holds that pid
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return True
    if stat[0] in ("Z", "X"):
        return False
    start = record.get("start")
    return start is None or stat[19] == start  # another start time: the pid was reused


def remove_dead_leftovers(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary directories ``.NAME.tmp-*`` beside ``out_dir`` whose writer was killed
    (its ``.writer`` file names a process of this host that no longer runs). Directories of live
    writers, of other hosts, or without a readable ``.writer`` file are left alone. Returns the
    directories removed."""
    out_dir = Path(out_dir)
    host = socket.gethostname()
    removed = []
    for tmp in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.tmp-*"):
        try:
            record = json.loads((tmp / WRITER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("host") != host or _writer_alive(record):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            removed.append(tmp)
    return removed


def check_out_dir(out_dir: str | os.PathLike, option: str = "--out") -> Path:
    """Check, before any work, that a trace can be written at ``out_dir``: it is not an existing
    file, and its nearest existing ancestor is a writable directory. Raises ConfigError."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out} is a file; a trace is a directory, give another path")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {out}: {parent} is a file, not a directory; give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {out}: directory {parent} is not writable; give another path")
    return out


class TraceWriter:
    """Write a trace atomically.

    Use as a context manager; call :meth:`append` any number of times per layer, in token
    order. On a clean exit the layer files are closed, ``trace.json`` is written with the
    token count and each layer file's checksum, and the temporary directory is renamed to
    ``out_dir`` (replacing an older trace there). On an exception (Ctrl-C included; the CLI turns
    SIGTERM into one) the temporary directory is removed and ``out_dir`` is left as it was. A
    writer killed outright (SIGKILL) leaves its temporary directory; the next writer to the same
    ``out_dir`` removes it (:func:`remove_dead_leftovers`).

    Args:
        out_dir: final trace directory.
        meta: metadata; ``n_tokens``, ``checksums`` and ``created`` are filled in by the writer.
        compression: Parquet compression codec ("none" is fastest to replay).
    """

    def __init__(self, out_dir: str | os.PathLike, meta: TraceMeta, compression: str = "none"):
        self.out_dir = Path(out_dir)
        self.meta = meta.model_copy(deep=True)
        self.compression = compression
        self._tmp: Path | None = None
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._files: dict[int, _HashingFile] = {}
        self._rows: dict[int, int] = {}
        problem = _columns_problem(self.meta.columns)
        if problem is not None:
            raise TraceError(f"trace columns {self.meta.columns}: {problem}")
        widths = self.meta.widths()
        fields = [pa.field("token_id", pa.int32(), nullable=False), pa.field("position", pa.int32(), nullable=False)]
        fields += [value_field(c, widths[c]) for c in self.meta.columns]
        self.schema = pa.schema(fields)

    def _os_error(self, e: OSError) -> TraceError:
        return TraceError(f"cannot write trace {self.out_dir}: {e.strerror or e}; free space or choose another --out")

    def __enter__(self) -> TraceWriter:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise TraceError(f"cannot write trace {self.out_dir}: a file is in the way (a trace is a directory)")
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            remove_dead_leftovers(self.out_dir)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
            (self._tmp / WRITER_FILE).write_text(json.dumps(_writer_record()))
            self._tmp.chmod(0o755)  # mkdtemp makes it private; a trace is an ordinary directory
            (self._tmp / LAYER_DIR).mkdir()
        except OSError as e:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
            raise self._os_error(e) from None
        return self

    def append(self, layer: int, values: dict[str, np.ndarray], token_ids: np.ndarray, positions: np.ndarray) -> None:
        """Append rows (tokens) to one layer.

        Args:
            layer: decoder layer index, 0 <= layer < n_layers.
            values: column name -> array of shape (T, width) (cast to float16); every column of
                ``meta.columns`` must be present.
            token_ids: int array of shape (T,).
            positions: int array of shape (T,), position of each token in its window.

        Raises TraceError when a value is NaN, infinite or negative after rounding to float16
        (naming the layer, column and token), or when the disk refuses the write.
        """
        if self._tmp is None:
            raise RuntimeError("TraceWriter must be used as a context manager")
        if not 0 <= layer < self.meta.model.n_layers:
            raise TraceError(f"layer {layer} out of range 0..{self.meta.model.n_layers - 1}")
        n = len(token_ids)
        cols = [pa.array(np.asarray(token_ids, dtype=np.int32)), pa.array(np.asarray(positions, dtype=np.int32))]
        for c, w in self.meta.widths().items():
            v = values[c]
            if v.shape != (n, w):
                raise TraceError(f"column {c} of layer {layer} has shape {v.shape}, expected ({n}, {w})")
            with np.errstate(over="ignore"):  # values beyond the float16 range become inf: refused below
                v16 = np.ascontiguousarray(v, dtype="<f2")
            bad = first_bad_value(v16)
            if bad is not None:
                t, j = bad
                token = self._rows.get(layer, 0) + t
                raw = float(np.asarray(v[t, j]))
                what = _describe_bad(raw)
                if np.isfinite(raw) and not np.signbit(raw):
                    what = f"{raw:g}, infinite in float16 (largest 65504)"
                raise TraceError(
                    f"layer {layer}, column {c!r}, token {token} (unit {j}) is {what}; a trace holds finite "
                    "magnitudes >= 0 (NaN activations: try --dtype float32)"
                )
            cols.append(_fixed_binary(v16))
        table = pa.Table.from_arrays(cols, schema=self.schema)
        try:
            w = self._writers.get(layer)
            if w is None:
                f = _HashingFile(self._tmp / layer_file(layer))
                self._files[layer] = f
                w = pq.ParquetWriter(
                    f, self.schema, compression=self.compression, use_dictionary=False, write_statistics=False
                )
                self._writers[layer] = w
                self._rows[layer] = 0
            w.write_table(table)
        except OSError as e:
            raise self._os_error(e) from None
        self._rows[layer] += n

    def _close_files(self) -> None:
        for layer, w in list(self._writers.items()):
            try:
                w.close()
            finally:
                self._files[layer].close()
        self._writers.clear()

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        try:
            if exc_type is not None:
                try:
                    self._close_files()
                except OSError:
                    pass  # the original error matters, and the directory goes anyway
                return
            try:
                self._close_files()
            except OSError as e:
                raise self._os_error(e) from None
            counts = set(self._rows.values())
            if len(self._rows) != self.meta.model.n_layers or len(counts) != 1:
                raise TraceError(
                    f"incomplete trace: {len(self._rows)} of {self.meta.model.n_layers} layers written, "
                    f"row counts {sorted(counts)}"
                )
            self.meta.n_tokens = counts.pop()
            self.meta.checksums = {layer_file(i): self._files[i].digest() for i in sorted(self._files)}
            self.meta.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            try:
                (self._tmp / META_FILE).write_text(self.meta.model_dump_json(indent=2))
                _replace_dir(self._tmp, self.out_dir)
            except OSError as e:
                raise self._os_error(e) from None
            self._tmp = None
            with contextlib.suppress(OSError):
                (self.out_dir / WRITER_FILE).unlink(missing_ok=True)
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)


OLD_DIR = ".old"
"""Where an existing trace goes while the new one replaces it: inside the new one, so a writer killed
between the two renames leaves it in its own temporary directory (removed as a dead writer's)."""


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is moved into ``src/.old`` first and removed after."""
    old = None
    if dst.exists():
        old = src / OLD_DIR
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(dst / OLD_DIR, ignore_errors=True)


MAP_MAX_BYTES = 128 * 2**20
"""Layer files up to this size are memory-mapped when read; larger ones are read (see TraceReader._open)."""


class TraceReader:
    """Read a trace directory, validating it on open.

    Raises TraceError when the directory, its metadata or any layer file is missing, of another
    format version, truncated, or inconsistent with the metadata: layer files beyond
    ``n_layers``, other row counts, columns missing, extra or of other widths, checksums for
    other files. Magnitudes are checked as they are read (:meth:`iter_layer`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not self.path.is_dir():
            if self.path.exists():
                raise TraceError(
                    f"{self.path} is a file, not a trace directory (a trace is a directory with {META_FILE})"
                )
            raise TraceError(
                f"no trace at {self.path}: the directory does not exist "
                "(create one with `simcore trace` or `simcore synth`)"
            )
        if not meta_path.is_file():
            raise TraceError(
                f"{self.path} is not a complete trace: {META_FILE} is missing "
                "(an interrupted run? re-create it with `simcore trace` or `simcore synth`)"
            )
        try:
            data = json.loads(meta_path.read_bytes())
        except (OSError, ValueError) as e:
            raise TraceError(f"{meta_path} is not valid JSON ({e}); re-create the trace") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise TraceError(
                f"{meta_path}: trace format version {version!r} is not supported "
                f"(this simcore reads version {FORMAT_VERSION}); re-create the trace"
            )
        try:
            self.meta = TraceMeta.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise TraceError(f"{meta_path}: field {field!r}: {err['msg']}; re-create the trace") from None
        self._check_layers()

    @property
    def model(self) -> ModelShape:
        return self.meta.model

    @property
    def n_tokens(self) -> int:
        return self.meta.n_tokens

    def text_use(self, first: int, end: int):
        """Trace tokens [first, end) as a ``simcore.calibration.TextUse``: the trace's text (its source and
        the sha256 its tracer recorded in ``extra["text_sha256"]``, None for older or synthetic traces) and
        those tokens' positions in the text (after the trace's ``extra["offset"]``)."""
        from simcore.calibration import TextUse

        extra = self.meta.extra or {}
        offset = int(extra.get("offset") or 0)
        return TextUse(self.meta.source, extra.get("text_sha256"), offset + first, offset + end)

    def methods(self) -> list[str]:
        """The methods this trace can replay (those whose columns it holds)."""
        return methods_served(self.meta.columns, self.meta.model)

    def _open(self, layer: int) -> pq.ParquetFile:
        p = self.path / layer_file(layer)
        try:
            # A mapped file is decoded without a copy (faster), but every page read stays resident until
            # the file is closed, so a long trace's layer (600 MB at 16 k tokens of mistral7b) would count
            # whole against memory; above MAP_MAX_BYTES the file is read a batch at a time instead, which
            # bounds memory by one batch whatever the trace length. Never pre-buffered (that loads whole
            # row groups).
            mapped = p.stat().st_size <= MAP_MAX_BYTES
            return pq.ParquetFile(p, memory_map=mapped, pre_buffer=False)
        except FileNotFoundError:
            raise TraceError(
                f"{self.path} is incomplete: {layer_file(layer)} is missing; re-create the trace"
            ) from None
        except (pa.ArrowException, OSError) as e:
            raise TraceError(f"{p} is truncated or corrupt ({e}); re-create the trace") from None

    def _check_files(self) -> None:
        """The files under ``layers/`` are exactly those of ``n_layers`` (hidden files aside), and
        the checksums, when recorded, name exactly those."""
        n = self.meta.model.n_layers
        expected = [layer_file(i) for i in range(n)]
        layer_dir = self.path / LAYER_DIR
        try:
            present = {f"{LAYER_DIR}/{p.name}" for p in layer_dir.iterdir() if not p.name.startswith(".")}
        except FileNotFoundError:
            raise TraceError(f"{self.path} is incomplete: {LAYER_DIR}/ is missing; re-create the trace") from None
        except OSError as e:
            raise TraceError(f"cannot read {layer_dir}: {e.strerror or e}") from None
        extra = sorted(present - set(expected))
        if extra:
            more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
            raise TraceError(
                f"{self.path}: {META_FILE} says n_layers {n} but {LAYER_DIR}/ also holds "
                f"{', '.join(extra[:3])}{more}; the metadata and the files disagree, re-create the trace"
            )
        missing = [f for f in expected if f not in present]
        if missing:
            raise TraceError(f"{self.path} is incomplete: {missing[0]} is missing; re-create the trace")
        if self.meta.checksums and set(self.meta.checksums) != set(expected):
            odd = sorted(set(self.meta.checksums) ^ set(expected))
            raise TraceError(
                f"{self.path / META_FILE}: checksums are recorded for other files than the {n} layer "
                f"files ({', '.join(odd[:3])}); the metadata and the files disagree, re-create the trace"
            )

    def _check_layers(self) -> None:
        self._check_files()
        widths = self.meta.widths()
        names = {"token_id", "position", *widths}
        for layer in range(self.meta.model.n_layers):
            f = self._open(layer)
            where = self.path / layer_file(layer)
            if f.metadata.num_rows != self.meta.n_tokens:
                raise TraceError(
                    f"{where} has {f.metadata.num_rows} rows but {META_FILE} says {self.meta.n_tokens}; "
                    "re-create the trace"
                )
            schema = f.schema_arrow
            for c, w in widths.items():
                if not _is_float16_column(schema.field(c).type if c in schema.names else None, w):
                    raise TraceError(
                        f"{where}: column {c!r} is missing or not float16[{w}]; "
                        "the file does not belong to this trace's model"
                    )
            for c in ("token_id", "position"):
                if c not in schema.names or schema.field(c).type != pa.int32():
                    raise TraceError(f"{where}: column {c!r} is missing or not int32; re-create the trace")
            other = [c for c in schema.names if c not in names]
            if other or len(schema.names) != len(names):
                raise TraceError(
                    f"{where} holds columns {schema.names} but {META_FILE} lists "
                    f"{['token_id', 'position', *widths]}; the metadata and the files disagree, re-create the trace"
                )

    def has(self, column: str) -> bool:
        return column in self.meta.columns

    def check_columns(self, columns: Iterable[str], purpose: str = "") -> None:
        """Raise TraceError naming the first of ``columns`` this trace lacks, ``purpose`` (e.g.
        "method gate") and the methods the trace can serve."""
        for c in columns:
            if c in self.meta.columns or c in ("token_id", "position"):
                continue
            if c not in VALUE_COLUMNS:
                known = ", ".join(("token_id", "position", *VALUE_COLUMNS))
                raise TraceError(f"no trace has a column {c!r}; trace columns are {known}")
            held = ",".join(self.meta.columns)
            if purpose:
                what = f"{purpose} needs column {c!r}, which trace {self.path} does not hold"
            else:
                what = f"trace {self.path} has no column {c!r}"
            raise TraceError(
                f"{what} (it holds {held}, so it can serve methods {', '.join(self.methods())}); use one of "
                f"those or re-create the trace with --columns {held},{c}"
            )

    def _refuse(self, layer: int, column: str, t0: int, values: np.ndarray, bad: tuple[int, int]) -> TraceError:
        t, j = bad
        what = _describe_bad(float(values[t, j]))
        return TraceError(
            f"{self.path / layer_file(layer)}: layer {layer}, column {column!r}, token {t0 + t} (row {t0 + t}, "
            f"unit {j}) holds {what}; a trace holds finite magnitudes >= 0: re-create it from a model run "
            "without NaN/inf activations"
        )

    def iter_layer(
        self, layer: int, columns: tuple[str, ...] = ("x", "h"), batch_tokens: int = 256
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield the rows of one layer in token order, ``batch_tokens`` at a time.

        Yields:
            dict column -> array: magnitude columns as float16 arrays of shape (T_b, width)
            (read-only views of Arrow memory); ``token_id``/``position`` as int32 (T_b,).

        Raises TraceError for a column the trace does not hold (naming the methods it can serve),
        and for a NaN, infinite or negative magnitude in a column read (naming file, layer,
        column and token), before the batch holding it is yielded.
        """
        self.check_columns(columns)
        widths = self.meta.widths()
        f = self._open(layer)
        t0 = 0
        try:
            for batch in f.iter_batches(batch_size=batch_tokens, columns=list(columns), use_threads=False):
                out = {}
                for c in columns:
                    col = batch.column(c)
                    if c in widths:
                        m = _float16_matrix(col, widths[c])
                        if m.size and (i := _first_bad(m.view(np.uint16))) >= 0:
                            raise self._refuse(layer, c, t0, m, divmod(int(i), m.shape[1]))
                        out[c] = m
                    else:
                        out[c] = col.to_numpy()
                t0 += batch.num_rows
                yield out
        except (pa.ArrowException, OSError) as e:
            raise TraceError(
                f"{self.path / layer_file(layer)} is truncated or corrupt ({e}); re-create the trace"
            ) from None

    def read_layer(self, layer: int, columns: tuple[str, ...] = ("x", "h")) -> dict[str, np.ndarray]:
        """The whole of one layer at once (tests and small traces): column -> (T, width) array."""
        parts = list(self.iter_layer(layer, columns, batch_tokens=1 << 16))
        if not parts:
            return {c: np.zeros((0, self.meta.widths().get(c, 0)), np.float16) for c in columns}
        return {c: np.concatenate([p[c] for p in parts]) for c in columns}

    def verify(self) -> list[str]:
        """Recompute every layer file's checksum. Returns one line per file that does not match the
        checksum recorded when the trace was written (empty: all match). Raises TraceError when the
        trace records no checksums (written before simcore recorded them)."""
        if not self.meta.checksums:
            raise NoChecksums(
                f"{self.path} records no checksums (written before simcore recorded them): nothing to "
                "verify against; re-create the trace to get them"
            )
        bad = []
        for name, want in sorted(self.meta.checksums.items()):
            try:
                got = file_checksum(self.path / name)
            except OSError as e:
                bad.append(f"{self.path / name}: cannot read ({e.strerror or e})")
                continue
            if got != want:
                bad.append(
                    f"{self.path / name}: checksum {got[: len(CHECKSUM) + 13]}... does not match "
                    f"{want[: len(CHECKSUM) + 13]}... recorded when it was written: the file has changed"
                )
        return bad


class NoChecksums(TraceError):
    """The trace was written before simcore recorded layer checksums."""
