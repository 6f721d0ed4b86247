"""Wanda — Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models":
score each weight by its magnitude times the norm of the input it multiplies.

``score(W_ij) = |W_ij| · ‖X_j‖₂``, with X_j the matrix's input channel j over the calibration
tokens: for W_g and W_u (``gate_proj``, ``up_proj``, Phi-3's fused ``gate_up_proj``) the MLP
input x after the post-attention norm, for W_d (``down_proj``) the GLU activation h.

Comparison groups: within each output row W[i, :] (Wanda's default "per output" comparison),
for unstructured and N:M alike — so N:M groups run along the input dimension, as hardware N:M
does. Within a row the input-channel norms are what reorder the weights relative to plain
magnitude pruning.
"""

from __future__ import annotations

from typing import Any

from simcore.models.mlp import DOWN
from simcore.prune.patterns import Pattern

NEEDS_ALPHA = False


def group_axis(part: str, pattern: Pattern) -> int:
    """Axis along which comparison groups run: always 1 (within each output row)."""
    return 1


def scores(part: str, weight: Any, x_norm: Any, h_norm: Any, alpha: float = 0.5) -> Any:
    """Wanda scores of one MLP matrix.

    Args:
        part: the matrix's role (``simcore.models.mlp``): ``gate_proj``, ``up_proj``, ``gate_up_proj``
            or ``down_proj``.
        weight: torch tensor (out_features, in_features).
        x_norm: float64 tensor (d,), ‖x_j‖₂ of the MLP input over the calibration tokens.
        h_norm: float64 tensor (d_int,), ‖h_i‖₂ of the GLU activation.
        alpha: unused (DaSS only).

    Returns a float64 tensor of ``weight``'s shape.
    """
    norm = h_norm if part == DOWN else x_norm
    return weight.detach().to(norm.dtype).abs() * norm[None, :]
