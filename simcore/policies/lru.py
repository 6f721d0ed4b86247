"""lru: evict the least recently used unit (libCacheSim ``LRU.c``; a stack algorithm)."""

NEEDS_FUTURE = False
STACK = True  # a stack algorithm: the cache of capacity C is the C most recent units, so one pass gives every C


def weights(n_tokens: int) -> tuple[float, float, float]:
    """Weights of (use count, last-use token, next-use token) for a trace of ``n_tokens`` tokens.
    Keep-worthiness = last-use token."""
    return (0.0, 1.0, 0.0)
