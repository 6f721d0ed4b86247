"""Traces: the on-disk format (format.py), the synthetic generator (synth.py) and the
PyTorch tracer (tracer.py, needs the ``trace`` extra)."""

from simcore.trace.format import FORMAT_VERSION, TraceMeta, TraceReader, TraceWriter

__all__ = ["FORMAT_VERSION", "TraceMeta", "TraceReader", "TraceWriter"]
