"""Run a sweep: every configuration of a grid, each computed once, in parallel, resumable.

Work only once: configurations that differ only in device, Flash or DRAM bandwidth share their
cache behaviour, and configurations that differ only in DRAM size share one pass over the trace
(simcore.engine.replay.replay_drams). So the grid is split into *tasks*, one per distinct
(trace, method, density, gamma, policy, bits, ...) combination; a task replays all its DRAM sizes
at once and derives every member's timing (retime).

Safe: the results table (Parquet) is rewritten atomically after each task, so killing a sweep loses
at most the tasks in flight; re-running the same sweep skips the configurations already in it.
"""

from __future__ import annotations

import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from simcore.errors import ConfigError, SimcoreError
from simcore.results import atomic_write_bytes, atomic_write_table
from simcore.sweep.columns import COLUMNS, METRIC_COLUMNS
from simcore.sweep.grid import TIMING_ONLY, Grid, config_key


def _row(index: int, key: str, settings: dict, result=None, error: str | None = None) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(index=index, key=key, status="ok" if error is None else "error", error=error)
    for c in (
        "trace",
        "model",
        "device",
        "dram",
        "method",
        "density",
        "gamma",
        "policy",
        "bits",
        "context",
        "warmup",
        "tokens",
    ):
        if c in settings:
            row[c] = settings[c]
    if result is not None:
        c, t = result.config, result.totals
        sel = c.get("selection") or {}
        row.update(
            trace=c["trace"],
            model=c["model"],
            device=c["device"]["name"],
            dram_bytes=c["dram_bytes"],
            flash_bw_gbps=c["device"]["flash_bw_gbps"],
            dram_bw_gbps=c["device"]["dram_bw_gbps"],
            method=c["method"],
            density=c["density"],
            rho_in=sel.get("rho_in"),
            rho_d=sel.get("rho_d"),
            gamma=c["gamma"],
            policy=c["policy"],
            bits=c["bits"],
            context=c["context"],
            warmup=c["warmup"],
            tokens=t["tokens"],
            t_dram_ms=t["t_dram_ms_steady"],
            t_flash_ms=t["t_flash_ms_steady"],
            t_compute_ms=t["t_compute_ms_steady"],
        )
        for m in METRIC_COLUMNS:
            if m in t and m not in ("t_dram_ms", "t_flash_ms", "t_compute_ms"):
                row[m] = t[m]
    return row


def run_task(task: dict) -> list[dict]:
    """Replay one task (one cache behaviour, several DRAM sizes) and derive its members' rows.
    Runs in a worker process (or a Dask worker): takes and returns plain data."""
    from simcore.engine.replay import ReplayConfig, _device, replay_drams, retime

    rows = []
    try:
        results = replay_drams(ReplayConfig(**{**task["base"], "threads": 1}), task["drams"])
    except SimcoreError as e:
        return [_row(i, k, s, error=str(e)) for i, k, s in task["members"]]
    for index, key, settings in task["members"]:
        r = results[task["drams"].index(settings["dram"])]
        try:
            cfg = ReplayConfig(**{k: v for k, v in settings.items() if k in ReplayConfig.model_fields})
            rows.append(_row(index, key, settings, retime(r, _device(cfg))))
        except SimcoreError as e:
            rows.append(_row(index, key, settings, error=str(e)))
    return rows


def plan_tasks(configs: list[tuple[int, str, dict]]) -> list[dict]:
    """Group configurations (index, key, settings) into tasks that share their cache behaviour."""
    from simcore.device import load_device

    groups: dict[str, dict] = {}
    for index, key, s in configs:
        s = dict(s)
        if s.get("dram") is None:  # the device's default budget: resolve it, as it decides the cache size
            try:
                dev = load_device(s.get("device", "a18"))
            except SimcoreError as e:
                groups[f"error-{key}"] = {"base": s, "drams": [None], "members": [(index, key, s)], "error": str(e)}
                continue
            s["dram"] = f"{int((dev.dram_budget_gb or 0) * 1e9)}B"
        base = {k: v for k, v in s.items() if k not in (*TIMING_ONLY, "dram")}
        base["device"] = s.get("device", "a18")
        gkey = json.dumps({k: v for k, v in base.items() if k != "device"}, sort_keys=True, default=str)
        g = groups.setdefault(gkey, {"base": base, "drams": [], "members": []})
        if s["dram"] not in g["drams"]:
            g["drams"].append(s["dram"])
        g["members"].append((index, key, s))
    return list(groups.values())


def _write(rows: list[dict], out: Path) -> pa.Table:
    rows = sorted(rows, key=lambda r: r["index"])
    table = pa.Table.from_pylist(rows, schema=_schema())
    atomic_write_table(table, out)
    return table


def _schema() -> pa.Schema:
    types = {
        "index": pa.int64(),
        "key": pa.string(),
        "trace": pa.string(),
        "model": pa.string(),
        "device": pa.string(),
        "dram": pa.string(),
        "dram_bytes": pa.int64(),
        "method": pa.string(),
        "policy": pa.string(),
        "context": pa.int64(),
        "warmup": pa.int64(),
        "tokens": pa.int64(),
        "accesses": pa.int64(),
        "hits": pa.int64(),
        "misses": pa.int64(),
        "status": pa.string(),
        "error": pa.string(),
    }
    return pa.schema([pa.field(c, types.get(c, pa.float64())) for c in COLUMNS])


