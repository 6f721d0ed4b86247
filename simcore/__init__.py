"""simcore: trace-driven simulation of LLM token generation with MLP weights streamed from Flash
through a DRAM cache, under dynamic sparsity (DIP, DIP-CA, ...) and cache policies.

Python API (the CLI calls the same functions)::

    import simcore
    result = simcore.replay(trace="traces/smollm2-135m", device="a18", dram="64MB",
                            method="dip-ca", density=0.5, gamma=0.2, policy="lfu")
    print(simcore.replay_table(result)); result.totals["tokens_per_s_steady"]
    simcore.synth_trace("mistral7b", tokens=512, out="traces/mistral7b-synth")
"""

__version__ = "0.1.0"

_LAZY = {
    "replay": ("simcore.engine.replay", "replay"),
    "ReplayConfig": ("simcore.engine.settings", "ReplayConfig"),
    "ReplayResult": ("simcore.engine.result", "ReplayResult"),
    "replay_table": ("simcore.report_text", "replay_table"),
    "simulate": ("simcore.engine.sim", "simulate"),
    "replay_drams": ("simcore.engine.replay", "replay_drams"),
    "synth_trace": ("simcore.trace.synth", "synth_trace"),
    "TraceReader": ("simcore.trace.format", "TraceReader"),
    "TraceWriter": ("simcore.trace.format", "TraceWriter"),
    "load_device": ("simcore.device", "load_device"),
    "SimcoreError": ("simcore.errors", "SimcoreError"),
}


def __getattr__(name):  # import the engine (and Numba) only when it is used
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'simcore' has no attribute {name!r}")


__all__ = list(_LAZY) + ["__version__"]
