"""Perplexity budgets and the best throughput within one: the arithmetic of the frontier's tables, on plain
numbers (no I/O, no plotting), so that it can be checked by hand.

A *budget* is a limit on perplexity relative to dense: ``+x %`` (limit = dense · (1 + x/100)) or ``+x``
perplexity points (limit = dense + x).

A *curve* is the configurations of one method that differ only in target density (same device, DRAM size,
policy, γ, ...): points (density, perplexity, tokens/s). Between two adjacent densities d0 < d1 the frontier
interpolates **log-perplexity linearly in density** and **tokens/s linearly in density**, and never
extrapolates beyond the densities swept. The best tokens/s within a budget is then the largest tokens/s over
the feasible part of the curve; on a segment both quantities are linear in density, so the feasible part of
a segment is an interval whose ends are grid points or the crossing of the limit, and the maximum lies at one
of those ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simcore.errors import ConfigError

DEFAULT_RELATIVE = (1.0, 2.5, 5.0, 10.0)
"""Default budgets: +1 %, +2.5 %, +5 % and +10 % perplexity over dense."""


@dataclass(frozen=True)
class Budget:
    """A perplexity budget over dense: ``value`` percent when ``relative``, else ``value`` perplexity points."""

    value: float
    relative: bool

    @property
    def label(self) -> str:
        return f"+{self.value:g} %" if self.relative else f"+{self.value:g} ppl"

    def limit(self, dense: float) -> float:
        """The highest perplexity within the budget, for a dense perplexity ``dense``."""
        return dense * (1 + self.value / 100) if self.relative else dense + self.value


def parse_budgets(text: str | None, relative: bool, option: str) -> list[Budget]:
    """Budgets from a comma list (``1,2.5,5`` or ``1%,2.5%``: percent when ``relative``; ``0.1,0.2``: points
    otherwise). None or empty: no budgets. ConfigError (one line) for anything else."""
    if text is None or not str(text).strip():
        return []
    out: list[Budget] = []
    for part in str(text).split(","):
        s = part.strip()
        if relative:
            s = s.removesuffix("%").strip()
        try:
            v = float(s)
        except ValueError:
            unit = "percentages such as 1,2.5,5" if relative else "perplexity points such as 0.1,0.2,0.5"
            raise ConfigError(f"{option} {text!r}: give comma-separated {unit}") from None
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"{option} {text!r}: budgets must be finite and >= 0, got {part.strip()}")
        b = Budget(v, relative)
        if b not in out:
            out.append(b)
    return out


@dataclass(frozen=True)
class Best:
    """The best point of a curve within a budget: its tokens/s, density and perplexity, and whether it lies
    between two swept densities (``interpolated``) or on one."""

    tps: float
    density: float
    perplexity: float
    interpolated: bool


def _ok(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def best_within(points: list[tuple[float, float, float]], limit: float) -> Best | None:
    """The largest tokens/s of a density curve whose perplexity is at most ``limit`` (module docstring).

    ``points``: (density, perplexity, tokens/s) per swept density, any order; points with a missing or
    non-finite value are left out, and segments are formed between the remaining neighbours. Returns None
    when no point of the curve is within the limit."""
    pts = sorted((d, p, t) for d, p, t in points if _ok(d) and _ok(p) and _ok(t) and p > 0)
    if not pts or not (_ok(limit) and limit > 0):
        return None
    log_limit = math.log(limit)
    eps = 1e-12 * max(1.0, abs(log_limit))

    def within(p: float) -> bool:
        return math.log(p) <= log_limit + eps

    cands: list[Best] = [Best(t, d, p, False) for d, p, t in pts if within(p)]
    for (d0, p0, t0), (d1, p1, t1) in zip(pts, pts[1:]):
        if d1 <= d0 or within(p0) == within(p1):  # both ends in (candidates already) or both out (all out)
            continue
        l0, l1 = math.log(p0), math.log(p1)
        f = (log_limit - l0) / (l1 - l0)
        if 1e-12 < f < 1 - 1e-12:  # at an end, that end is the point
            cands.append(Best(t0 + f * (t1 - t0), d0 + f * (d1 - d0), limit, True))
    if not cands:
        return None
    return max(cands, key=lambda b: (b.tps, -b.density))


def reach(points: list[tuple[float, float]], target: float) -> tuple[float, str] | None:
    """The smallest x at which a curve of (x, y) points first reaches ``y >= target``, interpolated linearly
    between the two swept x around the crossing. Returns (x, where): ``where`` is "at" for a crossing inside
    the swept range or on a swept point, "below" when the smallest swept x already reaches it (the true x is
    at most that), or None when no swept x reaches it."""
    pts = sorted((x, y) for x, y in points if _ok(x) and _ok(y))
    tol = 1e-9 * max(1.0, abs(target))
    for i, (x, y) in enumerate(pts):
        if y >= target - tol:
            if i == 0:
                return x, ("at" if y <= target + tol else "below")
            x0, y0 = pts[i - 1]
            return x0 + (target - y0) / (y - y0) * (x - x0), "at"
    return None


__all__ = ["DEFAULT_RELATIVE", "Best", "Budget", "best_within", "parse_budgets", "reach"]
