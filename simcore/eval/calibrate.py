"""DIP's split calibration: for a model and each target MLP density rho, the split between input density
rho_in and down density rho_d (rho = (2 rho_in + rho_d) / 3) that minimises perplexity on calibration
text disjoint from the evaluation text. Saved, with the model, the text's sha256 and the token range, in
``simcore.calibration.calibration_dir()`` under the model and the text (or at ``out``); replay and eval
of that model on that text use it by default (simcore.methods.dip), on tokens other than those it was
calibrated on, and fall back to the default rule otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simcore.calibration import calibration_dir, calibration_file, find_split, text_sha256  # noqa: F401 (re-exported)
from simcore.errors import ConfigError
from simcore.results import atomic_write_bytes, strict_json


def candidate_splits(density: float, n: int = 9) -> list[tuple[float, float]]:
    """``n`` splits evenly spaced in rho_d over every feasible split, from input-heavy (rho_in = 1 or
    rho_d near 0) to down-heavy (rho_d = 1 or rho_in = 0); the uniform split is always among them."""
    lo, hi = max(3 * density - 2, density / 4), min(1.0, 3 * density)
    out = []
    for rho_d in sorted({*np.linspace(lo, hi, n).tolist(), density}):
        rho_in = (3 * density - rho_d) / 2
        if 0 <= rho_in <= 1:
            out.append((round(float(rho_in), 6), round(float(rho_d), 6)))
    return out


def calibrate(
    model: str | Any = "smollm2-135m",
    densities: tuple[float, ...] = (0.4, 0.5, 0.6),
    *,
    tokenizer: Any = None,
    name: str | None = None,
    text: str | None = None,
    dataset: str | None = None,
    tokens: int = 512,
    seq_len: int = 256,
    offset: int = 8192,
    candidates: int = 9,
    save: bool = True,
    model_path: str | None = None,
    log=print,
    progress: bool = False,
    out: str | None = None,
) -> dict:
    """Evaluate dip at each candidate split of each density on calibration text (``tokens`` tokens from
    ``offset``: keep it disjoint from evaluation text) and keep the split of lowest perplexity. Saves it
    atomically when ``save``: at ``out``, or as the calibration of this model and text
    (``calibration_file``). Returns the calibration as a dict (``path``: where it was saved).
    Every setting is checked before the model is loaded; ``progress`` shows the loader's bars."""
    from simcore.eval.evaluate import check_counts, evaluate
    from simcore.models.registry import load_model
    from simcore.models.registry import resolve as model_source
    from simcore.results import check_output
    from simcore.trace.text import load_text

    if not densities:
        raise ConfigError("--densities is empty; give target densities such as 0.4,0.5")
    for density in densities:
        if not 0 < density <= 1:
            raise ConfigError(f"--densities: {density} is not in (0, 1]")
    if candidates < 1:
        raise ConfigError(f"--candidates must be at least 1, got {candidates}")
    check_counts(tokens, seq_len, offset, 0, offset + tokens)
    source = load_text(text=text, dataset=dataset)  # a missing file or data set, before the model load
    sha = text_sha256(source.text)
    if isinstance(model, str):
        model_source(model, model_path)
        if save:
            check_output(out or calibration_file(name or model, sha), "--out" if out else "calibration file")
        lm = load_model(model, model_path=model_path, progress=progress)
        net, tok, name = lm.model, lm.tokenizer, name or lm.name
    else:
        net, tok = model, tokenizer
        if tok is None or name is None:
            raise ConfigError("calibrate(model=<loaded model>) needs tokenizer= and name=")
    splits = []
    for density in densities:
        tried = []
        for rho_in, rho_d in candidate_splits(density, candidates):
            r = evaluate(
                net,
                tokenizer=tok,
                text=text,
                dataset=dataset,
                tokens=tokens,
                seq_len=seq_len,
                offset=offset,
                calib_tokens=0,
                calib_offset=offset + tokens,
                method="dip",
                density=density,
                rho_in=rho_in,
                policy="none",
                dram="1TB",
                context=0,
            )
            tried.append({"rho_in": rho_in, "rho_d": rho_d, "perplexity": r.perplexity})
            if log:
                log(f"density {density:g}: rho_in {rho_in:.3f} rho_d {rho_d:.3f} -> perplexity {r.perplexity:.3f}")
        best = min(tried, key=lambda c: (c["perplexity"], c["rho_d"]))
        splits.append(
            {
                "density": density,
                "rho_in": best["rho_in"],
                "rho_d": best["rho_d"],
                "perplexity": best["perplexity"],
                "candidates": tried,
            }
        )
    result = {
        "format": "simcore-dip-calibration",
        "model": name,
        "method": "dip",
        "text": {"source": source.name, "sha256": sha, "tokens": [offset, offset + tokens], "seq_len": seq_len},
        "splits": splits,
    }
    if save:
        path = out or calibration_file(name, sha)
        atomic_write_bytes(path, strict_json(result, indent=2).encode())
        result["path"] = str(path)
    return result
