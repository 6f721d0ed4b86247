"""Run a sweep: every configuration of a grid, each computed once, in parallel, resumable.

Work only once: configurations that differ only in device, Flash or DRAM bandwidth share their
cache behaviour, and configurations that differ only in DRAM size share one pass over the trace
(simcore.engine.replay.replay_drams). So the grid is split into *tasks*, one per distinct
(trace, method, density, gamma, policy, bits, ...) combination; a task replays all its DRAM sizes
at once and derives every member's timing (retime).

Keep every valid row: a task first resolves each of its DRAM sizes alone (a memory plan, no trace
read), gives the invalid ones (below the model's resident part) their error, and replays the valid
ones together; a device that cannot be loaded fails only its own configurations. An error of the trace
itself (missing, corrupt) fails every configuration that reads it.

Nothing lost (store.py): finished tasks are appended to the sweep's log and merged into the table
atomically, under a lock, when the sweep starts and ends; killing a sweep loses only the tasks in
flight, and the worker processes end with it. The table keeps the rows of every grid run against it.
A resumed sweep reuses the ``ok`` rows whose key (settings and input files, inputs.py) is unchanged and
computes the rest: new configurations, failed ones, and those whose trace, device file, pruning
manifest or calibration changed.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pyarrow as pa
import yaml

from simcore.errors import ConfigError, SimcoreError
from simcore.finetune.adapters import label as adapter_label
from simcore.finetune.adapters import resident_bytes
from simcore.sweep.columns import COLUMNS, METRIC_COLUMNS
from simcore.sweep.grid import TIMING_ONLY, Grid, config_key, replay_config
from simcore.sweep.inputs import inputs_of, row_key, trace_dir
from simcore.sweep.store import ResultStore, SweepError, now_us, rows_to_table

__all__ = ["SweepError", "plan_tasks", "raise_if_nothing_succeeded", "run_sweep", "run_task", "summarise"]

_SETTINGS_AS_GIVEN = (
    "trace",
    "model",
    "device",
    "dram",
    "flash_model",
    "layout",
    "method",
    "density",
    "gamma",
    "policy",
    "bits",
    "context",
    "warmup",
    "tokens",
)


def _row(index: int, config: str, key: str, inputs: dict, settings: dict, result=None, error=None) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(
        index=index,
        key=key,
        config=config,
        status="ok" if error is None else "error",
        error=error,
        inputs=json.dumps(inputs, sort_keys=True),
        computed_at=now_us(),
    )
    for c in _SETTINGS_AS_GIVEN:
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
            flash_model=c.get("flash_model", "constant"),
            layout=c.get("layout"),
            adapter=adapter_label(c.get("lora")),
            t_dram_ms=t["t_dram_ms_steady"],
            t_flash_ms=t["t_flash_ms_steady"],
            t_compute_ms=t["t_compute_ms_steady"],
        )
        for m in METRIC_COLUMNS:
            if m in t and m not in ("t_dram_ms", "t_flash_ms", "t_compute_ms"):
                row[m] = t[m]
    return row


def _trace_meta(settings: dict):
    """The metadata a trace records (its trace.json only, no layer file), or None when unreadable;
    replay_drams then reports what is wrong with the trace."""
    from simcore.trace.format import TraceMeta

    try:
        return TraceMeta.model_validate_json((trace_dir(settings) / "trace.json").read_bytes())
    except Exception:  # any problem is replay_drams' to report, in its words
        return None


def run_task(task: dict) -> list[dict]:
    """Replay one task (one cache behaviour, several DRAM sizes) and derive its members' rows.
    Runs in a worker process (or a Dask worker): takes and returns plain data.

    ``task``: {"base": settings without device/bandwidths/dram, "drams": [size, ...], "members":
    [(index, config, settings), ...]}. Each row's key is computed here, from the input files as they are
    when the task runs."""
    from simcore.engine.replay import replay_drams
    from simcore.engine.settings import resolve_device, resolve_setting
    from simcore.engine.throughput import retime

    base = replay_config({**task["base"], "threads": 1})
    drams = task["drams"]
    errors: dict = {}
    meta = _trace_meta(task["base"])
    if meta is not None:  # find the sizes that cannot work before replaying the others
        aux = resident_bytes(meta.extra.get("lora"))  # a trace's unmerged adapters take DRAM too
        for d in drams:
            try:
                resolve_setting(base.model_copy(update={"dram": d}), meta.model, [d], aux_bytes=aux)
            except SimcoreError as e:
                errors[d] = str(e)
    valid = [d for d in drams if d not in errors]
    results = {}
    if valid:
        try:
            results = dict(zip(valid, replay_drams(base, valid)))
        except SimcoreError as e:  # the trace itself, or a setting every size shares
            errors.update(dict.fromkeys(valid, str(e)))
    memo: dict = {}
    rows = []
    for index, config, settings in task["members"]:
        inputs = inputs_of(settings, memo)
        key = row_key(config, inputs)
        dram = settings.get("dram")
        if dram in errors:
            rows.append(_row(index, config, key, inputs, settings, error=errors[dram]))
            continue
        try:
            rows.append(
                _row(
                    index, config, key, inputs, settings, retime(results[dram], resolve_device(replay_config(settings)))
                )
            )
        except SimcoreError as e:
            rows.append(_row(index, config, key, inputs, settings, error=str(e)))
    return rows


def plan_tasks(configs: list[tuple[int, str, dict]]) -> list[dict]:
    """Group configurations (index, config, settings) into tasks that share their cache behaviour.

    A configuration whose device (with its bandwidth overrides) cannot be loaded becomes a task of its
    own with an ``error``, so that it fails alone; a missing DRAM size is the device's default budget."""
    from simcore.engine.settings import resolve_device

    groups: dict[str, dict] = {}
    for index, config, s in configs:
        s = dict(s)
        try:
            dev = resolve_device(replay_config(s))
        except SimcoreError as e:
            groups[f"error-{config}"] = {
                "base": s,
                "drams": [s.get("dram")],
                "members": [(index, config, s)],
                "error": str(e),
            }
            continue
        if s.get("flash_model") == "curve" and s.get("flash_bw") is not None:  # timing-only: replay would not see it
            groups[f"error-{config}"] = {
                "base": s,
                "drams": [s.get("dram")],
                "members": [(index, config, s)],
                "error": f"--flash-bw {s['flash_bw']} sets a constant Flash bandwidth, which --flash-model curve "
                "replaces by the device's read curve; drop one of them",
            }
            continue
        if s.get("dram") is None and dev.dram_budget_gb:  # it decides the cache size: resolve it
            s["dram"] = f"{int(dev.dram_budget_gb * 1e9)}B"
        timing = TIMING_ONLY if s.get("flash_model") != "curve" else tuple(a for a in TIMING_ONLY if a != "device")
        base = {k: v for k, v in s.items() if k not in (*timing, "dram")}
        # no DRAM size and no default: replay's error names the device, so keep it with its own device
        gkey = json.dumps([base, s.get("device") if s.get("dram") is None else None], sort_keys=True, default=str)
        base["device"] = s.get("device", "a18")  # a loadable device of the group (timing is redone per member)
        g = groups.setdefault(gkey, {"base": base, "drams": [], "members": []})
        if s.get("dram") not in g["drams"]:
            g["drams"].append(s.get("dram"))
        g["members"].append((index, config, s))
    return list(groups.values())


