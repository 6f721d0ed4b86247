"""The columns of a sweep results table: one row per configuration (written by run.py, read by
simcore.report). Kept free of heavy imports."""

SETTING_COLUMNS = [
    "trace",
    "model",
    "device",
    "dram",
    "dram_bytes",
    "flash_bw_gbps",
    "dram_bw_gbps",
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
]
COLUMNS = ["index", "key", *SETTING_COLUMNS, *METRIC_COLUMNS, "status", "error"]
