"""lfu: evict the least frequently used unit, counting every use over the whole session (the
count is kept after eviction: "perfect LFU"); among equal counts the least recently used goes
first, and among units also last used in the same token the lower unit index goes first."""

NEEDS_FUTURE = False
PRIORITY = (2.0**31, 1.0, 0.0)
"""Weights of (use count, last-use token, next-use token): count * 2^31 + last. Token indices stay
below 2^31 and counts below 2^22, so the sum is exact in float64."""
