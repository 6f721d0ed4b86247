"""simcore frontier: its rows equal separate evaluate and replay calls, evals are run once per setting their
masks depend on (and reused everywhere else), an interrupted frontier resumes without re-running a logged
eval, and the budget arithmetic matches a hand computation. On a tiny random Llama and a trace of it."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import simcore.eval.evaluate as evaluate_module  # noqa: E402
from simcore.engine.replay import replay  # noqa: E402
from simcore.errors import ConfigError, SimcoreError  # noqa: E402
from simcore.eval.evaluate import evaluate  # noqa: E402  (the real one: `counted` patches the module)
from simcore.frontier import Budget, best_within, parse_budgets, reach, run_frontier  # noqa: E402
from simcore.frontier.summary import best_of, budget_section, saved_section  # noqa: E402
from simcore.sweep import Grid  # noqa: E402
from simcore.trace.tracer import trace_model  # noqa: E402

pytestmark = pytest.mark.torch

from tiny_models import VOCAB, tiny_model  # noqa: E402

EVAL = dict(tokens=96, seq_len=32, calib_tokens=64, calib_offset=200)
FIXED = dict(context=0, warmup=8)
DRAMS = ["45kB", "52kB"]  # the tiny model's resident part is 33 kB and its MLP 32 kB: partial caches


class Chars:
    """A tokenizer with one token per character."""

    def __call__(self, text):
        return {"input_ids": [ord(c) % VOCAB for c in text]}


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", random_norms=False)


@pytest.fixture(scope="module")
def trace(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("frontier") / "tiny"
    return str(trace_model(model=model, tokenizer=Chars(), tokens=96, seq_len=32, out=out, progress=False))


def _grid(trace, **axes):
    base = dict(method=["dip", "dip-ca"], density=[0.4, 0.6], dram=DRAMS, policy=["lfu", "lru"], gamma=[0.2])
    base.update(axes)
    return Grid(base, {"trace": trace, **FIXED})


def _frontier(model, grid, out, **kw):
    return run_frontier(grid, out, model=model, tokenizer=Chars(), sweep_workers=1, **{**EVAL, **kw})


@pytest.fixture
def counted(monkeypatch):
    """Counts the evaluate() calls the frontier makes (settings of each), and can fail the n-th one."""
    calls: list[dict] = []
    real = evaluate_module.evaluate
    state = {"fail_at": None}

    def counting(model, config=None, **kw):
        if state["fail_at"] is not None and len(calls) == state["fail_at"]:
            raise KeyboardInterrupt("simulated crash")
        calls.append(config.model_dump())
        return real(model, config, **kw)

    monkeypatch.setattr(evaluate_module, "evaluate", counting)
    return calls, state


def _setting(row) -> dict:
    s = dict(method=row["method"], dram=row["dram"], policy=row["policy"], **FIXED)
    if row["method"] != "dense":
        s["density"] = row["density"]
    if row["method"] == "dip-ca":
        s["gamma"] = row["gamma"]
    return s


def test_rows_equal_separate_evaluate_and_replay_calls(model, trace, tmp_path, counted):
    calls, _ = counted
    result = _frontier(model, _grid(trace), tmp_path / "f")
    rows = result.rows
    calls_made = len(calls)
    assert len(rows) == 2 * 2 * 2 * 2 + 2 * 2  # dip and dip-ca x 2 densities x 2 DRAMs x 2 policies, dense added
    assert all(r["status"] == "ok" for r in rows)
    dense = evaluate(model, tokenizer=Chars(), method="dense", dram=DRAMS[0], **EVAL, **FIXED)
    assert result.dense_perplexity == dense.perplexity
    for r in rows:
        alone = evaluate(model, tokenizer=Chars(), **_setting(r), **EVAL)
        assert r["perplexity"] == alone.perplexity, r
        assert r["perplexity_increase"] == pytest.approx(alone.perplexity / dense.perplexity - 1, rel=1e-12)
        rep = replay(trace=trace, **_setting(r))
        assert r["tokens_per_s_steady"] == pytest.approx(rep.totals["tokens_per_s_steady"], rel=1e-12)
        assert r["hit_rate_steady"] == rep.totals["hit_rate_steady"]
    table = pq.read_table(tmp_path / "f" / "frontier.parquet").to_pylist()
    assert [(r["config"], r["perplexity"]) for r in table] == [(r["config"], r["perplexity"]) for r in rows]
    for name in ("summary.md", "pareto.png", "frontier.json", "evals.jsonl", "sweep.parquet"):
        assert (tmp_path / "f" / name).is_file(), name
    assert calls_made == 11


def test_evals_are_reused_exactly_where_the_masks_do_not_depend_on_the_cache(model, trace, tmp_path, counted):
    calls, _ = counted
    result = _frontier(model, _grid(trace), tmp_path / "f")
    rows = result.rows
    keys = {m: {r["eval_key"] for r in rows if r["method"] == m} for m in ("dense", "dip", "dip-ca")}
    # dip: 2 densities x 2 DRAMs x 2 policies = 2 evals; dip-ca gamma 0.2: the same 8 configurations = 8 evals
    assert {m: len(k) for m, k in keys.items()} == {"dense": 1, "dip": 2, "dip-ca": 8}
    assert len(calls) == 11 and result.stats["evals"] == 11 and result.stats["evals_run"] == 11
    assert result.stats["evals_cache_dependent"] == 8
    assert all(r["cache_dependent"] == (r["method"] == "dip-ca") for r in rows)
    assert not any(r["eval_reused"] for r in rows if r["method"] == "dip-ca")
    for m in ("dense", "dip"):  # one configuration ran each eval, the others reuse it
        for k in keys[m]:
            assert sorted(r["eval_reused"] for r in rows if r["eval_key"] == k) == [False, True, True, True]
    assert result.stats["rows_reusing_an_eval"] == 3 + 2 * 3

    # the rule follows what the method declares, not its name: dip-ca at gamma 1 ignores the cache (and may
    # then run under belady), so its perplexity is shared across DRAM sizes and policies
    calls.clear()
    again = _frontier(model, _grid(trace, method=["dip-ca"], gamma=[1.0], policy=["lfu", "belady"]), tmp_path / "g")
    ca = [r for r in again.rows if r["method"] == "dip-ca"]
    assert len(ca) == 2 * 2 * 2 and all(r["status"] == "ok" and not r["cache_dependent"] for r in ca)
    assert len({r["eval_key"] for r in ca}) == 2 and len(calls) == 3  # + dense


def test_an_interrupted_frontier_resumes_without_recomputing_a_logged_eval(model, trace, tmp_path, counted):
    calls, state = counted
    out = tmp_path / "f"
    state["fail_at"] = 4  # the 5th eval is "killed": four are finished and logged
    with pytest.raises(KeyboardInterrupt):
        _frontier(model, _grid(trace), out)
    logged = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    assert len(logged) == 4 and not (out / "frontier.parquet").exists()
    with open(out / "evals.jsonl", "a") as f:  # and a kill cut the next line short
        f.write('{"key": "12ab", "status": "o')

    state["fail_at"] = None
    calls.clear()
    resumed = _frontier(model, _grid(trace), out)
    assert len(calls) == 11 - 4
    assert resumed.stats["evals_run"] == 7 and resumed.stats["evals_from_log"] == 4
    lines = (out / "evals.jsonl").read_text().splitlines()
    assert lines[4] == '{"key": "12ab", "status": "o'  # the torn line stays alone: the next append ended it
    keys = [json.loads(line)["key"] for i, line in enumerate(lines) if i != 4]
    assert len(keys) == 11 and len(set(keys)) == 11  # the 4 logged keys, then 7 others
    assert set(keys[:4]) == {r["key"] for r in logged}

    fresh = _frontier(model, _grid(trace), tmp_path / "fresh")
    assert [(r["config"], r["perplexity"], r["eval_key"], r["eval_reused"]) for r in resumed.rows] == [
        (r["config"], r["perplexity"], r["eval_key"], r["eval_reused"]) for r in fresh.rows
    ]

    for name in ("frontier.parquet", "summary.md", "pareto.png"):  # outputs lost: everything comes from the logs
        (out / name).unlink()
    calls.clear()
    third = _frontier(model, _grid(trace), out)
    assert calls == [] and third.stats["evals_from_log"] == 11 and third.stats["sweep_reused"] == 20
    assert [r["perplexity"] for r in third.rows] == [r["perplexity"] for r in fresh.rows]
    assert (out / "summary.md").is_file() and (out / "pareto.png").is_file()


def test_another_text_or_token_range_is_another_eval(model, trace, tmp_path, counted):
    calls, _ = counted
    out = tmp_path / "f"
    grid = _grid(trace, method=["dip"], density=[0.5], dram=DRAMS[:1], policy=["lfu"])
    _frontier(model, grid, out)
    assert len(calls) == 2
    calls.clear()
    _frontier(model, grid, out, offset=8)
    assert len(calls) == 2  # the log holds the evals of tokens [0, 96), not of [8, 104)


def test_best_within_a_budget_interpolates_log_perplexity_and_tokens_per_s_linearly_in_density():
    pts = [(0.4, 12.0, 100.0), (0.5, 11.0, 80.0), (0.6, 10.5, 60.0)]
    # +10 % over dense 10 is 11: the swept point at 0.5 is the best within it
    b = best_within(pts, Budget(10, True).limit(10.0))
    assert (b.tps, b.density, b.interpolated) == (80.0, 0.5, False)
    # +1.5 points is 11.5: log 11.5 is crossed between 0.4 (log 12) and 0.5 (log 11), a fraction f of the way
    f = (math.log(11.5) - math.log(12)) / (math.log(11) - math.log(12))
    b = best_within(pts, Budget(1.5, False).limit(10.0))
    assert b.interpolated and b.perplexity == 11.5
    assert b.density == pytest.approx(0.4 + 0.1 * f, rel=1e-12)
    assert b.tps == pytest.approx(100 - 20 * f, rel=1e-12)
    assert round(b.density, 4) == 0.4489 and round(b.tps, 2) == 90.22  # worked by hand
    assert best_within(pts, 12.0).tps == 100.0  # the lowest density is within it
    assert best_within(pts, 10.0) is None  # nothing swept is; no extrapolation beyond 0.6
    assert best_within(list(reversed(pts)), 11.5) == b  # order does not matter
    # not monotone: the feasible set is two pieces, and the best is the faster one
    bumpy = [(0.3, 11.0, 120.0), (0.4, 13.0, 100.0), (0.5, 10.0, 80.0)]
    assert best_within(bumpy, 11.0).tps == 120.0
    assert best_within([(0.5, float("nan"), 80.0), (0.6, 10.5, 60.0)], 11.0).tps == 60.0


def test_budgets_and_reach_by_hand():
    assert parse_budgets("1%, 2.5,5", True, "--thresholds") == [Budget(1, True), Budget(2.5, True), Budget(5, True)]
    assert Budget(2.5, True).limit(20.0) == pytest.approx(20.5)
    assert Budget(0.2, False).limit(20.0) == pytest.approx(20.2) and Budget(0.2, False).label == "+0.2 ppl"
    for bad in ("x", "-1", "inf"):
        with pytest.raises(ConfigError, match="--thresholds"):
            parse_budgets(bad, True, "--thresholds")
    curve = [(40e6, 50.0), (60e6, 70.0), (80e6, 90.0)]
    assert reach(curve, 60.0) == (pytest.approx(50e6), "at")
    assert reach(curve, 40.0) == (40e6, "below")
    assert reach(curve, 95.0) is None


def _row(method, density, ppl, tps, dram=64e6, policy="lfu", gamma=1.0, dependent=False):
    return dict(
        method=method,
        density=density,
        perplexity=ppl,
        tokens_per_s_steady=tps,
        dram_bytes=int(dram),
        policy=policy,
        gamma=gamma,
        cache_dependent=dependent,
        status="ok",
    )


def test_the_tables_pick_the_best_gamma_and_measure_dram_saved_against_other_methods():
    rows = [_row("dense", 1.0, 10.0, 20.0, dram=d) for d in (40e6, 80e6)]
    for d, speed in ((40e6, 1.0), (80e6, 2.0)):  # dip: twice as fast with twice the DRAM
        rows += [_row("dip", 0.4, 12.0, 50 * speed, dram=d), _row("dip", 0.6, 10.5, 30 * speed, dram=d)]
        for g, ppl in ((0.1, 13.0), (0.2, 12.0)):  # dip-ca: 1.5 x dip's throughput
            rows += [
                _row("dip-ca", 0.4, ppl, 75 * speed, dram=d, gamma=g, dependent=True),
                _row("dip-ca", 0.6, 10.5, 45 * speed, dram=d, gamma=g, dependent=True),
            ]
    at40 = [r for r in rows if r["dram_bytes"] == 40e6 and r["method"] == "dip-ca"]
    hit, gamma = best_of(at40, 12.0)
    assert (hit.tps, hit.density, gamma) == (75.0, 0.4, 0.2)  # gamma 0.1 is at 13 there: out of the budget
    text = "\n".join(budget_section(rows, 10.0, [Budget(20, True)]))
    assert "| 40 | dip-ca | lfu | 75.0 (ρ 0.40, γ 0.2) |" in text
    assert "| 40 | dip | lfu | 50.0 (ρ 0.40) |" in text
    # dip-ca at 40 MB gives 75 tokens/s; the other methods' best (dip) reaches 75 at 60 MB: 20 MB saved.
    # dip at 80 MB gives 100; dip-ca is cache-aware, so dense (20) is dip's reference: never reached
    saved = "\n".join(saved_section(rows, 10.0, [Budget(20, True)]))
    assert "| dip-ca | lfu | 40 | +20.0 |" in saved
    assert "| dip | lfu | 80 | > +0 |" in saved


def test_user_errors_are_one_line_config_errors(model, trace, tmp_path):
    from simcore.trace.synth import synth_trace

    grid = _grid(trace, method=["dip"], density=[0.5], dram=DRAMS[:1], policy=["lfu"])
    cases = [
        (dict(thresholds="1,x"), "--thresholds"),
        (dict(abs_thresholds=[-0.1]), "--abs-thresholds"),
        (dict(workers=0), "--workers"),
        (dict(executor="dask"), "--scheduler"),
        (dict(tokens=1), "--tokens 1 is too few"),
    ]
    for kw, words in cases:
        with pytest.raises(ConfigError, match=words) as e:
            _frontier(model, grid, tmp_path / "f", **kw)
        assert "\n" not in str(e.value)
    import fcntl
    import os

    (tmp_path / "busy").mkdir()
    fd = os.open(tmp_path / "busy" / ".frontier.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another frontier is writing there
    try:
        with pytest.raises(ConfigError, match="another simcore frontier is writing"):
            _frontier(model, grid, tmp_path / "busy")
    finally:
        os.close(fd)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        _frontier(model, grid, tmp_path / "file")
    other = synth_trace("smollm2-135m", 16, tmp_path / "smol")
    with pytest.raises(ConfigError, match="records model 'smollm2-135m' but the evals run 'llama'"):
        _frontier(model, Grid({"method": ["dip"]}, {"trace": str(other)}), tmp_path / "f")
    with pytest.raises(SimcoreError, match="no trace at"):
        _frontier(model, Grid({"method": ["dip"]}, {"trace": str(tmp_path / "none")}), tmp_path / "f")


def test_command_parses_like_sweep_and_fails_in_one_line(tmp_path):
    from simcore.frontier.command import frontier_command

    with pytest.raises(ConfigError, match="--thresholds"):
        frontier_command.main(["--thresholds", "1,x", "--out", str(tmp_path / "f")], standalone_mode=False)
    with pytest.raises(ConfigError, match="--density"):
        frontier_command.main(["--density", "0.7:0.3:0.1", "--out", str(tmp_path / "f")], standalone_mode=False)


def test_eval_worker_processes_and_dask_give_the_same_rows(model, trace, tmp_path):
    distributed = pytest.importorskip("distributed")
    grid = _grid(trace, method=["dip-ca"], density=[0.5], policy=["lfu"])
    here = _frontier(model, grid, tmp_path / "here")
    two = _frontier(model, grid, tmp_path / "two", workers=2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        remote = _frontier(model, grid, tmp_path / "dask", executor="dask", scheduler=c.scheduler_address)
    expected = [(r["config"], r["perplexity"], r["eval_key"], r["tokens_per_s_steady"]) for r in here.rows]
    assert len(expected) == 4 and here.stats["evals_run"] == 3
    for other in (two, remote):
        assert [(r["config"], r["perplexity"], r["eval_key"], r["tokens_per_s_steady"]) for r in other.rows] == expected
