"""Measuring real Flash storage: ``probe`` writes a device profile's Flash fields from a phone's own disk."""
