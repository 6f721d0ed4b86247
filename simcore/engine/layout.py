"""Flash layout files: the order of each (layer, kind)'s units in Flash (``simcore layout`` writes them,
``replay --layout`` reads them; DESIGN.md, "How Flash is read").

A layout file is a NumPy ``.npz`` archive:

* ``pos/<layer>/<kind>``: int32[U], the Flash position of each unit (a permutation of 0 .. U - 1; unit
  ``u`` is stored at byte ``pos[u] * unit_bytes`` of its kind's region);
* ``meta``: a JSON string: ``format`` ("simcore-layout"), ``version``, ``model``, ``n_layers``, ``kinds``
  ({kind: units}), ``trace`` (path when computed), ``text`` (the trace's text source), ``tokens``
  ([first, end) of the calibration tokens it was computed from, counted in the trace), ``text_sha256``
  and ``offset`` (the trace's text hash and first token in the text, when it records them), ``method``,
  ``density``, ``algorithm``, ``created``.

A layout must be evaluated on tokens it was not computed from: :func:`check_disjoint` refuses a replay
of the same text whose tokens overlap the layout's (a layout computed from another text is fine).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simcore.errors import ConfigError

FORMAT = "simcore-layout"
VERSION = 1


@dataclass
class Layout:
    """A loaded layout: ``pos[(layer, kind)]`` (int32[U]) and its metadata (see the module docstring)."""

    path: str
    meta: dict
    pos: dict

    def positions(self, layer: int, kind: str, n_units: int) -> np.ndarray:
        """int32[U]: the Flash positions of one (layer, kind)'s units."""
        p = self.pos.get((layer, kind))
        if p is None:
            have = ", ".join(sorted(self.meta.get("kinds", {}))) or "none"
            raise ConfigError(
                f"layout {self.path} has no order for kind {kind!r} of layer {layer} (its kinds: {have}); "
                f"compute a layout for this method (simcore layout --method ...)"
            )
        if p.shape[0] != n_units:
            raise ConfigError(
                f"layout {self.path} orders {p.shape[0]} units of kind {kind!r}, this model has {n_units}; "
                "it was computed for another model"
            )
        return p


def save(path: str | Path, pos: dict, meta: dict) -> None:
    """Write a layout atomically (a temporary file in the same directory, renamed when complete).
    ``pos``: {(layer, kind): int32[U]}; ``meta``: the keys of the module docstring (format, version
    are added)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"a layout file ends in .npz; got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"pos/{layer}/{kind}": np.asarray(p, np.int32) for (layer, kind), p in pos.items()}
    arrays["meta"] = np.array(json.dumps({"format": FORMAT, "version": VERSION, **meta}))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> Layout:
    """Read and check a layout file: every order must be a permutation (ConfigError otherwise)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"layout file {p} does not exist; compute one with `simcore layout`")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z.files else None
            arrays = {name: z[name] for name in z.files if name.startswith("pos/")}
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as e:
        raise ConfigError(
            f"layout file {p} cannot be read ({type(e).__name__}); compute it again with `simcore layout`"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{p} is not a simcore layout file (no layout metadata); compute one with `simcore layout`")
    if meta.get("version") != VERSION:
        raise ConfigError(
            f"layout {p} has format version {meta.get('version')}, this simcore reads {VERSION}; compute it again"
        )
    pos = {}
    for name, a in arrays.items():
        _, layer, kind = name.split("/", 2)
        a = np.asarray(a)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ConfigError(f"layout {p}: {name} is not a vector of unit positions")
        seen = np.zeros(a.shape[0], np.bool_)
        ok = a.shape[0] > 0 and a.min() >= 0 and a.max() < a.shape[0]
        if ok:
            seen[a] = True
            ok = bool(seen.all())
        if not ok:
            raise ConfigError(
                f"layout {p}: the order of kind {kind!r} in layer {layer} is not a permutation of its "
                f"{a.shape[0]} units; compute the layout again with `simcore layout`"
            )
        pos[(int(layer), kind)] = np.ascontiguousarray(a, np.int32)
    return Layout(str(p), meta, pos)


def check_fits(layout: Layout, model: str, n_layers: int) -> None:
    """A layout of another model (or layer count) is refused."""
    if layout.meta.get("model") != model or layout.meta.get("n_layers") != n_layers:
        raise ConfigError(
            f"layout {layout.path} is for model {layout.meta.get('model')!r} ({layout.meta.get('n_layers')} layers), "
            f"this trace is {model!r} ({n_layers} layers); compute a layout from a trace of this model"
        )


def same_text(layout: Layout, use) -> bool:
    """Whether a layout was computed from the text of ``use`` (a ``simcore.calibration.TextUse``): by the
    texts' sha256 when both are known, otherwise by the text source's name."""
    sha = layout.meta.get("text_sha256")
    if sha is not None and use.sha256 is not None:
        return sha == use.sha256
    return layout.meta.get("text") == use.name


def text_tokens(layout: Layout) -> tuple[int, int]:
    """The [first, end) positions in its text of the tokens a layout was computed from."""
    a, b = layout.meta.get("tokens", [0, 0])
    offset = int(layout.meta.get("offset") or 0)
    return offset + int(a), offset + int(b)


def check_disjoint(layout: Layout, use) -> None:
    """Refuse replaying the tokens of ``use`` (a ``simcore.calibration.TextUse``) with a layout computed
    from some of them (the same text, overlapping positions)."""
    a, b = text_tokens(layout)
    if same_text(layout, use) and use.first < b and a < use.end:
        raise ConfigError(
            f"layout {layout.path} was computed from tokens [{a}, {b}) of this text, and the replay covers "
            f"[{use.first}, {use.end}): a layout must be judged on other tokens; replay fewer --tokens, or "
            "compute the layout from other tokens (simcore layout --calib-tokens) or another text"
        )
