"""belady (Belady 1966, MIN): evict the unit whose next use is farthest in the future; the optimal
offline policy. Next-use times come from one backward pass over the precomputed masks, so it is
only defined for masks that do not depend on the cache (not dip-ca with gamma < 1)."""

NEEDS_FUTURE = True


def weights(n_tokens: int) -> tuple[float, float, float]:
    """Weights of (use count, last-use token, next-use token) for a trace of ``n_tokens`` tokens.
    Keep-worthiness = minus the next-use token (never used again = T, the farthest)."""
    return (0.0, 0.0, -1.0)
