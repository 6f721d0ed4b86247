"""Run a frontier: a sweep of replays for throughput and the evals it needs for perplexity, joined per
configuration, then the tables and plots of accuracy against throughput.

    from simcore.frontier import run_frontier
    from simcore.sweep import Grid
    grid = Grid({"method": ["dip", "dip-ca"], "density": [0.4, 0.5, 0.6], "dram": ["48MB", "64MB"],
                 "policy": ["lfu", "belady"], "gamma": [0.2]}, {"trace": "traces/smollm2-135m"})
    result = run_frontier(grid, "results/frontier", tokens=256)

Steps: (1) the grid, with ``dense`` added as the reference when it lacks it; (2) ``simcore.sweep.run_sweep``
over it on the trace, into ``<out>/sweep.parquet`` (resumable and parallel on its own); (3) one eval per
distinct eval key (``simcore.frontier.evals``: the reuse rule) among the configurations whose replay
succeeded, skipping those already in ``<out>/evals.jsonl``; (4) ``frontier.parquet`` (one row per
configuration), ``summary.md``, the Pareto plots and ``frontier.json`` (settings and counts), each written
atomically. The output directory is locked while a frontier runs in it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from simcore.errors import ConfigError, SimcoreError
from simcore.frontier.budget import DEFAULT_RELATIVE, Budget, parse_budgets
from simcore.frontier.evals import (
    LOG_NAME,
    EvalLog,
    EvalSpec,
    eval_identity,
    eval_key,
    eval_settings,
    mask_identity,
    model_identity,
    run_evals,
)
from simcore.sweep.grid import Grid, config_key, replay_config

try:
    import fcntl
except ImportError:  # Windows: nothing is locked
    fcntl = None

FRONTIER_FIELDS = [
    pa.field("perplexity", pa.float64()),
    pa.field("dense_perplexity", pa.float64()),
    pa.field("perplexity_increase", pa.float64()),
    pa.field("eval_key", pa.string()),
    pa.field("eval_reused", pa.bool_()),
    pa.field("cache_dependent", pa.bool_()),
]
"""Columns a frontier adds to the sweep's (simcore/sweep/columns.py): the perplexity of the configuration's
eval, dense's, their ratio minus 1, the eval's key, whether the configuration reuses the eval of another one
(true for every configuration of an eval key but the first in grid order: its masks do not depend on what
differs between them), and whether the masks depend on the cache."""

TABLE_NAME = "frontier.parquet"
SUMMARY_NAME = "summary.md"
SETTINGS_NAME = "frontier.json"
SWEEP_NAME = "sweep.parquet"
LOCK_NAME = ".frontier.lock"


@dataclass
class FrontierResult:
    """What a frontier computed: the rows of ``frontier.parquet`` (in grid order), dense's perplexity,
    counts and times (``stats``) and the paths written."""

    table: pa.Table
    dense_perplexity: float | None
    stats: dict
    paths: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        return self.table.to_pylist()


def _check_workers(value, option: str, zero_ok: bool) -> None:
    low = 0 if zero_ok else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "0 (one per core) or a positive number" if zero_ok else "a positive number"
        raise ConfigError(f"{option} must be {what} of processes, got {value!r}")


def frontier_grid(grid: Grid, model: str) -> tuple[Grid, list[str]]:
    """``grid`` with a reference method (one of constant density 1: dense) among its methods, and its trace
    fixed (``traces/<model>`` when it names none). Returns the grid and notes for the summary."""
    from simcore.engine.settings import ReplayConfig, resolve_trace_path
    from simcore.report.data import is_reference

    axes, fixed, notes = dict(grid.axes), dict(grid.fixed), []
    methods = list(axes.get("method") or [fixed.pop("method", ReplayConfig.model_fields["method"].default)])
    if not any(is_reference(m) for m in methods):
        methods = ["dense", *methods]
        notes.append("`dense` was added to the grid's methods: it is the reference every budget is measured from")
    axes["method"] = methods
    if fixed.get("trace") is None:
        fixed["trace"] = str(resolve_trace_path(None, fixed.get("model") or model))
    return Grid(axes, fixed), notes


def trace_shape(trace: Path):
    """The model shape a trace records; the trace's own error (TraceError) when it cannot be read."""
    from simcore.trace.format import TraceMeta, TraceReader

    try:
        return TraceMeta.model_validate_json((trace / "trace.json").read_bytes()).model
    except Exception:  # TraceReader says what is wrong, in its words
        TraceReader(trace)
        raise ConfigError(f"cannot read the model shape of trace {trace}; re-create it with `simcore trace`") from None