# ---------------------------------------------------------------------- workers end with their parent

PR_SET_PDEATHSIG = 1
"""prctl option (linux/prctl.h): the signal this process gets when its parent thread exits."""


def _exit_with_parent(parent: int) -> None:
    """ProcessPoolExecutor initializer: end this worker when the sweep's process is gone, even when it
    was killed with SIGKILL and could not shut its pool down. On Linux the kernel sends SIGKILL
    (prctl PR_SET_PDEATHSIG); everywhere, a daemon thread exits when the parent process changes."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
            prctl.restype = ctypes.c_int
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the thread below still ends the worker
    ppid = os.getppid()

    def parent_alive() -> bool:
        if os.getppid() != ppid:
            return False
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except OSError:  # exists, but another user's: pid reused
            return False
        return True

    if not parent_alive():  # gone before the prctl took effect
        os._exit(1)

    def watch() -> None:
        while parent_alive():
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="simcore-parent-watch", daemon=True).start()


# ---------------------------------------------------------------------- the sweep


GRID_HEADER = (
    "# A grid run against the results table beside this folder (one file per grid, named by its hash);\n"
    "# `simcore sweep --grid THIS_FILE --out TABLE` runs it again.\n"
)


def _check_text(name: str, value) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(value) if os.name == "posix" else value.encode("utf-8", "replace")
            raise ConfigError(
                f"{name} {shown!r} is not valid UTF-8 (a file name with undecodable bytes?); rename it"
            ) from None


def run_sweep(
    grid: Grid,
    out: str | os.PathLike,
    workers: int = 0,
    executor: str = "process",
    scheduler: str | None = None,
    progress: bool = False,
) -> pa.Table:
    """Run every configuration of ``grid`` whose ok row is not already in ``out`` (a Parquet table that
    may hold rows of other grids, which are kept), and return the grid's rows in grid order (``index``:
    position in the grid). The grid is saved beside the table as ``<out>.grids/<hash>.yaml``.

    The returned table's schema metadata ``simcore_sweep`` (JSON) counts the configurations computed now
    and reused, the rows the whole table holds, and the seconds spent writing results.

    Args:
        workers: worker processes (0: one per core; 1: in this process). executor: "process" or "dask"
            (then ``scheduler`` is the address of a running Dask scheduler).
    Raises:
        ConfigError for a bad grid or option, SweepError when results cannot be written or a worker died.
    """
    t_start = time.perf_counter()
    if executor not in ("process", "dask"):
        raise ConfigError(f"unknown --executor {executor!r}; use process or dask")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"--workers must be 0 (one per core) or a positive number of processes, got {workers!r}")
    if executor == "dask" and not scheduler:
        raise ConfigError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    _check_text("--out", str(out))
    out = Path(out)
    configs = grid.configurations()
    if not configs:
        raise ConfigError("the grid is empty: give at least one value per swept setting")
    for s in configs:
        for name, value in s.items():
            _check_text(f"--{name.replace('_', '-')}", value)
    memo: dict = {}
    keyed = []  # (index, config, key, settings)
    for i, s in enumerate(configs):
        c = config_key(s)
        keyed.append((i, c, row_key(c, inputs_of(s, memo)), s))
    order = [c for _, c, _, _ in keyed]

    store = ResultStore(out)
    grid_yaml = GRID_HEADER + yaml.safe_dump(grid.to_dict(), sort_keys=False)
    existing = store.start(order, grid.digest(), grid_yaml.encode())
    reused = {c for _, c, k, _ in keyed if c in existing and existing[c]["key"] == k and existing[c]["status"] == "ok"}
    todo = [(i, c, s) for i, c, _, s in keyed if c not in reused]
    bar = None

    def finished(new_rows: list[dict]) -> None:
        store.append(new_rows)
        if bar is not None:
            bar.update(len(new_rows))

    try:
        tasks = plan_tasks(todo)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(keyed), initial=len(reused), unit="config", desc="sweep", file=sys.stderr)
        for t in [t for t in tasks if "error" in t]:
            finished(
                [
                    _row(i, c, row_key(c, inputs_of(s, memo)), inputs_of(s, memo), s, error=t["error"])
                    for i, c, s in t["members"]
                ]
            )
        tasks = [t for t in tasks if "error" not in t]
        if executor == "dask":
            _run_dask(tasks, scheduler, finished)
        else:
            _run_processes(tasks, workers or os.cpu_count() or 1, finished)
    finally:
        if bar is not None:
            bar.close()
        rows = store.finish(order)
    mine = [{**rows[c], "index": i} for i, c, _, _ in keyed if c in rows]
    table = rows_to_table(mine)
    stats = {
        "configurations": len(keyed),
        "computed": len(todo),
        "reused": len(reused),
        "table_rows": len(rows),
        "write_s": store.write_s,
        "wall_s": time.perf_counter() - t_start,
        "grid_file": str(store.grid_file(grid.digest())),
    }
    return table.replace_schema_metadata({"simcore_sweep": json.dumps(stats)})


def _run_processes(tasks: list[dict], n: int, finished) -> None:
    if n == 1 or len(tasks) <= 1:
        for t in tasks:
            finished(run_task(t))
        return
    with ProcessPoolExecutor(min(n, len(tasks)), initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(run_task, t) for t in tasks]
        try:
            for f in as_completed(futures):
                finished(f.result())
        except BrokenProcessPool:
            raise SweepError(
                "a worker process died (out of memory? killed?); the finished tasks are saved: re-run the same "
                "sweep to resume, perhaps with fewer --workers"
            ) from None
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_dask(tasks: list[dict], scheduler: str, finished) -> None:
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


def sweep_stats(table: pa.Table) -> dict:
    """The ``simcore_sweep`` metadata run_sweep attaches to the table it returns ({} when absent)."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"simcore_sweep")
    return json.loads(raw) if raw else {}


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summarise(table: pa.Table) -> str:
    """A short text summary of a grid's rows (as run_sweep returns them) for the terminal: ok and
    failed counts first, then the fastest configurations and the most common errors."""
    rows = table.to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    stats = sweep_stats(table)
    head = f"{_n(len(rows), 'configuration')}: {len(ok)} ok, {len(rows) - len(ok)} failed"
    if stats:
        head += (
            f" ({stats['computed']} computed now, {stats['reused']} reused; "
            f"the table holds {_n(stats['table_rows'], 'row')})"
        )
    lines = [head]
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
    errors = Counter(r["error"] for r in rows if r["status"] != "ok")
    for e, n in errors.most_common(3):
        lines.append(f"error ({n}x): {e}")
    if len(errors) > 3:
        lines.append(f"... and {len(errors) - 3} other errors (see the table's error column)")
    return "\n".join(lines)


def raise_if_nothing_succeeded(table: pa.Table) -> None:
    """SweepError when none of a grid's rows is ok (the CLI then exits with status 2)."""
    rows = table.to_pylist()
    if rows and not any(r["status"] == "ok" for r in rows):
        common, n = Counter(r["error"] for r in rows).most_common(1)[0]
        raise SweepError(
            f"none of the {_n(len(rows), 'configuration')} succeeded; "
            + (f"all failed with: {common}" if n == len(rows) else f"most common error ({n}x): {common}")
        )