def _finished(out: Path) -> list[dict]:
    if not out.exists():
        return []
    try:
        table = pq.read_table(out)
    except (pa.ArrowException, OSError) as e:
        raise ConfigError(
            f"{out} exists but is not a readable results table ({e}); move it away or pick --out"
        ) from None
    if "key" not in table.column_names or "index" not in table.column_names:
        raise ConfigError(f"{out} is not a simcore sweep table (no key/index columns); move it away or pick --out")
    return table.to_pylist()


def run_sweep(
    grid: Grid,
    out: str | os.PathLike,
    workers: int = 0,
    executor: str = "process",
    scheduler: str | None = None,
    progress: bool = False,
) -> pa.Table:
    """Run every configuration of ``grid`` not already in ``out`` (a Parquet table), writing ``out``
    after each finished task and the resolved grid beside it (``<out>.grid.yaml``). Returns the table.

    Args:
        workers: worker processes (0: one per core; 1: in this process). executor: "process" or "dask"
            (then ``scheduler`` is the address of a running Dask scheduler).
    """
    out = Path(out)
    configs = grid.configurations()
    if not configs:
        raise ConfigError("the grid is empty: give at least one value per swept setting")
    keyed = []
    for i, s in enumerate(configs):
        try:
            keyed.append((i, config_key(s), s))
        except Exception as e:  # pydantic validation of a value
            raise ConfigError(f"configuration {s}: {str(e).splitlines()[0]}") from None
    atomic_write_bytes(out.with_name(out.name + ".grid.yaml"), yaml.safe_dump(grid.to_dict(), sort_keys=False).encode())
    wanted = {k for _, k, _ in keyed}
    rows = [r for r in _finished(out) if r["key"] in wanted]
    done = {r["key"] for r in rows}
    index_of = {k: i for i, k, _ in keyed}
    for r in rows:  # the grid may have grown or been reordered since
        r["index"] = index_of[r["key"]]
    todo = [c for c in keyed if c[1] not in done]
    tasks = plan_tasks(todo)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(keyed), initial=len(done), unit="config", desc="sweep", file=sys.stderr)

    def finished(new_rows: list[dict]) -> None:
        rows.extend(new_rows)
        _write(rows, out)
        if bar is not None:
            bar.update(len(new_rows))

    try:
        for t in [t for t in tasks if "error" in t]:
            finished([_row(i, k, s, error=t["error"]) for i, k, s in t["members"]])
        tasks = [t for t in tasks if "error" not in t]
        if executor == "dask":
            _run_dask(tasks, scheduler, finished)
        elif executor != "process":
            raise ConfigError(f"unknown --executor {executor!r}; use process or dask")
        else:
            n = workers or os.cpu_count() or 1
            if n == 1 or len(tasks) <= 1:
                for t in tasks:
                    finished(run_task(t))
            else:
                with ProcessPoolExecutor(min(n, len(tasks))) as pool:
                    futures = [pool.submit(run_task, t) for t in tasks]
                    try:
                        for f in as_completed(futures):
                            finished(f.result())
                    except BaseException:
                        for f in futures:
                            f.cancel()
                        raise
    finally:
        if bar is not None:
            bar.close()
    return _write(rows, out)


def _run_dask(tasks: list[dict], scheduler: str | None, finished) -> None:
    if not scheduler:
        raise ConfigError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("--executor dask needs the distributed package: pip install 'simcore[dask]'") from None
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler} ({e}); is it running?") from None
    with client:
        futures = [client.submit(run_task, t, pure=False) for t in tasks]
        for f in dask_completed(futures):
            finished(f.result())


def summarise(table: pa.Table) -> str:
    """A short text summary of a sweep table for the terminal."""
    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"{len(rows)} configurations, {len(ok)} ok, {len(rows) - len(ok)} with errors"]
    best = sorted(ok, key=lambda r: -(r["tokens_per_s_steady"] or 0))[:5]
    if best:
        lines.append(
            f"{'method':<8}{'policy':<8}{'density':>8}{'gamma':>7}{'DRAM':>10}{'Flash GB/s':>11}"
            f"{'hit rate':>9}{'tok/s':>9}"
        )
        for r in best:
            lines.append(
                f"{r['method']:<8}{r['policy']:<8}{r['density']:>8.2f}{r['gamma']:>7.2f}"
                f"{r['dram_bytes'] / 1e9:>8.3f}GB{r['flash_bw_gbps']:>11.2f}"
                f"{100 * (r['hit_rate_steady'] or math.nan):>8.1f}%{r['tokens_per_s_steady']:>9.2f}"
            )
    errors = sorted({r["error"] for r in rows if r["status"] != "ok"})
    for e in errors[:3]:
        lines.append(f"error: {e}")
    return "\n".join(lines)
