"""``prune_model``: calibrate, score, mask, measure and write a statically pruned MLP.

Output directory (default ``pruned/<model>-<method>-<pattern>``, written atomically: a temporary
sibling directory is renamed into place once complete):

* ``masks.npz``: one entry per matrix, key ``layers.<i>.mlp.<part>`` (part = the matrix's attribute on
  the MLP module, as its family's layout names it: ``gate_proj``, ``up_proj``, ``down_proj``, or Phi-3's
  ``gate_up_proj``; ``simcore.models.mlp``), the boolean keep-mask of shape
  (out_features, in_features) packed with ``np.packbits`` along the last axis (see load_masks);
* ``manifest.json``: model, method, pattern, alpha, calibration and evaluation token ranges,
  per-matrix kept fractions, dense and pruned MLP bytes (mask metadata included), and the dense
  and pruned perplexity on the evaluation range;
* ``weights.npz`` (methods that update the weights they keep: sparsegpt): per matrix, the kept values
  in row-major order of its mask (``w[mask]``), float16 (float32 if a value exceeds float16's range),
  named in the manifest's ``updated_weights``; ``apply_pruned`` applies masks and values together.
  Outputs without it (wanda, dass, older outputs) are masks only.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from simcore.calibration import text_sha256
from simcore.errors import ConfigError
from simcore.models import DEFAULT_MODEL, Mlp, decoder_layers
from simcore.prune.calibrate import DEFAULT_CALIB_OFFSET, LayerNorms, collect_norms, perplexity
from simcore.prune.patterns import Pattern, keep_mask, metadata_bits, parse_sparsity, pruned_bytes
from simcore.trace.text import bos_record, bos_token, load_text, split_windows, tokenize

METHODS = ("wanda", "dass", "sparsegpt")
MASKS_FILE = "masks.npz"
WEIGHTS_FILE = "weights.npz"
MANIFEST_FILE = "manifest.json"


def method_module(method: str) -> Any:
    """The module ``simcore.prune.<method>``; ConfigError for an unknown method."""
    if method not in METHODS:
        raise ConfigError(f"unknown pruning method {method!r}; use --method wanda, dass or sparsegpt")
    return importlib.import_module(f"simcore.prune.{method}")


def check_options(
    method: str, pattern: Pattern, blocksize: int | None, damp: float | None
) -> tuple[int | None, float | None]:
    """SparseGPT's ``blocksize`` and ``damp`` resolved to their defaults and checked against ``pattern``;
    ConfigError when either is given to a method that does not update weights (wanda, dass)."""
    mod = method_module(method)
    if not getattr(mod, "UPDATES_WEIGHTS", False):
        if blocksize is not None or damp is not None:
            raise ConfigError(f"--blocksize and --damp are SparseGPT's; {method} takes neither (drop them)")
        return None, None
    blocksize = mod.DEFAULT_BLOCKSIZE if blocksize is None else blocksize
    damp = mod.DEFAULT_DAMP if damp is None else damp
    mod.check_options(pattern, blocksize, damp)
    return blocksize, damp


def _matrices(model: Any) -> list[tuple[str, str, Any]]:
    """(key, role, weight Parameter) of every MLP matrix, layer by layer: key ``layers.<i>.mlp.<name>``
    with the matrix's attribute name, role as ``simcore.models.mlp`` spells it (``gate_proj``, ...)."""
    out = []
    for i, layer in enumerate(decoder_layers(model)):
        for m in Mlp.of(layer.mlp).matrices():
            out.append((f"layers.{i}.mlp.{m.name}", m.role, m.weight))
    return out


