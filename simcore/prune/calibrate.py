"""Calibration statistics for static pruning: per decoder layer, ‖x_j‖₂ per MLP input channel
and ‖h_i‖₂ per GLU neuron over the calibration tokens.

They are collected with forward pre-hooks on the model's own modules (no model code is
re-implemented): x = the input of ``layer.mlp`` (after the post-attention norm), h = the input
of its down projection (the GLU activation; ``simcore.models.mlp.Mlp.down``). Squares are summed
in float64 on the model's device.

Calibration text must be disjoint from evaluation text: ``simcore trace`` and the evaluation
read the text from token 0, so calibration starts at ``DEFAULT_CALIB_OFFSET`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from simcore.models import Mlp, decoder_layers
from simcore.trace.text import model_inputs

DEFAULT_CALIB_OFFSET = 8192  # beyond the 2,048 tokens `simcore trace` reads by default, with room to spare


@dataclass
class LayerNorms:
    """Calibration norms of one decoder layer: ``x`` float64 tensor (d,), ``h`` float64 tensor (d_int,)."""

    x: Any
    h: Any


class _SquareSums:
    """Forward pre-hooks that add the column-wise sum of squares of a module's input to an accumulator."""

    def __init__(self, layers: list[Any]):
        self.layers = layers
        self.sums: list[dict[str, Any]] = [{} for _ in layers]
        self.handles: list[Any] = []
        self.prefix = 0  # positions fed before the current window's text (a BOS): left out of the sums

    def __enter__(self) -> _SquareSums:
        for i, layer in enumerate(self.layers):
            self._hook(layer.mlp, self.sums[i], "x")
            self._hook(Mlp.of(layer.mlp).down, self.sums[i], "h")
        return self

    def _hook(self, module: Any, acc: dict[str, Any], key: str) -> None:
        import torch

        def hook(_m: Any, args: tuple, kwargs: dict) -> None:
            t = (args[0] if args else next(iter(kwargs.values()))).detach()[:, self.prefix :]
            sq = t.to(torch.float64).pow(2).reshape(-1, t.shape[-1]).sum(0)
            acc[key] = sq if key not in acc else acc[key] + sq

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def collect_norms(model: Any, windows: list[np.ndarray]) -> list[LayerNorms]:
    """Run ``model`` over token windows and return per-layer calibration norms.

    Args:
        model: a ``transformers`` causal LM with GLU MLPs (``model.model.layers[i].mlp``).
        windows: int token-id arrays of shape (T_w,), each one forward pass; a
            :class:`~simcore.trace.text.Windows` with a ``bos`` is fed with BOS before each window that
            does not start with it (``model_inputs``), and that position is not counted.

    Returns one LayerNorms per decoder layer (float64 tensors on the model's device).
    """
    import torch

    layers = decoder_layers(model)
    device = next(model.parameters()).device
    with _SquareSums(layers) as rec, torch.inference_mode():
        for fed, rec.prefix in model_inputs(windows):
            model(input_ids=torch.as_tensor(fed, device=device)[None], use_cache=False)
    if any(len(s) < 2 for s in rec.sums):
        raise RuntimeError("calibration hooks did not fire on every layer; is this a GLU model?")
    return [LayerNorms(x=s["x"].sqrt(), h=s["h"].sqrt()) for s in rec.sums]


def perplexity(model: Any, windows: list[np.ndarray]) -> tuple[float, int]:
    """Perplexity of ``model`` over token windows (each an independent forward pass): exp of the
    mean next-token cross-entropy; returns (perplexity, number of predicted tokens). Every text token
    with context is predicted: a window fed after a BOS (``simcore.trace.text.model_inputs``) scores
    its first token too."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    nll, n = 0.0, 0
    with torch.inference_mode():
        for fed, _ in model_inputs(windows):
            t = torch.as_tensor(fed, device=device)
            if len(t) < 2:
                continue
            logits = model(input_ids=t[None], use_cache=False).logits[0]
            nll += float(F.cross_entropy(logits[:-1].float(), t[1:], reduction="sum"))
            n += len(t) - 1
    return (float(np.exp(nll / n)) if n else float("nan")), n