@contextlib.contextmanager
def _locked(out: Path):
    """Hold ``<out>/.frontier.lock`` (flock, exclusive) so that two frontiers never write one directory."""
    try:
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise ConfigError(f"cannot write into --out {out}: {e.strerror}") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ConfigError(
                    f"another simcore frontier is writing {out} (it holds {out / LOCK_NAME}); wait for it to end "
                    "or give another --out"
                ) from None
        yield
    finally:
        os.close(fd)


def _out_dir(out: str | os.PathLike) -> Path:
    from simcore.results import output_error

    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--out {p} is a file; give a directory for the frontier's outputs")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(p / TABLE_NAME, e, "frontier") from None
    if not os.access(p, os.W_OK):
        raise ConfigError(f"cannot write --out {p}: permission denied")
    return p


@dataclass
class FrontierPlan:
    """What a frontier will compute, before anything runs: its grid (dense added), the eval settings shared by
    every eval (``spec``), and each configuration's eval key (``keys``: config -> (key, cache dependent)) or the
    reason it has none (``errors``: the settings cannot be resolved; the sweep then gives its row the error)."""

    grid: Grid
    notes: list[str]
    spec: EvalSpec
    configs: list[tuple[str, dict]]  # (config key, settings) in grid order
    keys: dict[str, tuple[str, bool]]
    errors: dict[str, str]
    model_obj: Any = None
    tokenizer: Any = None

    def jobs(self, ok: set[str] | None = None) -> list[dict]:
        """One eval job per distinct key among the configurations in ``ok`` (all when None), run with the
        settings of the first of them in grid order: ``{"key", "config", "settings"}``."""
        jobs: dict[str, dict] = {}
        for c, s in self.configs:
            if c in self.keys and (ok is None or c in ok):
                k = self.keys[c][0]
                jobs.setdefault(k, {"key": k, "config": c, "settings": eval_settings(s)})
        return list(jobs.values())


def plan_frontier(
    grid: Grid,
    *,
    model: str | Any | None = None,
    model_path: str | None = None,
    tokenizer: Any = None,
    name: str | None = None,
    text: str | None = None,
    dataset: str | None = None,
    tokens: int = 1024,
    seq_len: int = 256,
    offset: int = 0,
    calib_tokens: int = 512,
    calib_offset: int = 8192,
) -> FrontierPlan:
    """Check a frontier's settings and decide its evals (the reuse rule, simcore/frontier/evals.py) without
    loading the model or reading more than the trace's metadata. Arguments as :func:`run_frontier`'s."""
    from simcore.calibration import TextUse, text_sha256
    from simcore.engine.settings import DEFAULT_MODEL, resolve_setting
    from simcore.eval.evaluate import check_calibration_overlap, check_counts
    from simcore.sweep.inputs import calibration_digest, inputs_of
    from simcore.trace.text import load_text

    check_counts(tokens, seq_len, offset, calib_tokens, calib_offset)
    model_obj = None
    if model is None or isinstance(model, str):
        mname = model or grid.fixed.get("model") or DEFAULT_MODEL
        if tokenizer is not None:
            raise ConfigError("tokenizer= goes with a loaded model; a model given by name brings its own")
    else:
        model_obj = model
        if tokenizer is None:
            raise ConfigError("run_frontier(model=<loaded model>) needs tokenizer=")
        cfg = getattr(model, "config", None)
        mname = name or str(getattr(cfg, "name_or_path", "") or getattr(cfg, "model_type", "model"))
    if grid.fixed.get("pruned") is not None:
        raise ConfigError(
            "simcore frontier does not take --pruned yet (which model is the dense reference would be ambiguous); "
            "run `simcore eval --pruned` and `simcore sweep` for a statically pruned model"
        )
    spec = EvalSpec(mname, model_path, text, dataset, tokens, seq_len, offset, calib_tokens, calib_offset)
    source = load_text(text=text, dataset=dataset)
    shared = eval_identity(spec, model_identity(spec, model_obj), source)
    use = TextUse(source.name, text_sha256(source.text), offset, offset + tokens)  # the evals' tokens
    grid, notes = frontier_grid(grid, mname)
    trace = Path(grid.fixed["trace"])
    shape = trace_shape(trace)
    if shape.name != mname:
        raise ConfigError(
            f"trace {trace} records model {shape.name!r} but the evals run {mname!r}: throughput and perplexity "
            f"must come from one model; give --trace of a trace of {mname} (simcore trace --model {mname}) or "
            f"--model {shape.name}"
        )
    configs = [(config_key(s), s) for s in grid.configurations()]
    memo: dict = {}
    keys: dict[str, tuple[str, bool]] = {}
    errors: dict[str, str] = {}
    for c, s in configs:
        cfg = replay_config(s)
        try:
            setting = resolve_setting(cfg, shape, [cfg.dram], use)
        except SimcoreError as e:  # belady with dip-ca, a DRAM size below the resident part, ...
            errors[c] = str(e)
            continue
        if any(k.mode == "threshold" for k in setting.selection.kinds):  # cats: thresholds from this text
            check_calibration_overlap(tokens, offset, calib_tokens, calib_offset)
        inputs = dict(inputs_of(s, memo), calibration=calibration_digest(mname, use.sha256, s.get("calibration")))
        keys[c] = (eval_key(shared, mask_identity(setting, cfg, inputs)), bool(setting.cache_dependent))
    return FrontierPlan(grid, notes, spec, configs, keys, errors, model_obj, tokenizer)


