"""DaSS — Guo et al. 2024, "Dependency-Aware Semi-Structured Sparsity of GLU-based LLMs":
score MLP weights by the norm of the GLU neuron they feed or read, so that all weights of an
important neuron survive together.

Scores (h_i = GLU neuron i's activation ``act(W_g x)_i · (W_u x)_i`` over the calibration tokens):

* gate/up rows W_g[i, :], W_u[i, :] (neuron i's weights): ``|W_ij| · ‖h_i‖₂^α`` (α = 0.5 default);
* down columns W_d[:, j] (neuron j's weights): ``|W_ij| · ‖h_j‖₂``.

Comparison groups always run across neurons — that is the point of the method:

* gate/up: within each column W[:, j] (along the output = neuron dimension), unstructured and
  N:M alike. Along a row the factor ‖h_i‖₂^α is one constant, so row groups would reduce DaSS
  to plain magnitude pruning; across neurons, the weights of a neuron with a large activation
  norm win against those of a weak one. (For N:M this puts the groups of M along the output
  dimension of W_g/W_u, i.e. along the input dimension of their transposes.)
* down: within each row W_d[i, :] (along the input dimension, which is the neuron dimension),
  as hardware N:M does; here the score equals Wanda's, since W_d's input channels are the neurons.
"""

from __future__ import annotations

from typing import Any

from simcore.models.mlp import DOWN
from simcore.prune.patterns import Pattern

NEEDS_ALPHA = True


def group_axis(part: str, pattern: Pattern) -> int:
    """0 (within each column, across neurons) for gate/up matrices, 1 (within each row) for down."""
    return 1 if part == DOWN else 0


def scores(part: str, weight: Any, x_norm: Any, h_norm: Any, alpha: float = 0.5) -> Any:
    """DaSS scores of one MLP matrix.

    Args:
        part: the matrix's role (``simcore.models.mlp``): ``gate_proj``, ``up_proj``, ``gate_up_proj``
            (fused, Phi-3: rows ``[0, d_int)`` are the gate, ``[d_int, 2 d_int)`` the up projection;
            row r belongs to neuron ``r mod d_int``) or ``down_proj``.
        weight: torch tensor (out_features, in_features).
        x_norm: float64 tensor (d,); unused.
        h_norm: float64 tensor (d_int,), ‖h_i‖₂ over the calibration tokens.
        alpha: exponent of the neuron norm for gate/up weights.

    Returns a float64 tensor of ``weight``'s shape.
    """
    w = weight.detach().to(h_norm.dtype).abs()
    if part == DOWN:
        return w * h_norm[None, :]
    per_row = h_norm.repeat(w.shape[0] // h_norm.shape[0])  # fused gate_up_proj: neuron r mod d_int
    return w * per_row.pow(alpha)[:, None]
