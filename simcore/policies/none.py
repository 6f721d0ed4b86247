"""none: no DRAM cache of MLP weights; every used unit is read from Flash every token."""

NEEDS_FUTURE = False
NO_CACHE = True
PRIORITY = (0.0, 0.0, 0.0)
"""Never consulted: the engine gives every cache capacity 0."""
