"""none: no DRAM cache of MLP weights; every used unit is read from Flash every token."""

NEEDS_FUTURE = False
NO_CACHE = True


def weights(n_tokens: int) -> tuple[float, float, float]:
    """Weights of (use count, last-use token, next-use token) for a trace of ``n_tokens`` tokens.
    Never consulted: the engine gives every cache capacity 0."""
    return (0.0, 0.0, 0.0)
