"""Accuracy: perplexity with the masks and the live cache in the loop (evaluate.py; needs the trace extra)."""