def run_frontier(
    grid: Grid,
    out: str | os.PathLike,
    *,
    model: str | Any | None = None,
    model_path: str | None = None,
    tokenizer: Any = None,
    name: str | None = None,
    text: str | None = None,
    dataset: str | None = None,
    tokens: int = 1024,
    seq_len: int = 256,
    offset: int = 0,
    calib_tokens: int = 512,
    calib_offset: int = 8192,
    thresholds: tuple[float, ...] | list[float] | str | None = DEFAULT_RELATIVE,
    abs_thresholds: tuple[float, ...] | list[float] | str | None = (),
    workers: int = 1,
    sweep_workers: int = 0,
    executor: str = "process",
    scheduler: str | None = None,
    progress: bool = False,
) -> FrontierResult:
    """Throughput and perplexity of every configuration of ``grid``, and the tables and plots that compare
    methods at equal accuracy, written into the directory ``out``.

    Args:
        grid: a sweep grid (``simcore.sweep.Grid``); ``dense`` is added when it has no reference method; its
            trace (``trace``, else ``traces/<model>``) must record the evaluated model.
        model: the evaluated model: an alias, Hugging Face id or path (default: the grid's ``model``, else
            smollm2-135m), loaded offline once per process; or a loaded transformers model (then give
            ``tokenizer``; ``name`` defaults to the name a trace of it records).
        text, dataset, tokens, seq_len, offset, calib_tokens, calib_offset: the eval's text and tokens, as
            ``simcore eval`` takes them.
        thresholds: relative budgets in percent over dense (default +1, +2.5, +5, +10 %); abs_thresholds:
            absolute budgets in perplexity points. Lists of numbers or comma strings.
        workers: processes for the evals (each loads the model; default 1: here). sweep_workers: processes
            for the replays (0: one per core). executor "dask" runs both on the Dask scheduler ``scheduler``.
        progress: progress bars on stderr.
    Returns a FrontierResult. Raises ConfigError (one line) for anything the user can fix; an eval that
    fails stops the frontier (the finished evals stay logged, and a re-run resumes).
    """
    from simcore.report.data import is_reference
    from simcore.sweep.run import run_sweep, sweep_stats

    t_start = time.perf_counter()
    _check_workers(workers, "--workers", zero_ok=False)
    _check_workers(sweep_workers, "--sweep-workers", zero_ok=True)
    if executor not in ("process", "dask"):
        raise ConfigError(f"unknown --executor {executor!r}; use process or dask")
    if executor == "dask" and not scheduler:
        raise ConfigError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    budgets = _budgets(thresholds, True, "--thresholds") + _budgets(abs_thresholds, False, "--abs-thresholds")
    plan = plan_frontier(
        grid,
        model=model,
        model_path=model_path,
        tokenizer=tokenizer,
        name=name,
        text=text,
        dataset=dataset,
        tokens=tokens,
        seq_len=seq_len,
        offset=offset,
        calib_tokens=calib_tokens,
        calib_offset=calib_offset,
    )
    grid, notes, spec = plan.grid, plan.notes, plan.spec
    out = _out_dir(out)

    with _locked(out):
        t0 = time.perf_counter()
        sweep_table = run_sweep(
            grid, out / SWEEP_NAME, workers=sweep_workers, executor=executor, scheduler=scheduler, progress=progress
        )
        sweep_s = time.perf_counter() - t0
        by_config = {r["config"]: r for r in sweep_table.to_pylist()}
        keys = plan.keys
        # the evals: one per key, among the configurations whose replay succeeded
        jobs = {j["key"]: j for j in plan.jobs({c for c, r in by_config.items() if r["status"] == "ok"})}
        log = EvalLog(out / LOG_NAME)
        done = {k: r for k, r in log.read().items() if k in jobs}
        todo = [j for k, j in jobs.items() if k not in done]
        ran: list[dict] = []
        bar = None
        if progress and jobs:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), initial=len(done), unit="eval", desc="frontier evals", file=sys.stderr)

        def finished(record: dict) -> None:
            log.append(record)
            done[record["key"]] = record
            ran.append(record)
            if bar is not None:
                bar.update(1)

        t0 = time.perf_counter()
        try:
            run_evals(
                todo,
                spec,
                finished,
                model_obj=plan.model_obj,
                tokenizer=plan.tokenizer,
                workers=workers,
                executor=executor,
                scheduler=scheduler,
            )
        finally:
            if bar is not None:
                bar.close()
            log.close()
        evals_s = time.perf_counter() - t0

        rows = []
        dense = next(
            (
                done[keys[c][0]]["perplexity"]
                for c, r in by_config.items()
                if c in keys and is_reference(r["method"]) and keys[c][0] in done
            ),
            None,
        )
        for r in by_config.values():
            r = dict(r)
            c = r["config"]
            k, dependent = keys.get(c, (None, None))
            rec = done.get(k) if k is not None else None
            ppl = rec["perplexity"] if rec is not None else None
            r.update(
                perplexity=ppl,
                dense_perplexity=dense,
                perplexity_increase=(ppl / dense - 1) if ppl is not None and dense else None,
                eval_key=k,
                eval_reused=(jobs[k]["config"] != c) if rec is not None else None,
                cache_dependent=dependent,
            )
            if r["status"] == "ok" and rec is None:
                r.update(status="error", error=plan.errors.get(c, "no eval result for this configuration"))
            rows.append(r)
        from simcore.sweep.store import SCHEMA

        schema = pa.schema(list(SCHEMA) + FRONTIER_FIELDS)
        table = pa.Table.from_pylist(rows, schema=schema)
        n_dep = sum(keys[j["config"]][1] for j in jobs.values())
        stats = {
            "configurations": len(plan.configs),
            "ok": sum(r["status"] == "ok" for r in rows),
            "failed": sum(r["status"] != "ok" for r in rows),
            "evals": len(jobs),
            "evals_cache_dependent": n_dep,
            "evals_run": len(ran),
            "evals_from_log": len(jobs) - len(ran),
            "rows_reusing_an_eval": sum(bool(r["eval_reused"]) for r in rows),
            "eval_s": sum(rec["wall_s"] for rec in ran),
            "model_load_s": sum(rec.get("load_s", 0.0) for rec in ran),
            "evals_wall_s": evals_s,
            "sweep_s": sweep_s,
            "sweep_computed": sweep_stats(sweep_table).get("computed"),
            "sweep_reused": sweep_stats(sweep_table).get("reused"),
        }
        paths = write_outputs(out, table, dense, budgets, grid, spec, stats, notes, t_start)
    return FrontierResult(table.replace_schema_metadata({"simcore_frontier": json.dumps(stats)}), dense, stats, paths)


