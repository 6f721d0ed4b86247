"""lfu: evict the least frequently used unit, counting every use over the whole session (the
count is kept after eviction: "perfect LFU"); among equal counts the least recently used goes
first, and among units also last used in the same token the lower unit index goes first."""

NEEDS_FUTURE = False


def weights(n_tokens: int) -> tuple[float, float, float]:
    """Weights of (use count, last-use token, next-use token) for a trace of ``n_tokens`` tokens.
    Keep-worthiness = count * (T + 1) + last-use token: the count first, recency among equal counts
    (last < T, so the two never mix). Exact in float64 for T < 2^26."""
    return (float(n_tokens + 1), 1.0, 0.0)
