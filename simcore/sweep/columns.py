"""The columns of a sweep results table: one row per configuration (written by run.py, read by
simcore.report). Kept free of heavy imports.

Besides settings and metrics, each row says which configuration it is and what it was computed from:

- ``index``: in a table as stored, the row's number; in the table ``run_sweep`` returns (one grid's
  rows), the configuration's position in the grid.

- ``config``: a hash of the configuration's settings (what the user asked for). A table holds at most one
  row per ``config``: recomputing a configuration replaces its row.
- ``key``: a hash of the settings *and* of every input the result depends on (the trace's metadata, the
  device file, the ``--pruned`` manifest, the calibration file, the simcore version); a resumed sweep
  reuses a row only when its ``key`` is the one the inputs give now and its status is ``ok``.
- ``inputs``: those inputs' identities as JSON (``simcore.sweep.inputs``), so a number can be traced back.
- ``computed_at``: when the row was computed (UTC); when two rows of one configuration meet (two sweeps
  sharing a table), the later one is kept.
"""

SETTING_COLUMNS = [
    "trace",
    "model",
    "device",
    "dram",
    "dram_bytes",
    "flash_bw_gbps",
    "dram_bw_gbps",
    "flash_model",
    "layout",
    "adapter",
    "method",
    "density",
    "rho_in",
    "rho_d",
    "gamma",
    "policy",
    "bits",
    "context",
    "warmup",
    "tokens",
]
METRIC_COLUMNS = [
    "hit_rate",
    "hit_rate_steady",
    "tokens_per_s",
    "tokens_per_s_steady",
    "flash_bytes_per_token",
    "dram_bytes_per_token",
    "flash_bytes_per_token_steady",
    "dram_bytes_per_token_steady",
    "t_dram_ms",
    "t_flash_ms",
    "t_compute_ms",
    "mlp_density",
    "mass_kept",
    "accesses",
    "hits",
    "misses",
    # the curve model (--flash-model curve; empty under the constant model)
    "tokens_per_s_constant",
    "tokens_per_s_constant_steady",
    "flash_requests_per_token_steady",
    "flash_mean_request_bytes_steady",
    "flash_bytes_read_per_token_steady",
    "read_amplification_steady",
    "flash_effective_gbps_steady",
    # energy, where the device gives pJ per byte
    "energy_mj_per_token_steady",
    "energy_dram_mj_per_token_steady",
    "energy_flash_mj_per_token_steady",
]
IDENTITY_COLUMNS = ["inputs", "computed_at"]
COLUMNS = ["index", "key", "config", *SETTING_COLUMNS, *METRIC_COLUMNS, "status", "error", *IDENTITY_COLUMNS]
