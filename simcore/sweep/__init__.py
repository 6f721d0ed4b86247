"""Sweeps: grids of replays over DRAM x Flash x policy x gamma x density (grid.py, run.py)."""

from simcore.sweep.grid import AXES, Grid, parse_axis
from simcore.sweep.run import run_sweep

__all__ = ["AXES", "Grid", "parse_axis", "run_sweep"]
