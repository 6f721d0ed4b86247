"""lru: evict the least recently used unit (libCacheSim ``LRU.c``; a stack algorithm)."""

NEEDS_FUTURE = False
PRIORITY = (0.0, 1.0, 0.0)
"""Weights of (use count, last-use token, next-use token): keep-worthiness = last-use token."""
