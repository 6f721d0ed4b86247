"""Static pruning of the MLP weights (DESIGN.md, "Static pruning"): ``simcore prune``.

One module per method (``wanda``, ``dass``, ``sparsegpt``; the CLI string is the module name), the calibration
statistics in ``calibrate``, the patterns (unstructured fraction, N:M) and their byte accounting
in ``patterns``, and the driver in ``api``. Nothing here imports torch at import time.
"""

from simcore.prune.api import METHODS, apply_masks, apply_pruned, compute_masks, load_masks, prune_model

__all__ = ["METHODS", "apply_masks", "apply_pruned", "compute_masks", "load_masks", "prune_model"]
