"""simcore: trace-driven simulation of LLM token generation with weights streamed from Flash
through a DRAM cache, under dynamic sparsity (DIP, DIP-CA, ...) and cache policies."""

__version__ = "0.1.0"