def compute_masks(
    model: Any, norms: list[LayerNorms], method: str, sparsity: str | Pattern, alpha: float = 0.5
) -> dict[str, np.ndarray]:
    """Keep-masks of every MLP matrix of ``model`` under ``method`` and ``sparsity``.

    Args:
        model: a ``transformers`` causal LM with GLU MLPs.
        norms: per-layer calibration norms (``collect_norms``).
        method: ``wanda`` or ``dass``; sparsity: ``"0.5"``, ``"2:4"``, ``"4:8"`` or a Pattern.
        alpha: DaSS's exponent of the neuron norm for gate/up weights.

    Returns key ``layers.<i>.mlp.<part>`` -> bool array (out_features, in_features), True = kept.
    """
    mod = method_module(method)
    if getattr(mod, "UPDATES_WEIGHTS", False):
        raise ConfigError(
            f"{method} updates the weights it keeps, so it has no masks alone; use prune_model or "
            f"simcore.prune.{method}.prune"
        )
    pattern = sparsity if isinstance(sparsity, Pattern) else parse_sparsity(sparsity)
    masks = {}
    for key, role, w in _matrices(model):
        ln = norms[int(key.split(".")[1])]
        s = mod.scores(role, w, ln.x, ln.h, alpha)
        masks[key] = keep_mask(s, pattern, mod.group_axis(role, pattern)).cpu().numpy()
    return masks


def apply_masks(model: Any, masks: dict[str, np.ndarray]) -> int:
    """Zero, in place, every MLP weight whose mask entry is False; returns how many were zeroed.

    ``masks`` maps ``layers.<i>.mlp.<part>`` to bool arrays of the weight's shape (as from
    ``compute_masks`` or ``load_masks``). Raises ConfigError for a mask that does not fit."""
    import torch

    params = {key: w for key, _, w in _matrices(model)}
    zeroed = 0
    with torch.no_grad():
        for key, keep in masks.items():
            w = params.get(key)
            if w is None or tuple(w.shape) != tuple(keep.shape):
                have = "no such matrix" if w is None else f"shape {tuple(w.shape)}"
                raise ConfigError(
                    f"mask {key} of shape {tuple(keep.shape)} does not fit this model ({have}); "
                    "apply masks to the model they were computed for"
                )
            drop = torch.as_tensor(~np.asarray(keep, dtype=bool), device=w.device)
            w.masked_fill_(drop, 0)
            zeroed += int(drop.sum())
    return zeroed


def load_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Masks of a ``simcore prune`` output directory: key -> bool array (out_features, in_features)."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    shapes = {k: tuple(v["shape"]) for k, v in manifest["matrices"].items()}
    with np.load(path / MASKS_FILE) as z:
        return {k: np.unpackbits(z[k], axis=-1, count=shapes[k][-1]).astype(bool) for k in z.files}


