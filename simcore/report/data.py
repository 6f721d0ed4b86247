"""The sweep results table as the report sees it: loaded, checked, joined with perplexities, and sliced.

A results table has one row per configuration (settings, metrics, ``status``); an eval table gives a
perplexity per (model, method, density[, gamma]). Everything here works on plain lists of dicts: a sweep
has hundreds of rows, not millions, and the report needs no data-frame library.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from simcore import methods
from simcore.errors import ConfigError
from simcore.methods.base import Display
from simcore.plugins import is_path
from simcore.sweep.columns import METRIC_COLUMNS, SETTING_COLUMNS

# the sweep's columns that the report reads (simcore/sweep/columns.py is the one definition)
SETTINGS = tuple(c for c in SETTING_COLUMNS if c not in ("dram", "warmup", "tokens"))
METRICS = tuple(
    c
    for c in METRIC_COLUMNS
    if c
    not in ("flash_bytes_per_token_steady", "dram_bytes_per_token_steady", "t_compute_ms", "accesses", "hits", "misses")
)
# columns added with the curve model: read where the table has them (older tables do not)
OPTIONAL = ("flash_model", "layout", "adapter") + tuple(
    c for c in METRIC_COLUMNS if c.startswith(("tokens_per_s_constant", "flash_", "read_", "energy_"))
)
SETTINGS = tuple(c for c in SETTINGS if c not in OPTIONAL)
METRICS = tuple(c for c in METRICS if c not in OPTIONAL)
REQUIRED = SETTINGS + METRICS + ("key", "status", "error")
EVAL_REQUIRED = ("model", "method", "density", "perplexity")

# What one plot holds fixed: the workload and hardware besides DRAM size ("scenario").
SCENARIO = ("trace", "model", "device", "flash_bw_gbps", "dram_bw_gbps", "bits", "context", "flash_model", "layout")
POLICY_ORDER = ("lfu", "lru", "belady", "none")
ORACLE_POLICIES = ("belady",)
TOL = 1e-6
TPS = "tokens_per_s_steady"


@dataclass
class ReportData:
    """The ok rows of a results table (``gamma`` null read as 1.0, ``perplexity`` joined or None)."""

    rows: list[dict]
    source: str
    n_total: int
    errors: list[dict]
    has_eval: bool = False
    baseline: dict[str, float] = field(default_factory=dict)  # model -> reference (dense) perplexity
    notes: list[str] = field(default_factory=list)


def _read_table(path: Path, what: str, csv_ok: bool) -> pa.Table:
    if not path.exists():
        raise ConfigError(f"{what} {str(path)!r} does not exist; give the path of a Parquet file")
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory; give the path of a Parquet file")
    try:
        with open(path, "rb") as f:  # a file object: Arrow cannot open a path that is not UTF-8
            if csv_ok and path.suffix.lower() in (".csv", ".txt"):
                import pyarrow.csv as pcsv

                return pcsv.read_csv(f)
            import pyarrow.parquet as pq

            return pq.read_table(f)
    except (pa.ArrowException, OSError) as e:
        kind = "a Parquet or CSV file" if csv_ok else "a Parquet file"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot read {what} {str(path)!r} as {kind}: {first}") from None


def _check_columns(table: pa.Table, required, what: str, hint: str) -> None:
    missing = [c for c in required if c not in table.column_names]
    if missing:
        listed = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ConfigError(f"{what} lacks the column(s) {listed}; {hint}")


def load_results(results: str | os.PathLike | pa.Table) -> ReportData:
    """Read and check a sweep results table (path to Parquet, or a pyarrow Table).

    Raises ConfigError (one line) for a missing or unreadable file, missing columns or no ok rows.
    """
    if isinstance(results, pa.Table):
        table, source = results, "(in-memory table)"
    else:
        path = Path(results)
        table, source = _read_table(path, "results table", csv_ok=False), str(path)
    _check_columns(table, REQUIRED, f"results table {source}", "is it the output of `simcore sweep`?")
    present = [c for c in OPTIONAL if c in table.column_names]
    all_rows = table.select(list(REQUIRED) + present).to_pylist()
    for r in all_rows:
        for c in OPTIONAL:
            r.setdefault(c, None)
        r["flash_model"] = r["flash_model"] or "constant"
    ok = [r for r in all_rows if r["status"] == "ok"]
    errors = [r for r in all_rows if r["status"] != "ok"]
    if not ok:
        raise ConfigError(
            f"results table {source} has no rows with status 'ok' ({len(all_rows)} rows, all failed or empty)"
        )
    for r in ok:
        if r["gamma"] is None or (isinstance(r["gamma"], float) and math.isnan(r["gamma"])):
            r["gamma"] = 1.0
        if r["mlp_density"] is None:
            r["mlp_density"] = r["density"]
        r["perplexity"] = None
    return ReportData(rows=ok, source=source, n_total=len(all_rows), errors=errors)


def load_eval(path: str | os.PathLike) -> list[dict]:
    """Read an eval table (Parquet or CSV): model, method, density, [gamma], perplexity."""
    path = Path(path)
    table = _read_table(path, "eval table", csv_ok=True)
    _check_columns(table, EVAL_REQUIRED, f"eval table {str(path)!r}", "it needs model, method, density, perplexity")
    cols = list(EVAL_REQUIRED) + (["gamma"] if "gamma" in table.column_names else [])
    rows = table.select(cols).to_pylist()
    for r in rows:
        r.setdefault("gamma", None)
        if r["perplexity"] is None:
            raise ConfigError(f"eval table {str(path)!r} has a row without perplexity: {r}")
    return rows


def _close(a, b) -> bool:
    return a is not None and b is not None and abs(float(a) - float(b)) <= TOL


def join_eval(data: ReportData, evals: list[dict]) -> None:
    """Set ``row["perplexity"]`` from the eval table, matching (model, method, density, gamma).

    Rows of a reference method (:func:`is_reference`: dense) match its eval row whatever their density, and
    that eval row is the model's baseline perplexity. An eval row with no gamma matches
    any gamma; one with a gamma matches only that gamma (results' null gamma counts as 1.0). Where several
    eval rows match, one with an explicit gamma wins.
    """
    data.has_eval = True
    for e in evals:
        if is_reference(e["method"]):
            data.baseline.setdefault(e["model"], float(e["perplexity"]))
    unmatched = 0
    for r in data.rows:
        best = None
        for e in evals:
            if e["model"] != r["model"] or e["method"] != r["method"]:
                continue
            if not is_reference(r["method"]) and not _close(e["density"], r["density"]):
                continue
            if e["gamma"] is not None and not _close(e["gamma"], r["gamma"]):
                continue
            if best is None or (best["gamma"] is None and e["gamma"] is not None):
                best = e
        if best is not None:
            r["perplexity"] = float(best["perplexity"])
        else:
            unmatched += 1
    models = sorted({r["model"] for r in data.rows})
    no_base = [m for m in models if m not in data.baseline]
    if no_base:
        data.notes.append(
            f"the eval table has no dense row for {', '.join(no_base)}: perplexity budgets for it are left out"
        )
    if unmatched:
        data.notes.append(
            f"{unmatched} of {len(data.rows)} ok rows have no matching eval row (model, method, density, gamma); "
            "they are left out of the perplexity tables and the Pareto plot"
        )


# ---- slicing ---------------------------------------------------------------------------------------------


def ordered(values, order=()) -> list:
    """Distinct values, those named in ``order`` first (in that order), the rest sorted."""
    vals = {v for v in values if v is not None}
    head = [v for v in order if v in vals]
    rest = sorted((v for v in vals if v not in order), key=lambda v: (str(type(v)), v))
    return head + rest


def mode(values):
    """The most common value; ties go to the smallest (so the choice does not depend on row order)."""
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min((v for v, c in counts.items() if c == top), key=lambda v: (str(type(v)), v))


def lower_median(values):
    """The median of the distinct values, the lower one of the two middle values for an even count."""
    vals = sorted({v for v in values if v is not None})
    return vals[(len(vals) - 1) // 2] if vals else None


def scenario_of(row: dict) -> tuple:
    return tuple(row[c] for c in SCENARIO)


def scenarios(rows: list[dict]) -> list[tuple]:
    """Scenario keys, the one with most rows first."""
    counts = Counter(scenario_of(r) for r in rows)
    return sorted(counts, key=lambda s: (-counts[s], str(s)))


def describe_scenario(s: tuple) -> str:
    d = dict(zip(SCENARIO, s))
    return (
        f"{d['model']} on {d['device']} ({_flash(d)}, DRAM {d['dram_bw_gbps']:g} GB/s, "
        f"{d['bits']:g}-bit, context {d['context']}; trace {d['trace']})"
    )


def _flash(d: dict) -> str:
    """The Flash model of a scenario, in words."""
    if d.get("flash_model") == "curve":
        return "Flash read curve" + (f", layout {d['layout']}" if d.get("layout") else "")
    return f"Flash {d['flash_bw_gbps']:g} GB/s"


def short_scenario(s: tuple) -> str:
    d = dict(zip(SCENARIO, s))
    return f"{d['model']} on {d['device']}, {_flash(d)}"


def gb(nbytes) -> str:
    """DRAM size in decimal GB, as short as exact: 4, 0.064, 1.5."""
    return f"{nbytes / 1e9:g}"


def fmt_tps(v: float | None) -> str:
    """Tokens/s for tables: one decimal from 10 up, two below (so 0.31 and 0.36 stay apart)."""
    if v is None:
        return "—"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def fastest(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """One row per distinct ``keys``: the one with the highest steady tokens/s (e.g. over rho splits)."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if r[TPS] is None:
            continue
        k = tuple(r[c] for c in keys)
        if k not in best or r[TPS] > best[k][TPS]:
            best[k] = r
    return list(best.values())


# ---- methods: what the report knows of them is what they say of themselves (simcore.methods) ------------


@functools.cache
def _module(method) -> ModuleType | None:
    """The method module (package name or file path), None where it cannot be loaded here (a name this
    version does not know, a method file that is not on this machine)."""
    if not isinstance(method, str):
        return None
    try:
        return methods.load(method)
    except (ConfigError, OSError):
        return None


@functools.cache
def method_display(method) -> Display:
    """How the report shows ``method``: its ``DISPLAY`` (label, colour, order). A method given by path that
    does not name itself (``methods.load`` then labels it by its file stem), or whose file is not here, shows
    as its file stem in the default colour, last."""
    module = _module(method)
    if module is None:
        if not isinstance(method, str):
            return Display(label=str(method), order=1000)
        shown = methods.display(method)  # the default: shown as itself, last
        return replace(shown, label=Path(method).stem) if is_path(method) else shown
    return module.DISPLAY


def method_key(method) -> tuple:
    """Sort key of a method: its display order, then its name."""
    return (method_display(method).order, str(method))


def ordered_methods(values) -> list:
    """Distinct methods (None left out) in display order."""
    return sorted({v for v in values if v is not None}, key=method_key)


def method_color(method) -> str:
    return method_display(method).color


def row_label(row: dict) -> str:
    """A results row's line label: the method's ``row_label(row)`` where it has one (e.g. with its γ), else
    its label."""
    if callable(getattr(_module(row["method"]), "row_label", None)):
        label = methods.row_label(row)
    else:
        label = method_display(row["method"]).label
    return f"{label} + LoRA" if row.get("adapter") else label  # a trace of the model with adapters


def row_key(row: dict) -> tuple:
    """Sort key of a row's line: the method's display order and name, then gamma, then adapters (none
    first)."""
    return (*method_key(row["method"]), row["gamma"], row.get("adapter") or "")


def takes_gamma(method) -> bool:
    """Whether the method has a ``gamma`` option (cache-aware re-weighting), so its rows differ by γ."""
    module = _module(method)
    return module is not None and "gamma" in module.Options.model_fields


def is_reference(method) -> bool:
    """Whether the method is the reference the others are measured against: it always uses every weight
    (``DENSITY`` 1, i.e. dense), so its perplexity is the baseline and its throughput the target."""
    return getattr(_module(method), "DENSITY", None) == 1.0
