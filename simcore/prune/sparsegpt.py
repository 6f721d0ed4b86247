"""SparseGPT — Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned
in One-Shot" (arXiv 2301.00774): prune each matrix to the pattern while updating its remaining weights
to reconstruct the layer's output on the calibration inputs (optimal brain surgeon, column by column).

For one matrix W (rows, cols) with calibration inputs X (cols, T): the Hessian of the layer-wise loss
``‖W X − W' X‖²_F`` is ``H = 2 X Xᵀ / T`` (the same for every row), dampened by ``damp · mean(diag H)``
on the diagonal. With U the upper Cholesky factor of H⁻¹, columns are processed in blocks of
``blocksize``; in each block the pruned positions are chosen by the saliency ``w² / U_jj²`` (the
weights as updated so far), then column by column the pruned weight's error ``(w_j − q_j) / U_jj`` is
spread over the later columns through row j of U (within the block at once, beyond it lazily, one
matrix product per block), exactly as the reference code does.

Patterns (``simcore.prune.patterns``):

* unstructured fraction f: within each block of ``blocksize`` columns, exactly ``round(f · rows ·
  width)`` weights with the lowest saliency are pruned (the paper's adaptive mask selection: the
  comparison group is the whole block, so rows keep different counts); ties go to the earlier position;
* N:M: within each row, every run of M consecutive columns keeps the N of highest saliency, chosen
  when the run's first column is reached (so along the input dimension, as hardware N:M does, and as
  wanda's groups run). ``blocksize`` must be a multiple of M so that no run straddles two blocks.

Calibration inputs (``hessians``): gate/up (and Phi-3's fused gate_up) see the MLP input x after the
post-attention norm, down sees the GLU activation h. Layers are calibrated in order, each on inputs
computed with the layers before it already pruned and updated (the paper's sequential scheme); within
a layer, gate, up and down all use that one pass (the reference code's order), so h comes from the
layer's own dense gate/up. Attention is never pruned.

Unlike wanda and dass this method changes the weights it keeps, so ``simcore prune`` writes them beside
the masks (``simcore.prune.api``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import numpy as np

from simcore.errors import ConfigError
from simcore.models import Mlp, decoder_layers
from simcore.models.mlp import DOWN
from simcore.prune.patterns import Pattern
from simcore.trace.text import model_inputs

NEEDS_ALPHA = False
UPDATES_WEIGHTS = True
DEFAULT_BLOCKSIZE = 128
DEFAULT_DAMP = 0.01


def group_axis(part: str, pattern: Pattern) -> int:
    """Axis along which N:M groups run: always 1 (within each row, along the input dimension)."""
    return 1


def check_options(pattern: Pattern, blocksize: int, damp: float) -> None:
    """ConfigError for a block size or dampening SparseGPT cannot use with ``pattern``."""
    if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) or blocksize < 1:
        raise ConfigError(
            f"--blocksize must be a positive whole number of columns, got {blocksize}; the paper uses 128"
        )
    if pattern.kind == "nm" and blocksize % pattern.m:
        raise ConfigError(
            f"--blocksize {blocksize} is not a multiple of M = {pattern.m} for {pattern.label}: an N:M group "
            f"would straddle two blocks; use a multiple of {pattern.m} (e.g. 128)"
        )
    if damp is None or not (math.isfinite(damp) and damp > 0):
        raise ConfigError(f"--damp must be a positive fraction of the Hessian's mean diagonal, got {damp}; use 0.01")


def prune_matrix(
    weight: Any, hessian: Any, pattern: Pattern, blocksize: int = DEFAULT_BLOCKSIZE, damp: float = DEFAULT_DAMP
) -> tuple[Any, Any]:
    """SparseGPT on one matrix.

    Args:
        weight: torch tensor (rows, cols) = (out_features, in_features); not modified.
        hessian: torch tensor (cols, cols), ``2 X Xᵀ / T`` of the matrix's inputs X (cols, T); not modified.
        pattern: unstructured fraction or N:M (N kept of every M columns in a row).
        blocksize: columns per block (lazy batch updates); a multiple of M for N:M.
        damp: fraction of the mean Hessian diagonal added to the diagonal.

    Returns (pruned weights float64 (rows, cols) with zeros where pruned, keep-mask bool (rows, cols)),
    on ``weight``'s device. A column whose input was always zero (H_jj = 0) gets H_jj = 1: its weights
    carry no calibration signal and are pruned or kept by magnitude, as in the reference code.
    """
    import torch

    check_options(pattern, blocksize, damp)
    W = weight.detach().to(torch.float64).clone()
    rows, cols = W.shape
    H = hessian.detach().to(device=W.device, dtype=torch.float64).clone()
    if H.shape != (cols, cols):
        raise ValueError(f"Hessian of shape {tuple(H.shape)} for a weight of shape {(rows, cols)}")
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(damp * float(torch.diagonal(H).mean()))
    with _one_cpu_thread(W.device):
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
        if int(info) != 0:
            raise ConfigError(
                f"the calibration Hessian of a {rows}x{cols} matrix is not positive definite at --damp {damp}; "
                "raise --damp (e.g. 0.1) or calibrate on more tokens"
            )
        keep = _blocks(W, U, pattern, blocksize)
    W[~keep] = 0.0
    return W, keep


@contextmanager
def _one_cpu_thread(device: Any):
    """Run the factorisations and the column loop on one CPU thread: the loop's operations are vectors
    and (rows, blocksize) updates, too small to gain from threads, and on a machine whose cores are busy
    with other work, threads of these small float64 kernels wait on each other far longer than they
    save."""
    import torch

    n = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _blocks(W: Any, U: Any, pattern: Pattern, blocksize: int) -> Any:
    """The OBS loop of ``prune_matrix`` over column blocks: updates ``W`` (float64 (rows, cols)) in place
    given U, the upper Cholesky factor of the dampened H⁻¹ (cols, cols); returns the keep-mask."""
    import torch

    rows, cols = W.shape
    keep = torch.ones((rows, cols), dtype=torch.bool, device=W.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        d = torch.diagonal(U1)
        prune1 = torch.zeros_like(W1, dtype=torch.bool)
        if pattern.kind == "unstructured":
            k = round(pattern.fraction * W1.numel())
            if k > 0:
                saliency = (W1.pow(2) / d.pow(2)[None, :]).reshape(-1)
                prune1.view(-1)[torch.argsort(saliency, stable=True)[:k]] = True
        err = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if pattern.kind == "nm" and i % pattern.m == 0:
                saliency = W1[:, i : i + pattern.m].pow(2) / d[i : i + pattern.m].pow(2)[None, :]
                lowest = torch.argsort(saliency, dim=1, stable=True)[:, : pattern.m - pattern.n]
                prune1[:, i : i + pattern.m].scatter_(1, lowest, True)
            w = W1[:, i]
            q = torch.where(prune1[:, i], 0.0, w)
            e = (w - q) / U1[i, i]
            W1[:, i:] -= e[:, None] * U1[i, i:][None, :]
            W1[:, i] = q
            err[:, i] = e
        W[:, i1:i2] = W1
        W[:, i2:] -= err @ U[i1:i2, i2:]
        keep[:, i1:i2] = ~prune1
    return keep


class _Stop(Exception):
    """Raised after the calibrated layer's MLP: the rest of the forward pass is not needed."""


