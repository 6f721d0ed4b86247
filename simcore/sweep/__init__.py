"""Sweeps: grids of replays over DRAM x Flash x policy x gamma x density, kept in one results table.

grid.py expands a grid into configurations; inputs.py names what each result depends on; run.py plans
and runs the tasks; store.py keeps the table (append logs, merged under a lock)."""

from simcore.sweep.grid import AXES, Grid, parse_axis
from simcore.sweep.run import SweepError, run_sweep, summarise, sweep_stats

__all__ = ["AXES", "Grid", "SweepError", "parse_axis", "run_sweep", "summarise", "sweep_stats"]
