"""Sparsity patterns: parsing ``"0.5"`` / ``"2:4"``, turning a score matrix into a keep-mask,
and the bytes a pruned matrix takes with its mask metadata.

A *comparison group* is a set of weights that compete with each other: within a group the
highest-scoring weights are kept. Groups run along one axis of a weight matrix W of shape
(rows, cols) = (out_features, in_features):

* ``axis=1``: within each row W[i, :], i.e. along the input dimension;
* ``axis=0``: within each column W[:, j], i.e. along the output dimension.

Unstructured with fraction f: each whole row (axis=1) or column (axis=0) is one group, and
exactly ``round(f * group_size)`` weights are pruned in it (Python's round, half to even).
N:M: each run of M consecutive weights along the axis is one group, and exactly N are kept.
Ties are broken by position (the earlier weight ranks lower), so masks are deterministic.

Byte accounting (DESIGN.md): kept values at ``weight_bits`` each, plus metadata: 1 bit per
weight (a bitmap) for unstructured, ``ceil(log2(C(M, N)))`` bits per group of M for N:M
(which N of the M positions are kept: 3 bits for 2:4, 7 bits for 4:8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simcore.errors import ConfigError

HOW = "use a fraction strictly between 0 and 1 (e.g. 0.5) or N:M with 0 < N < M (e.g. 2:4 or 4:8)"


@dataclass(frozen=True)
class Pattern:
    """A parsed ``--sparsity``: ``fraction`` (pruned share) for unstructured, or ``n``:``m`` (kept of M)."""

    kind: str  # "unstructured" or "nm"
    fraction: float = 0.0
    n: int = 0
    m: int = 0

    @property
    def label(self) -> str:
        """The pattern as the user writes it: ``0.5`` or ``2:4``."""
        return f"{self.n}:{self.m}" if self.kind == "nm" else f"{self.fraction:g}"

    @property
    def slug(self) -> str:
        """The pattern in a directory name: ``0.5`` or ``2of4``."""
        return f"{self.n}of{self.m}" if self.kind == "nm" else f"{self.fraction:g}"

    @property
    def metadata(self) -> str:
        """The metadata accounting, in words."""
        if self.kind == "nm":
            return f"ceil(log2(C({self.m},{self.n}))) = {nm_index_bits(self.n, self.m)} bits per group of {self.m}"
        return "1 bit per weight (bitmap)"


def parse_sparsity(text: str | float) -> Pattern:
    """``"0.5"`` (or 0.5) -> unstructured, ``"2:4"`` -> N:M; anything else is a ConfigError."""
    s = str(text).strip()
    if ":" in s:
        a, _, b = s.partition(":")
        try:
            n, m = int(a), int(b)
        except ValueError:
            raise ConfigError(f"--sparsity {s!r} is not N:M with whole numbers; {HOW}") from None
        if not 0 < n < m:
            raise ConfigError(f"--sparsity {s!r} keeps N of M weights and needs 0 < N < M; {HOW}")
        return Pattern("nm", n=n, m=m)
    try:
        f = float(s)
    except ValueError:
        raise ConfigError(f"--sparsity {s!r} is neither a fraction nor N:M; {HOW}") from None
    if not 0.0 < f < 1.0:
        raise ConfigError(f"--sparsity {s} is outside (0, 1); {HOW}")
    return Pattern("unstructured", fraction=f)


def nm_index_bits(n: int, m: int) -> int:
    """Bits to say which N of M positions are kept: ``ceil(log2(C(M, N)))``."""
    return math.ceil(math.log2(math.comb(m, n)))


def metadata_bits(pattern: Pattern, rows: int, cols: int) -> int:
    """Mask metadata bits of a (rows, cols) matrix under ``pattern``."""
    if pattern.kind == "nm":
        return (rows * cols // pattern.m) * nm_index_bits(pattern.n, pattern.m)
    return rows * cols


def pruned_bytes(pattern: Pattern, rows: int, cols: int, kept: int, weight_bits: float) -> int:
    """Bytes of a pruned (rows, cols) matrix: ``ceil((kept * weight_bits + metadata_bits) / 8)``."""
    return math.ceil((kept * weight_bits + metadata_bits(pattern, rows, cols)) / 8)


def keep_mask(scores: Any, pattern: Pattern, axis: int) -> Any:
    """Boolean keep-mask (torch.bool, same shape as ``scores``) for a score matrix.

    Args:
        scores: torch tensor (rows, cols), higher = more important.
        pattern: unstructured fraction or N:M.
        axis: 1 = groups within each row (along the input dimension), 0 = within each column.

    Raises ConfigError when an N:M group length M does not divide the length along ``axis``.
    """
    import torch

    s = scores if axis == 1 else scores.T
    rows, cols = s.shape
    if pattern.kind == "unstructured":
        k = round(pattern.fraction * cols)
        keep = torch.ones((rows, cols), dtype=torch.bool, device=s.device)
        if k > 0:
            lowest = torch.argsort(s, dim=1, stable=True)[:, :k]
            keep.scatter_(1, lowest, False)
    else:
        n, m = pattern.n, pattern.m
        if cols % m:
            raise ConfigError(
                f"N:M sparsity {n}:{m} needs the group axis length ({cols}) to be a multiple of {m}; "
                "pick an M that divides the matrix width, or an unstructured fraction"
            )
        g = s.reshape(rows, cols // m, m)
        best = torch.argsort(g, dim=-1, descending=True, stable=True)[..., :n]
        keep = torch.zeros(g.shape, dtype=torch.bool, device=s.device).scatter_(-1, best, True).reshape(rows, cols)
    return keep if axis == 1 else keep.T.contiguous()
