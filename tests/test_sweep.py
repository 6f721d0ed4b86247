"""Sweeps: rows equal separate replays, work is shared, resuming is exact, Dask runs the same grid."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from simcore.engine.replay import replay
from simcore.errors import ConfigError
from simcore.sweep.grid import Grid, parse_axis
from simcore.sweep.run import plan_tasks, run_sweep
from simcore.trace.synth import synth_trace


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return str(synth_trace("smollm2-135m", 40, tmp_path_factory.mktemp("sweep") / "smol", seed=5))


def _grid(trace, **axes):
    default = dict(
        dram=["55MB", "60MB", "70MB"], flash_bw=["1", "2"], method=["dip", "dip-ca"], policy=["lru", "lfu"], gamma=[0.2]
    )
    default.update(axes)
    return Grid(default, {"trace": trace, "warmup": 10})


def _strip(table):
    """The rows without the time each was computed at (the only column that differs between runs)."""
    return [{k: v for k, v in r.items() if k != "computed_at"} for r in table.to_pylist()]


def test_parse_axis_lists_ranges_and_errors():
    assert parse_axis("density", "0.3:0.7:0.1") == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert parse_axis("dram", "32MB:64MB:16MB") == ["32000000", "48000000", "64000000"]
    assert parse_axis("method", "dip, dip-ca") == ["dip", "dip-ca"]
    assert parse_axis("flash_bw", "1,2GB/s") == ["1", "2GB/s"]
    for name, bad, words in [
        ("dram", "4XB", "cannot read"),
        ("density", "0.7:0.3:0.1", "start <= stop"),
        ("gamma", "x", "not a number"),
        ("context", "1,2", "cannot sweep"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_axis(name, bad)


def test_sweep_rows_equal_separate_replays(trace, tmp_path):
    grid = _grid(trace)
    table = run_sweep(grid, tmp_path / "r.parquet", workers=1)
    rows = table.to_pylist()
    assert len(rows) == 3 * 2 * 2 * 2
    assert all(r["status"] == "ok" for r in rows)
    for r in rows:
        alone = replay(
            trace=trace,
            warmup=10,
            dram=r["dram"],
            flash_bw=str(r["flash_bw_gbps"]),
            method=r["method"],
            policy=r["policy"],
            gamma=r["gamma"],
            density=0.5,
        )
        assert r["tokens_per_s_steady"] == pytest.approx(alone.totals["tokens_per_s_steady"], rel=1e-12)
        assert r["hit_rate_steady"] == alone.totals["hit_rate_steady"]
        assert r["hits"] == alone.totals["hits"] and r["mass_kept"] == alone.totals["mass_kept"]
    saved = list((tmp_path / "r.parquet.grids").glob("*.yaml"))
    assert len(saved) == 1 and Grid.from_yaml(saved[0]).to_dict() == grid.to_dict()


def test_work_is_shared_across_bandwidths_and_dram_sizes(trace):
    grid = _grid(trace, method=["dip"], policy=["lru"])
    configs = [(i, str(i), s) for i, s in enumerate(grid.configurations())]
    tasks = plan_tasks(configs)
    assert len(configs) == 6 and len(tasks) == 1  # 3 DRAM sizes x 2 Flash speeds, one pass
    assert tasks[0]["drams"] == ["55MB", "60MB", "70MB"]


def test_invalid_combinations_become_error_rows(trace, tmp_path):
    grid = _grid(trace, policy=["belady"], dram=["60MB"], flash_bw=["1"])
    rows = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    by_method = {r["method"]: r for r in rows}
    assert by_method["dip"]["status"] == "ok"
    assert by_method["dip-ca"]["status"] == "error" and "belady" in by_method["dip-ca"]["error"]


def test_resume_after_an_interruption_gives_the_uninterrupted_table(trace, tmp_path, monkeypatch):
    import simcore.sweep.run as run_mod

    grid = _grid(trace)
    whole = run_sweep(grid, tmp_path / "whole.parquet", workers=1)

    calls = {"n": 0}
    real = run_mod.run_task

    def dies_after_two(task):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(run_mod, "run_task", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, tmp_path / "part.parquet", workers=1)
    partial = pq.read_table(tmp_path / "part.parquet")
    assert 0 < partial.num_rows < whole.num_rows  # finished tasks were kept, the table is whole
    assert not list(tmp_path.glob(".*.tmp"))

    done = []
    monkeypatch.setattr(run_mod, "run_task", lambda task: done.append(task) or real(task))
    resumed = run_sweep(grid, tmp_path / "part.parquet", workers=1)
    assert sum(len(t["members"]) for t in done) == whole.num_rows - partial.num_rows  # nothing redone
    assert _strip(resumed) == _strip(whole)


def test_parallel_processes_give_the_same_table(trace, tmp_path):
    grid = _grid(trace)
    one = run_sweep(grid, tmp_path / "one.parquet", workers=1)
    two = run_sweep(grid, tmp_path / "two.parquet", workers=2)
    assert _strip(one) == _strip(two)


def test_yaml_grid_file(trace, tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text(f"trace: {trace}\nwarmup: 10\ngrid:\n  dram: 55MB:65MB:5MB\n  method: [dip]\n  policy: lru\n")
    table = run_sweep(Grid.from_yaml(f), tmp_path / "r.parquet", workers=1)
    assert [r["dram"] for r in table.to_pylist()] == ["55000000", "60000000", "65000000"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  colour: [red]\n")
    with pytest.raises(ConfigError, match="cannot sweep 'colour'"):
        Grid.from_yaml(bad)


def test_dask_executor_runs_the_same_sweep(trace, tmp_path):
    distributed = pytest.importorskip("distributed")
    grid = _grid(trace, dram=["60MB"], flash_bw=["1"])
    local = run_sweep(grid, tmp_path / "local.parquet", workers=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        remote = run_sweep(grid, tmp_path / "dask.parquet", executor="dask", scheduler=c.scheduler_address)
    assert _strip(remote) == _strip(local)


def test_sweep_cli_bad_input_is_one_line(trace, tmp_path, capsys):
    from simcore.cli import main

    assert main(["sweep", "--trace", trace, "--dram", "4XB", "--out", str(tmp_path / "r.parquet")]) == 2
    assert "cannot read --dram '4XB'" in capsys.readouterr().err
    assert main(["sweep", "--trace", trace, "--executor", "dask", "--out", str(tmp_path / "r.parquet")]) == 2
    assert "--scheduler" in capsys.readouterr().err
