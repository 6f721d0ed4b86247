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

The writer writes into a hidden temporary directory beside the target and renames it into
place only when every layer is complete, so a directory with a ``trace.json`` is always whole.
The reader streams one layer at a time, in batches of rows, so memory is bounded by one batch.
This module is the single implementation of the format: the tracer and the synthetic
generator write through :class:`TraceWriter`; replay reads through :class:`TraceReader`.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simcore import __version__
from simcore.errors import TraceError
from simcore.models import ModelShape

FORMAT_VERSION = 1
META_FILE = "trace.json"
LAYER_DIR = "layers"
VALUE_COLUMNS = ("x", "h", "gate", "up")
"""Magnitude columns a trace may hold; ``x`` and ``h`` are required."""


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


class TraceWriter:
    """Write a trace atomically.

    Use as a context manager; call :meth:`append` any number of times per layer, in token
    order. On a clean exit the layer files are closed, ``trace.json`` is written with the
    token count, and the temporary directory is renamed to ``out_dir`` (replacing an older
    trace there). On an exception (Ctrl-C included) the temporary directory is removed and
    ``out_dir`` is left as it was.

    Args:
        out_dir: final trace directory.
        meta: metadata; ``n_tokens`` and ``created`` are filled in by the writer.
        compression: Parquet compression codec ("none" is fastest to replay).
    """

    def __init__(self, out_dir: str | os.PathLike, meta: TraceMeta, compression: str = "none"):
        self.out_dir = Path(out_dir)
        self.meta = meta.model_copy(deep=True)
        self.compression = compression
        self._tmp: Path | None = None
        self._writers: dict[int, pq.ParquetWriter] = {}
        self._rows: dict[int, int] = {}
        missing = {"x", "h"} - set(self.meta.columns)
        if missing or set(self.meta.columns) - set(VALUE_COLUMNS):
            raise TraceError(
                f"trace columns must include x and h and be among {VALUE_COLUMNS}; got {self.meta.columns}"
            )
        widths = self.meta.widths()
        fields = [pa.field("token_id", pa.int32(), nullable=False), pa.field("position", pa.int32(), nullable=False)]
        fields += [value_field(c, widths[c]) for c in self.meta.columns]
        self.schema = pa.schema(fields)

    def __enter__(self) -> TraceWriter:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        self._tmp.chmod(0o755)  # mkdtemp makes it private; a trace is an ordinary directory
        (self._tmp / LAYER_DIR).mkdir()
        return self

    def append(self, layer: int, values: dict[str, np.ndarray], token_ids: np.ndarray, positions: np.ndarray) -> None:
        """Append rows (tokens) to one layer.

        Args:
            layer: decoder layer index, 0 <= layer < n_layers.
            values: column name -> array of shape (T, width) (cast to float16); every column of
                ``meta.columns`` must be present.
            token_ids: int array of shape (T,).
            positions: int array of shape (T,), position of each token in its window.
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
            cols.append(_fixed_binary(v))
        table = pa.Table.from_arrays(cols, schema=self.schema)
        w = self._writers.get(layer)
        if w is None:
            w = pq.ParquetWriter(
                self._tmp / layer_file(layer),
                self.schema,
                compression=self.compression,
                use_dictionary=False,
                write_statistics=False,
            )
            self._writers[layer] = w
            self._rows[layer] = 0
        w.write_table(table)
        self._rows[layer] += n

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        try:
            for w in self._writers.values():
                w.close()
            if exc_type is not None:
                return
            counts = set(self._rows.values())
            if len(self._rows) != self.meta.model.n_layers or len(counts) != 1:
                raise TraceError(
                    f"incomplete trace: {len(self._rows)} of {self.meta.model.n_layers} layers written, "
                    f"row counts {sorted(counts)}"
                )
            self.meta.n_tokens = counts.pop()
            self.meta.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            (self._tmp / META_FILE).write_text(self.meta.model_dump_json(indent=2))
            _replace_dir(self._tmp, self.out_dir)
            self._tmp = None
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{os.getpid()}"
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class TraceReader:
    """Read a trace directory, validating it on open.

    Raises TraceError when the directory, its metadata or any layer file is missing, of another
    format version, truncated, or inconsistent with the metadata.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / META_FILE
        if not self.path.is_dir():
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
            raw = meta_path.read_text()
            import json

            data = json.loads(raw)
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

    def _open(self, layer: int) -> pq.ParquetFile:
        p = self.path / layer_file(layer)
        try:
            return pq.ParquetFile(p, memory_map=True)  # one copy fewer when decoding
        except FileNotFoundError:
            raise TraceError(
                f"{self.path} is incomplete: {layer_file(layer)} is missing; re-create the trace"
            ) from None
        except (pa.ArrowException, OSError) as e:
            raise TraceError(f"{p} is truncated or corrupt ({e}); re-create the trace") from None

    def _check_layers(self) -> None:
        widths = self.meta.widths()
        for layer in range(self.meta.model.n_layers):
            f = self._open(layer)
            if f.metadata.num_rows != self.meta.n_tokens:
                raise TraceError(
                    f"{self.path / layer_file(layer)} has {f.metadata.num_rows} rows but "
                    f"{META_FILE} says {self.meta.n_tokens}; re-create the trace"
                )
            schema = f.schema_arrow
            for c, w in widths.items():
                if not _is_float16_column(schema.field(c).type if c in schema.names else None, w):
                    raise TraceError(
                        f"{self.path / layer_file(layer)}: column {c!r} is missing or not "
                        f"float16[{w}]; the file does not belong to this trace's model"
                    )

    def has(self, column: str) -> bool:
        return column in self.meta.columns

    def iter_layer(
        self, layer: int, columns: tuple[str, ...] = ("x", "h"), batch_tokens: int = 256
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield the rows of one layer in token order, ``batch_tokens`` at a time.

        Yields:
            dict column -> array: magnitude columns as float16 arrays of shape (T_b, width)
            (read-only views of Arrow memory); ``token_id``/``position`` as int32 (T_b,).
        """
        for c in columns:
            if c not in self.meta.columns and c not in ("token_id", "position"):
                raise TraceError(
                    f"{self.path} has no column {c!r} (it has {self.meta.columns}); "
                    "re-create the trace with that column"
                )
        widths = self.meta.widths()
        f = self._open(layer)
        try:
            for batch in f.iter_batches(batch_size=batch_tokens, columns=list(columns), use_threads=False):
                out = {}
                for c in columns:
                    col = batch.column(c)
                    if c in widths:
                        out[c] = _float16_matrix(col, widths[c])
                    else:
                        out[c] = col.to_numpy()
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
