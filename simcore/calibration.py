"""Calibrated artefacts on disk and where they came from.

Every calibrated artefact (the dip split, cats thresholds, pruning masks, Flash layouts, predictors,
adapters) records its :func:`provenance`: the model, the text (a name and the sha256 of its content) and
the [first, end) token range it was calibrated on. An artefact is applied to tokens it was not
calibrated on: :func:`check_disjoint` compares ranges of the *same* text only.

DIP split calibrations (``simcore calibrate``) live in one place, never relative to the working
directory: ``$SIMCORE_CALIBRATION`` when set, otherwise the user's data directory
(``$XDG_DATA_HOME/simcore/calibration``, by default ``~/.local/share/simcore/calibration``; on macOS
``~/Library/Application Support/simcore/calibration``). A calibration file is keyed by model and text:
``<model>--<first 16 hex digits of the text's sha256>.json``, so that one made on text A is never
applied to text B automatically; ``--calibration FILE`` applies a file explicitly (to any text).

A low layer (methods read it; ``simcore calibrate`` in simcore.eval writes it), so that no method
imports the evaluator.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from simcore.errors import ConfigError

FORMAT = "simcore-dip-calibration"


def calibration_dir() -> Path:
    """Where DIP split calibrations are saved and found (see the module docstring)."""
    env = os.environ.get("SIMCORE_CALIBRATION")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "simcore" / "calibration"


def calibration_file(model: str, text_hash: str) -> Path:
    """The calibration file of ``model`` on the text whose sha256 is ``text_hash``."""
    return calibration_dir() / f"{model.replace('/', '--')}--{text_hash[:16]}.json"


@dataclass(frozen=True)
class TextUse:
    """The tokens a replay or an evaluation masks: the text's ``name`` and ``sha256`` (None: unknown,
    e.g. a trace written before simcore recorded it) and [``first``, ``end``) in the text's tokens."""

    name: str | None
    sha256: str | None
    first: int
    end: int

    def describe(self) -> str:
        return f"tokens [{self.first}, {self.end}) of {self.name or 'an unnamed text'}"


def read_calibration(path: str | os.PathLike) -> dict:
    """A DIP split calibration file, checked: ``model``, ``text`` ({source, sha256, tokens}) and
    ``splits`` ([{density, rho_in, rho_d, ...}])."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"--calibration {p}: no such file; give a file written by `simcore calibrate`")
    try:
        data = json.loads(p.read_text())
        for e in data["splits"]:
            float(e["density"]), float(e["rho_in"]), float(e["rho_d"])
        a, b = data["text"]["tokens"]
        int(a), int(b), str(data["model"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{p} is not a simcore calibration file; re-create it with `simcore calibrate`") from None
    return data


def find_split(
    model: str, density: float, use: TextUse | None, path: str | os.PathLike | None = None
) -> tuple[tuple[float, float] | None, str]:
    """The dip split (rho_in, rho_d) calibrated for ``model`` at ``density`` (within 1e-6) and a note
    saying where it came from or why there is none.

    ``path`` (``--calibration``) names the file; otherwise the file of this model and of ``use``'s text
    is looked up in :func:`calibration_dir`. A split calibrated on tokens that ``use`` masks is refused."""
    if path is not None:
        data = read_calibration(path)
        where = str(Path(path).expanduser())
        if data["model"] != model:
            raise ConfigError(
                f"--calibration {where} was made for model {data['model']!r}, not {model!r}; "
                "calibrate this model (simcore calibrate --model ...)"
            )
    else:
        if use is None or use.sha256 is None:
            why = "the text is unknown" if use is None else "the trace does not record its text's hash"
            return None, f"default rule; no calibration looked up: {why} (give --calibration FILE)"
        p = calibration_file(model, use.sha256)
        if not p.is_file():
            return None, f"default rule; no calibration for {model} on this text in {calibration_dir()}"
        data, where = read_calibration(p), str(p)
    for e in data["splits"]:
        if abs(float(e["density"]) - density) < 1e-6:
            text = data["text"]
            prov = {"tokens": text["tokens"], "text_sha256": text.get("sha256")}
            if use is not None:
                check_disjoint(prov, f"the dip split in {where}", use.sha256, use.first, use.end)
            return (float(e["rho_in"]), float(e["rho_d"])), f"calibrated ({where})"
    have = ", ".join(f"{float(e['density']):g}" for e in data["splits"])
    if path is not None:
        raise ConfigError(
            f"--calibration {where} has splits for densities {have}, not {density:g}; "
            f"calibrate it (simcore calibrate --densities {density:g}) or give --rho-in/--rho-d"
        )
    return None, f"default rule; {where} has no split for density {density:g} (it has {have})"


# --- provenance of calibrated artefacts -----------------------------------------------------------------


def text_sha256(text: str) -> str:
    """The content hash that identifies a text in every calibrated artefact: sha256 of its UTF-8 bytes, hex."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def provenance(model: str, text_name: str, text_hash: str, first: int, end: int) -> dict:
    """What every calibrated artefact (dip split, cats thresholds, pruning masks, layouts, predictors,
    adapters) records about where it came from: ``{"model", "text", "text_sha256", "tokens": [first, end)}``."""
    return {"model": model, "text": text_name, "text_sha256": text_hash, "tokens": [int(first), int(end)]}


def check_disjoint(prov: dict, what: str, text_hash: str | None, first: int, end: int) -> None:
    """Refuse using an artefact (described by ``what``, e.g. "the predictors in DIR") on tokens [first, end)
    of the text whose hash is ``text_hash`` when it was calibrated on some of them. Another text (another
    hash) is fine; an artefact or a use whose text is unknown (None) is checked by range alone."""
    a, b = (prov.get("tokens") or [0, 0])[:2]
    same = text_hash is None or prov.get("text_sha256") in (None, text_hash)
    if same and first < b and a < end:
        raise ConfigError(
            f"{what} was calibrated on tokens [{a}, {b}) of this text, which overlap the tokens used here "
            f"[{first}, {end}); use other tokens (move the offset) or calibrate on other tokens or another text"
        )


def token_ranges(n: int, calib_tokens: int, first: int | None, eval_tokens: int, hint: str = "") -> tuple:
    """For an artefact computed from a trace of ``n`` tokens (a layout, DejaVu predictors): the calibration
    range [first, end) (default: the trace's last ``calib_tokens`` tokens, so that replay can use those
    before them) and the held-out range: up to ``eval_tokens`` tokens just before it, or just after it
    when it starts at token 0. ``hint`` ends the message when ``calib_tokens`` exceeds the trace.
    Returns ((first, end), (held first, held end)); ConfigError (one line) for bad numbers."""
    if calib_tokens <= 0:
        raise ConfigError(f"--calib-tokens must be positive, got {calib_tokens}")
    if calib_tokens > n:
        raise ConfigError(f"--calib-tokens {calib_tokens} is more than the trace's {n} tokens; give at most {n}{hint}")
    if eval_tokens < 0:
        raise ConfigError(f"--eval-tokens must be >= 0, got {eval_tokens}")
    if first is None:
        first = n - calib_tokens
    if first < 0 or first + calib_tokens > n:
        raise ConfigError(
            f"--first {first} puts the {calib_tokens} calibration tokens outside the trace's {n}; "
            f"give --first from 0 to {n - calib_tokens}"
        )
    end = first + calib_tokens
    held = (max(0, first - eval_tokens), first) if first > 0 else (end, min(n, end + eval_tokens))
    return (first, end), held