def kept_values(model: Any, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The values ``model`` keeps under ``masks``, as stored in ``weights.npz``: key -> 1-D array
    ``w[mask]`` (row-major order), float16, or float32 for all when some value exceeds float16's range."""
    params = {key: w for key, _, w in _matrices(model)}
    vals = {k: params[k].detach().cpu().float().numpy()[np.asarray(keep, dtype=bool)] for k, keep in masks.items()}
    if all(np.isfinite(v.astype(np.float16)).all() for v in vals.values()):
        return {k: v.astype(np.float16) for k, v in vals.items()}
    return vals


def apply_values(model: Any, masks: dict[str, np.ndarray], values: dict[str, np.ndarray]) -> int:
    """Set, in place, every masked MLP matrix to 0 where pruned and to its stored ``values`` (1-D,
    ``w[mask]`` order, as from ``kept_values``) where kept; returns how many weights were zeroed.
    Raises ConfigError for a mask or a value count that does not fit."""
    import torch

    zeroed = apply_masks(model, masks)
    params = {key: w for key, _, w in _matrices(model)}
    with torch.no_grad():
        for key, keep in masks.items():
            v = values.get(key)
            if v is None or v.size != int(np.count_nonzero(keep)):
                have = "none" if v is None else str(v.size)
                raise ConfigError(
                    f"updated weights of {key}: {have} values for {int(np.count_nonzero(keep))} kept weights; "
                    "the pruned output is damaged, re-create it with `simcore prune`"
                )
            w = params[key]
            keep_t = torch.as_tensor(np.asarray(keep, dtype=bool), device=w.device)
            w[keep_t] = torch.as_tensor(np.asarray(v)).to(device=w.device, dtype=w.dtype)
    return zeroed


def load_values(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The updated kept values of a ``simcore prune`` output (``weights.npz``), or None for an output
    of masks only (wanda, dass, and outputs written before simcore stored updated weights)."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    entry = manifest.get("updated_weights")
    if not entry:
        return None
    file = path / entry["file"]
    if not file.is_file():
        raise ConfigError(f"{path} names updated weights in {entry['file']}, which is missing; re-run `simcore prune`")
    with np.load(file) as z:
        return {k: z[k] for k in z.files}


def apply_pruned(model: Any, path: str | os.PathLike) -> int:
    """Apply a ``simcore prune`` output to ``model`` in place: its masks and, when it carries them,
    its updated kept weights (sparsegpt); returns how many weights were zeroed."""
    masks = load_masks(path)
    values = load_values(path)
    return apply_masks(model, masks) if values is None else apply_values(model, masks, values)


def mask_accounting(
    masks: dict[str, np.ndarray], pattern: Pattern, weight_bits: float = 16
) -> tuple[dict[str, dict], dict]:
    """Per-matrix kept counts and bytes, and the MLP totals.

    Per matrix: shape, kept, kept_fraction, metadata_bits, dense_bytes = ceil(numel * weight_bits / 8),
    pruned_bytes = ceil((kept * weight_bits + metadata_bits) / 8). Totals sum those."""
    per: dict[str, dict] = {}
    for key, keep in masks.items():
        rows, cols = keep.shape
        kept = int(keep.sum())
        per[key] = {
            "shape": [rows, cols],
            "kept": kept,
            "kept_fraction": kept / keep.size,
            "metadata_bits": metadata_bits(pattern, rows, cols),
            "dense_bytes": int(np.ceil(keep.size * weight_bits / 8)),
            "pruned_bytes": pruned_bytes(pattern, rows, cols, kept, weight_bits),
        }
    numel = sum(keep.size for keep in masks.values())
    kept = sum(v["kept"] for v in per.values())
    totals = {
        "weight_bits": weight_bits,
        "metadata": pattern.metadata,
        "weights": numel,
        "kept": kept,
        "kept_fraction": kept / numel if numel else float("nan"),
        "dense_mlp_bytes": sum(v["dense_bytes"] for v in per.values()),
        "pruned_mlp_bytes": sum(v["pruned_bytes"] for v in per.values()),
        "metadata_bytes": sum(v["metadata_bits"] for v in per.values()) / 8,
    }
    return per, totals


def check_out(out: Path) -> None:
    """Refuse, before any work, an output directory that cannot be written or that holds something else
    than an earlier ``simcore prune`` output (which would be replaced)."""
    from simcore.results import check_output, output_error

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for the masks and manifest")
    if out.is_dir():
        if any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
            raise ConfigError(
                f"--out {out} is a directory that is not a `simcore prune` output; it would be replaced, "
                "so give a new directory"
            )
        if not os.access(out.parent, os.W_OK):
            raise output_error(out, PermissionError(13, "Permission denied"), "--out")
        return
    check_output(out)


def _write_atomically(
    out: Path, masks: dict[str, np.ndarray], manifest: dict, values: dict[str, np.ndarray] | None = None
) -> None:
    from simcore.results import output_error, strict_json

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.savez_compressed(tmp / MASKS_FILE, **{k: np.packbits(v, axis=-1) for k, v in masks.items()})
        if values is not None:
            np.savez(tmp / WEIGHTS_FILE, **values)
        (tmp / MANIFEST_FILE).write_text(strict_json(manifest, indent=2) + "\n")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except OSError as e:
        raise output_error(out, e, "--out") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _check_ranges(calib: tuple[int, int], evaluation: tuple[int, int]) -> None:
    if calib[0] < evaluation[1] and evaluation[0] < calib[1]:
        raise ConfigError(
            f"calibration tokens [{calib[0]}, {calib[1]}) overlap evaluation tokens [{evaluation[0]}, {evaluation[1]}); "
            "move --calib-offset past the evaluation range"
        )


def prune_model(
    model: str | Any = DEFAULT_MODEL,
    method: str = "wanda",
    sparsity: str | float = "0.5",
    alpha: float = 0.5,
    calib_tokens: int = 512,
    seq_len: int = 256,
    out: str | os.PathLike | None = None,
    *,
    calib_offset: int = DEFAULT_CALIB_OFFSET,
    eval_tokens: int = 512,
    eval_offset: int = 0,
    weight_bits: float = 16,
    model_path: str | os.PathLike | None = None,
    text: str | os.PathLike | None = None,
    dataset: str | None = None,
    allow_download: bool = False,
    progress: bool = True,
    tokenizer: Any = None,
    token_ids: np.ndarray | None = None,
    log: Any = None,
    blocksize: int | None = None,
    damp: float | None = None,
) -> Path:
    """Statically prune a model's MLP weights and write the masks and manifest; returns the directory.

    Args:
        model: alias (e.g. ``smollm2-135m``), Hugging Face id, local path, or a loaded
            ``transformers`` causal LM (then give ``tokenizer`` or ``token_ids``; its weights are
            restored after the pruned evaluation).
        method: ``wanda``, ``dass`` or ``sparsegpt``; sparsity: ``"0.5"`` (pruned fraction), ``"2:4"`` or ``"4:8"``.
        alpha: DaSS's neuron-norm exponent for gate/up weights (> 0; ignored by wanda and sparsegpt).
        calib_tokens, calib_offset: calibration tokens ``[calib_offset, calib_offset + calib_tokens)``.
        eval_tokens, eval_offset: evaluation tokens for the dense/pruned perplexity; must not
            overlap the calibration range.
        seq_len: tokens per forward pass, for calibration and evaluation.
        out: output directory; default ``pruned/<model>-<method>-<pattern>``.
        weight_bits: bits per stored weight value in the byte accounting.
        model_path, text, dataset, allow_download, progress: as for ``simcore trace``.
        token_ids: int array (N,) used instead of text (indexed by the same offsets).
        log: callable taking one line of progress text (e.g. ``click.echo``), or None.
        blocksize, damp: SparseGPT's column block size (default 128) and Hessian dampening (default
            0.01 of the mean diagonal); an error with the other methods.

    Raises ConfigError for anything the user can fix, before the model is loaded where possible.
    """
    mod = method_module(method)
    pattern = parse_sparsity(sparsity)
    blocksize, damp = check_options(method, pattern, blocksize, damp)
    if mod.NEEDS_ALPHA and not (alpha is not None and alpha > 0):
        raise ConfigError(f"--alpha must be > 0, got {alpha}; the DaSS paper uses 0.5")
    for flag, v, lo in (
        ("--calib-tokens", calib_tokens, 1),
        ("--eval-tokens", eval_tokens, 1),
        ("--seq-len", seq_len, 1),
    ):
        if v is None or v < lo:
            raise ConfigError(f"{flag} must be a positive number of tokens, got {v}")
    for flag, v in (("--calib-offset", calib_offset), ("--eval-offset", eval_offset)):
        if v is None or v < 0:
            raise ConfigError(f"{flag} must be >= 0, got {v}")
    if not (weight_bits > 0 and math.isfinite(weight_bits)):
        raise ConfigError(f"--weight-bits must be a positive number, got {weight_bits}")
    if mod.NEEDS_ALPHA and not math.isfinite(alpha):
        raise ConfigError(f"--alpha must be a finite number, got {alpha}; the DaSS paper uses 0.5")
    calib_range = (calib_offset, calib_offset + calib_tokens)
    eval_range = (eval_offset, eval_offset + eval_tokens)
    _check_ranges(calib_range, eval_range)
    if eval_tokens < 2 or seq_len < 2:
        raise ConfigError(
            f"--eval-tokens {eval_tokens} in windows of --seq-len {seq_len} score no token: perplexity needs "
            "windows of at least 2 tokens"
        )
    say = log or (lambda _s: None)
    src = load_text(text, dataset) if token_ids is None else None
    owned = isinstance(model, str)
    if owned:
        from simcore.models.registry import resolve as model_source

        model_source(model, model_path, allow_download)  # an unknown name or missing path, before loading
        if out is None:
            out = Path("pruned") / f"{_stem(model)}-{method}-{pattern.slug}"
    if out is not None:
        check_out(Path(out))
    start = time.perf_counter()

    import torch

    if owned:
        from simcore.models.registry import load_model

        loaded = load_model(model, model_path, "cpu", None, allow_download, progress)
        lm, tok, name = loaded.model, loaded.tokenizer, loaded.name
    else:
        lm, tok = model, tokenizer
        name = str(getattr(lm.config, "name_or_path", "") or lm.config.model_type)
    decoder_layers(lm)

    def ids_for(offset: int, n: int) -> np.ndarray:
        if src is None:
            ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)[offset : offset + n]
            if len(ids) < n:
                raise ConfigError(f"only {len(ids)} token ids after offset {offset}, fewer than the {n} needed")
            return ids
        if tok is None:
            raise ConfigError("a model object needs a tokenizer (or token_ids) to prune on text")
        return tokenize(tok, src.text, n, offset)

    bos = bos_token(tok)  # fed before every window, when the tokenizer adds one (simcore.trace.text)
    calib_windows = split_windows(ids_for(calib_offset, calib_tokens), seq_len, bos)
    eval_windows = split_windows(ids_for(eval_offset, eval_tokens), seq_len, bos)
    updates = getattr(mod, "UPDATES_WEIGHTS", False)  # sparsegpt prunes in place, after the dense perplexity
    values = None
    if not updates:
        say(f"calibrating {name} on tokens [{calib_range[0]}, {calib_range[1]}) ...")
        masks = compute_masks(lm, collect_norms(lm, calib_windows), method, pattern, alpha)
    say(f"evaluating dense and pruned perplexity on tokens [{eval_range[0]}, {eval_range[1]}) ...")
    dense_ppl, n_pred = perplexity(lm, eval_windows)
    saved = None if owned else {k: w.detach().clone() for k, _, w in _matrices(lm)}
    try:
        if updates:
            say(f"pruning {name} layer by layer, calibrated on tokens [{calib_range[0]}, {calib_range[1]}) ...")
            masks = mod.prune(lm, calib_windows, pattern, blocksize, damp, progress)
            values = kept_values(lm, masks)
            apply_values(lm, masks, values)  # the stored precision: eval --pruned scores these very weights
        else:
            apply_masks(lm, masks)
        pruned_ppl, _ = perplexity(lm, eval_windows)
    finally:
        if saved is not None:
            with torch.no_grad():
                for k, _, w in _matrices(lm):
                    w.copy_(saved[k])
    per, totals = mask_accounting(masks, pattern, weight_bits)
    source = "token ids" if src is None else src.name
    manifest = {
        "model": name,
        "method": method,
        "pattern": pattern.label,
        "pattern_kind": pattern.kind,
        "alpha": alpha if mod.NEEDS_ALPHA else None,
        "group_axes": {p: mod.group_axis(p, pattern) for p in sorted({k.rsplit(".", 1)[1] for k in masks})},
        "group_axes_legend": "1 = groups within each row (input dimension), 0 = within each column (output dimension)",
        "calibration": {
            "model": name,
            "source": source,
            "text_sha256": None if src is None else text_sha256(src.text),
            "tokens": list(calib_range),
            "seq_len": seq_len,
        },
        "evaluation": {
            "source": source,
            "tokens": list(eval_range),
            "seq_len": seq_len,
            "predicted": n_pred,
            **bos_record(eval_windows),
        },
        "perplexity": {"dense": dense_ppl, "pruned": pruned_ppl},
        "bytes": totals,
        "matrices": per,
        "seconds": round(time.perf_counter() - start, 3),
        "torch_version": torch.__version__,
    }
    if values is not None:
        manifest["updated_weights"] = {
            "file": WEIGHTS_FILE,
            "dtype": str(next(iter(values.values())).dtype),
            "layout": "per matrix, the kept values w[mask] in row-major order of its mask",
        }
        manifest["sparsegpt"] = {
            "blocksize": blocksize,
            "damp": damp,
            "hessian": "2 X X^T / T of each matrix's inputs (gate/up: x after the norm; down: h), float64",
            "calibration_order": "sequential: layer l calibrated on inputs computed with layers < l already pruned",
        }
    out = Path(out) if out is not None else Path("pruned") / f"{_stem(name)}-{method}-{pattern.slug}"
    _write_atomically(out, masks, manifest, values)
    return out


def _stem(name: str) -> str:
    """The model part of the default output directory's name."""
    return Path(name).stem if (Path(name).exists() or name.endswith(".gguf")) else name.replace("/", "--")