def _budgets(values, relative: bool, option: str) -> list[Budget]:
    if values is None:
        return []
    if isinstance(values, str):
        return parse_budgets(values, relative, option)
    return parse_budgets(",".join(f"{float(v):g}" for v in values), relative, option)


def write_outputs(
    out: Path,
    table: pa.Table,
    dense: float | None,
    budgets: list[Budget],
    grid: Grid,
    spec: EvalSpec,
    stats: dict,
    notes: list[str],
    t_start: float,
) -> list[Path]:
    """Write frontier.parquet, the Pareto plots, summary.md and frontier.json atomically; remove Pareto plots
    an earlier run left that this one did not draw. Returns the paths written (summary and settings last)."""
    from simcore.frontier.plots import PLOT_GLOB, pareto_plots
    from simcore.frontier.summary import summary_markdown
    from simcore.results import atomic_write_bytes, atomic_write_table, strict_json

    rows = table.to_pylist()
    written = [out / TABLE_NAME]
    atomic_write_table(table, out / TABLE_NAME)
    plots = pareto_plots(rows, budgets, dense)
    for p in plots:
        atomic_write_bytes(out / p.name, p.png())
        p.figure.clear()
        written.append(out / p.name)
    for stale in out.glob(PLOT_GLOB):
        if stale not in written:
            stale.unlink(missing_ok=True)
    stats["wall_s"] = time.perf_counter() - t_start
    atomic_write_bytes(out / SUMMARY_NAME, summary_markdown(rows, dense, budgets, stats, notes, spec, plots).encode())
    written.append(out / SUMMARY_NAME)
    settings = {
        "grid": grid.to_dict(),
        "eval": asdict(spec),
        "budgets": [{"value": b.value, "relative": b.relative} for b in budgets],
        "dense_perplexity": dense if dense is None or math.isfinite(dense) else None,
        "stats": stats,
    }
    atomic_write_bytes(out / SETTINGS_NAME, strict_json(settings, indent=2, default=str).encode())
    written.append(out / SETTINGS_NAME)
    return written


__all__ = ["FRONTIER_FIELDS", "FrontierPlan", "FrontierResult", "frontier_grid", "plan_frontier", "run_frontier"]