def hessians(model: Any, layer_index: int, windows: list[np.ndarray]) -> tuple[Any, Any]:
    """Calibration Hessians of one decoder layer's MLP inputs, from the model as it is now.

    Args:
        model: a ``transformers`` causal LM with GLU MLPs (earlier layers possibly already pruned).
        layer_index: the decoder layer.
        windows: int token-id arrays (T_w,), each one forward pass (stopped after this layer's MLP); a
            ``simcore.trace.text.Windows`` with a ``bos`` is fed with BOS first, and that position is not counted.

    Returns (H_x float64 (d, d), H_h float64 (d_int, d_int)) = ``2 XᵀX / T`` over the T calibration
    tokens, X the MLP input after the norm (T, d) and the GLU activation h (T, d_int).
    """
    import torch

    layer = decoder_layers(model)[layer_index]
    device = next(model.parameters()).device
    acc: dict[str, Any] = {}
    prefix = [0]  # positions fed before the current window's text (a BOS): left out, as collect_norms does

    def add(key: str) -> Any:
        def hook(_m: Any, args: tuple, kwargs: dict) -> None:
            t = (args[0] if args else next(iter(kwargs.values()))).detach()[:, prefix[0] :]
            t = t.reshape(-1, t.shape[-1]).to(torch.float64)
            acc[key] = acc.get(key, 0) + t.T @ t
            acc[key + "_n"] = acc.get(key + "_n", 0) + t.shape[0]

        return hook

    def stop(*_a: Any) -> None:
        raise _Stop

    handles = [
        layer.mlp.register_forward_pre_hook(add("x"), with_kwargs=True),
        Mlp.of(layer.mlp).down.register_forward_pre_hook(add("h"), with_kwargs=True),
        layer.mlp.register_forward_hook(stop),
    ]
    try:
        with torch.inference_mode():
            for fed, prefix[0] in model_inputs(windows):
                try:
                    model(input_ids=torch.as_tensor(fed, device=device)[None], use_cache=False)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
    if "x" not in acc or "h" not in acc:
        raise RuntimeError(f"calibration hooks did not fire on layer {layer_index}; is this a GLU model?")
    return 2 * acc["x"] / acc["x_n"], 2 * acc["h"] / acc["h_n"]


def prune(
    model: Any,
    windows: list[np.ndarray],
    pattern: Pattern,
    blocksize: int = DEFAULT_BLOCKSIZE,
    damp: float = DEFAULT_DAMP,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Prune every MLP matrix of ``model`` in place, layer by layer (sequential calibration).

    Args:
        model: a ``transformers`` causal LM with GLU MLPs; its MLP weights are replaced by the pruned and
            updated ones (zeros where pruned), in their own dtype.
        windows: calibration token-id arrays (T_w,), each one forward pass.
        pattern, blocksize, damp: as for ``prune_matrix``.
        progress: a tqdm bar over the layers.

    Returns key ``layers.<i>.mlp.<part>`` -> keep-mask bool array (out_features, in_features).
    """
    import torch

    check_options(pattern, blocksize, damp)
    layers = decoder_layers(model)
    bar = range(len(layers))
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc="sparsegpt", unit="layer")
    masks = {}
    for li in bar:
        hx, hh = hessians(model, li, windows)
        for m in Mlp.of(layers[li].mlp).matrices():
            w, keep = prune_matrix(m.weight, hh if m.role == DOWN else hx, pattern, blocksize, damp)
            with torch.no_grad():
                m.weight.copy_(w.to(m.weight.dtype))
            masks[f"layers.{li}.mlp.{m.name}"] = keep.cpu().numpy()
    return masks
