"""Sweeps keep every valid row (issue 11): one bad configuration fails alone, resumes retry failures and
recompute rows whose inputs changed, tables shared by several grids or by concurrent sweeps lose
nothing, results are appended per task, and killing the parent leaves no worker behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from simcore.engine.replay import replay
from simcore.errors import SimcoreError
from simcore.sweep import Grid, run_sweep, sweep_stats
from simcore.sweep.grid import config_key
from simcore.sweep.inputs import inputs_of, row_key
from simcore.sweep.run import plan_tasks
from simcore.trace.synth import synth_trace

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return str(synth_trace("smollm2-135m", 40, tmp_path_factory.mktemp("safety") / "smol", seed=5))


def _strip(table):
    """The rows without the time each was computed at (the only column that differs between runs)."""
    return [{k: v for k, v in r.items() if k != "computed_at"} for r in table.to_pylist()]


def _same_as_replay(row: dict, settings: dict) -> None:
    alone = replay(**settings)
    for m in ("tokens_per_s_steady", "hit_rate_steady", "hits", "accesses", "mass_kept", "flash_bytes_per_token"):
        assert row[m] == alone.totals[m], m
    assert row["dram_bytes"] == alone.config["dram_bytes"]


# ---------------------------------------------------------------------------- item 1


def test_a_dram_size_below_the_resident_part_fails_alone(trace, tmp_path):
    grid = Grid(
        {"dram": ["10MB", "64MB", "96MB"], "method": ["dip", "dip-ca"], "policy": ["lru"]},
        {"trace": trace, "warmup": 10},
    )
    configs = grid.configurations()
    assert [len(t["drams"]) for t in plan_tasks([(i, str(i), s) for i, s in enumerate(configs)])] == [3, 3]
    rows = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    for r, s in zip(rows, configs):
        if s["dram"] == "10MB":
            assert r["status"] == "error" and "smaller than the model's resident part" in r["error"]
        else:
            assert r["status"] == "ok"
            _same_as_replay(r, s)


def test_a_device_that_cannot_be_loaded_fails_only_its_configurations(trace, tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\ndram_bw_gbps: [not a number\n")
    grid = Grid({"device": [str(bad), "a18"], "dram": ["64MB", "96MB"]}, {"trace": trace, "warmup": 10})
    rows = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    for r, s in zip(rows, grid.configurations()):
        if s["device"] == str(bad):
            assert r["status"] == "error" and "not valid YAML" in r["error"]
        else:
            assert r["status"] == "ok"
            _same_as_replay(r, s)


def test_a_device_without_a_default_budget_fails_alone(trace, tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\ndram_bw_gbps: 60\nflash_bw_gbps: 1\n")
    grid = Grid({"device": ["a18", str(plain)]}, {"trace": trace, "warmup": 10})
    rows = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    _same_as_replay(rows[0], grid.configurations()[0])
    with pytest.raises(SimcoreError) as e:
        replay(**grid.configurations()[1])
    assert rows[1]["status"] == "error" and rows[1]["error"] == str(e.value)


def test_an_error_of_the_trace_fails_every_configuration(tmp_path):
    grid = Grid({"dram": ["64MB", "96MB"], "policy": ["lru", "lfu"]}, {"trace": str(tmp_path / "none")})
    rows = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    assert len(rows) == 4 and all(r["status"] == "error" and "no trace at" in r["error"] for r in rows)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    drams=st.lists(st.sampled_from(["10MB", "55MB", "64MB", "96MB"]), min_size=1, max_size=3, unique=True),
    devices=st.lists(
        st.sampled_from(["a18", "snapdragon-8s-gen3", "no-such-device"]), min_size=1, max_size=2, unique=True
    ),
    methods=st.lists(st.sampled_from(["dip", "dip-ca", "glu"]), min_size=1, max_size=2, unique=True),
    policies=st.lists(st.sampled_from(["lru", "lfu", "belady"]), min_size=1, max_size=2, unique=True),
    density=st.sampled_from([0.3, 0.5, 1.5]),
)
@example(  # every kind of failure beside valid configurations of the same tasks
    drams=["10MB", "64MB"],
    devices=["no-such-device", "a18"],
    methods=["dip-ca", "dip"],
    policies=["belady", "lru"],
    density=0.5,
)
def test_ok_rows_of_a_grid_with_invalid_configurations_equal_separate_replays(
    trace, drams, devices, methods, policies, density
):
    grid = Grid(
        {"dram": drams, "device": devices, "method": methods, "policy": policies, "density": [density]},
        {"trace": trace, "warmup": 10},
    )
    configs = grid.configurations()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_sweep(grid, Path(tmp) / "r.parquet", workers=1).to_pylist()
    assert len(rows) == len(configs)
    for r, s in zip(rows, configs):
        try:
            alone = replay(**s)
        except SimcoreError as e:
            assert r["status"] == "error" and r["error"] == str(e)
            continue
        assert r["status"] == "ok", r["error"]
        for m in ("tokens_per_s_steady", "tokens_per_s", "hit_rate_steady", "hits", "misses", "mass_kept"):
            assert r[m] == alone.totals[m], m


# ---------------------------------------------------------------------------- item 2


def test_a_resumed_sweep_retries_its_error_rows(tmp_path):
    path = tmp_path / "later"
    grid = Grid({"dram": ["64MB", "96MB"], "policy": ["lru", "lfu"]}, {"trace": str(path), "warmup": 10})
    first = run_sweep(grid, tmp_path / "r.parquet", workers=1)
    assert {r["status"] for r in first.to_pylist()} == {"error"}
    synth_trace("smollm2-135m", 30, path, seed=2)
    again = run_sweep(grid, tmp_path / "r.parquet", workers=1)
    assert sweep_stats(again)["computed"] == 4 and {r["status"] for r in again.to_pylist()} == {"ok"}
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 4  # the ok rows replaced the failed ones
    third = run_sweep(grid, tmp_path / "r.parquet", workers=1)
    assert sweep_stats(third)["computed"] == 0 and _strip(third) == _strip(again)


# ---------------------------------------------------------------------------- item 3


def test_another_grid_on_the_same_table_keeps_the_earlier_rows(trace, tmp_path):
    out = tmp_path / "r.parquet"
    a = Grid({"dram": ["64MB", "96MB"], "policy": ["lru", "lfu"]}, {"trace": trace, "warmup": 10})
    b = Grid({"dram": ["80MB"], "policy": ["lru"]}, {"trace": trace, "warmup": 10})
    first = run_sweep(a, out, workers=1)
    second = run_sweep(b, out, workers=1)
    assert second.num_rows == 1 and sweep_stats(second)["table_rows"] == 5
    assert pq.read_table(out).num_rows == 5
    again = run_sweep(a, out, workers=1)  # nothing to compute: its rows are still there
    assert sweep_stats(again)["computed"] == 0 and _strip(again) == _strip(first)
    assert {p.name for p in (tmp_path / "r.parquet.grids").glob("*.yaml")} == {
        f"{a.digest()}.yaml",
        f"{b.digest()}.yaml",
    }
    assert not (tmp_path / "r.parquet.parts").exists()


def test_a_table_written_before_input_keys_is_recomputed_in_place(trace, tmp_path):
    import pyarrow as pa

    grid = Grid({"dram": ["64MB", "96MB"]}, {"trace": trace, "warmup": 10})
    new = run_sweep(grid, tmp_path / "new.parquet", workers=1)
    old = new.drop_columns(["config", "inputs", "computed_at"])  # the columns of simcore before issue 11
    old = old.set_column(old.column_names.index("key"), "key", new.column("config"))  # its key named the settings
    other = old.slice(0, 1).to_pylist()[0] | {"key": "0123456789abcdef", "dram": "80MB"}  # another grid's row
    pq.write_table(pa.concat_tables([old, pa.Table.from_pylist([other], schema=old.schema)]), tmp_path / "r.parquet")
    again = run_sweep(grid, tmp_path / "r.parquet", workers=1)
    assert sweep_stats(again)["computed"] == 2 and _strip(again) == _strip(new)
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 3


def _sweep_script(trace: str, out: Path, densities: list[float], workers: int, tokens: int | None = None) -> list[str]:
    fixed = {"trace": trace, "warmup": 5, "method": "dip", **({"tokens": tokens} if tokens else {})}
    code = textwrap.dedent(
        f"""
        from simcore.sweep import Grid, run_sweep
        grid = Grid({{"density": {densities!r}, "policy": ["lru", "lfu"], "dram": ["64MB", "96MB"]}}, {fixed!r})
        run_sweep(grid, {str(out)!r}, workers={workers})
        """
    )
    return [sys.executable, "-c", code]


def test_two_sweeps_writing_one_table_at_once_lose_no_rows(trace, tmp_path):
    out = tmp_path / "r.parquet"
    ones = [round(0.3 + 0.02 * i, 2) for i in range(12)]
    twos = [round(0.31 + 0.02 * i, 2) for i in range(12)] + [0.3]  # one density shared with the first
    procs = [subprocess.Popen(_sweep_script(trace, out, d, 1), cwd=ROOT, stderr=subprocess.PIPE) for d in (ones, twos)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    rows = pq.read_table(out).to_pylist()
    expected = 4 * len(set(ones) | set(twos))  # 2 policies x 2 DRAM sizes per density
    assert len(rows) == expected and len({r["config"] for r in rows}) == expected
    assert all(r["status"] == "ok" for r in rows)
    assert not list((tmp_path).glob(".*.tmp")) and not (tmp_path / "r.parquet.parts").exists()


# ---------------------------------------------------------------------------- item 4


def test_the_key_changes_with_every_input_file(tmp_path, monkeypatch):
    import simcore.sweep.inputs as inputs_mod

    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    (tmp_path / "cal").mkdir()
    monkeypatch.setenv("SIMCORE_CALIBRATION", str(tmp_path / "cal"))
    files = {
        "trace": (
            tmp_path / "t" / "trace.json",
            '{"model": {"name": "smollm2-135m"}, "created": 1, "extra": {"text_sha256": "' + "ab" * 32 + '"}}',
        ),
        "device": (tmp_path / "dev.yaml", "name: dev\ndram_bw_gbps: 60\nflash_bw_gbps: 1\n"),
        "pruned": (tmp_path / "p" / "manifest.json", '{"model": "smollm2-135m"}'),
        "calibration": (tmp_path / "cal" / f"smollm2-135m--{'ab' * 8}.json", '{"splits": []}'),  # of the trace's text
    }
    for path, text in files.values():
        path.write_text(text)
    s = {"trace": str(tmp_path / "t"), "device": str(tmp_path / "dev.yaml"), "pruned": str(tmp_path / "p")}
    c = config_key(s)
    key = row_key(c, inputs_of(s))
    assert all(v is not None for v in inputs_of(s).values())
    for name, (path, text) in files.items():
        path.write_text(text)  # the same bytes again: a new modification time changes nothing
        assert row_key(c, inputs_of(s)) == key, name
        path.write_text(text + " ")
        changed = row_key(c, inputs_of(s))
        assert changed != key, name
        path.write_text(text)
    monkeypatch.setattr(inputs_mod, "__version__", "9.9.9")
    assert row_key(c, inputs_of(s)) != key
    assert config_key(s) == c  # the configuration itself is the same: its row gets replaced


def test_a_resume_after_the_trace_was_re_created_recomputes_its_rows(tmp_path):
    path = tmp_path / "smol"
    synth_trace("smollm2-135m", 30, path, seed=1)
    grid = Grid({"dram": ["64MB", "96MB"], "policy": ["lru", "lfu"]}, {"trace": str(path), "warmup": 5})
    old = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    synth_trace("smollm2-135m", 30, path, seed=2)
    table = run_sweep(grid, tmp_path / "r.parquet", workers=1)
    assert sweep_stats(table)["computed"] == 4 and pq.read_table(tmp_path / "r.parquet").num_rows == 4
    new = table.to_pylist()
    for r, s in zip(new, grid.configurations()):
        _same_as_replay(r, s)
    assert any(a["hits"] != b["hits"] for a, b in zip(old, new))


def test_a_changed_device_file_recomputes_the_rows_that_use_it(trace, tmp_path):
    dev = tmp_path / "phone.yaml"
    dev.write_text("name: phone\ndram_bw_gbps: 60\nflash_bw_gbps: 1\ndram_budget_gb: 0.064\n")
    grid = Grid({"policy": ["lru", "lfu"]}, {"trace": trace, "device": str(dev), "warmup": 5})
    first = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    assert {r["dram_bytes"] for r in first} == {64_000_000}
    dev.write_text("name: phone\ndram_bw_gbps: 60\nflash_bw_gbps: 1\ndram_budget_gb: 0.096\n")
    again = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    assert {r["dram_bytes"] for r in again} == {96_000_000}


# ---------------------------------------------------------------------------- item 5 and 13 (CLI)


def _cli(args, capsys):
    from simcore.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_prints_counts_and_exits_2_when_nothing_succeeded(trace, tmp_path, capsys):
    code, out, err = _cli(
        ["sweep", "--trace", trace, "--dram", "10MB,64MB", "--warmup", "5", "--out", str(tmp_path / "a.parquet")],
        capsys,
    )
    assert code == 0 and "2 configurations: 1 ok, 1 failed" in out and err == ""
    code, out, err = _cli(
        ["sweep", "--trace", trace, "--dram", "5MB,10MB", "--out", str(tmp_path / "b.parquet")], capsys
    )
    assert code == 2 and "2 configurations: 0 ok, 2 failed" in out
    assert err.count("\n") == 1 and err.startswith("simcore: error: none of the 2 configurations succeeded")


def test_the_cli_turns_bad_sweep_input_into_one_line(trace, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "latin1.yaml").write_bytes(b"trace: caf\xe9\ngrid:\n  dram: [64MB]\n")
    out = str(tmp_path / "r.parquet")
    cases = [
        (["--tokens", "0", "--out", out], "--tokens: Input should be greater than 0"),
        (["--workers", "-1", "--out", out], "--workers must be 0"),
        (["--context", "-5", "--out", out], "--context"),
        (["--out", str(tmp_path)], "is a directory"),
        (["--out", str(tmp_path / "file" / "r.parquet")], "cannot write the results table"),
        (["--grid", str(tmp_path / "latin1.yaml"), "--out", out], "not UTF-8"),
        (["--grid", str(tmp_path), "--out", out], "is a directory"),
        (["--trace", os.fsdecode(b"\xff\xfe"), "--out", out], "not valid UTF-8"),
        (["--out", os.fsdecode(str(tmp_path).encode() + b"/\xff.parquet")], "not valid UTF-8"),
    ]
    for args, words in cases:
        base = [] if "--trace" in args else ["--trace", trace]
        code, _, err = _cli(["sweep", *base, "--dram", "64MB", *args], capsys)
        assert code == 2 and err.count("\n") == 1 and words in err and "Traceback" not in err, (args, err)


# ---------------------------------------------------------------------------- item 6


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_kill_9_of_the_parent_leaves_no_worker_and_a_resume_completes_the_table(tmp_path):
    trace = str(synth_trace("smollm2-135m", 300, tmp_path / "smol", seed=3))
    out = tmp_path / "r.parquet"
    densities = [round(0.3 + 0.025 * i, 3) for i in range(16)]  # 32 tasks of about 0.1 s
    p = subprocess.Popen(
        _sweep_script(trace, out, densities, 2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    parts = tmp_path / "r.parquet.parts"
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until a task has finished and two workers are busy
        workers = sorted(set(workers) | set(_children(p.pid)))
        logs = list(parts.glob("*.jsonl")) if parts.is_dir() else []
        if logs and logs[0].read_bytes().count(b"\n") >= 1 and len(workers) >= 2:
            break
        assert p.poll() is None, p.communicate()[1].decode()
        time.sleep(0.02)
    else:
        pytest.fail("the sweep did not start two workers and finish a task in time")
    os.kill(p.pid, signal.SIGKILL)
    _, _ = p.communicate(timeout=30)  # no worker holds the parent's pipes open
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)]

    partial = pq.read_table(out)  # readable (written when the sweep started)
    assert partial.num_rows == 0
    grid = Grid(
        {"density": densities, "policy": ["lru", "lfu"], "dram": ["64MB", "96MB"]},
        {"trace": trace, "warmup": 5, "method": "dip"},
    )
    resumed = run_sweep(grid, out, workers=1)
    stats = sweep_stats(resumed)
    assert stats["reused"] >= 2 and stats["computed"] + stats["reused"] == 64  # the finished tasks were kept
    whole = run_sweep(grid, tmp_path / "whole.parquet", workers=1)
    assert _strip(resumed) == _strip(whole)
    assert not parts.exists()


# ---------------------------------------------------------------------------- item 7


def test_results_are_appended_per_task_and_the_table_written_once_at_each_end(trace, tmp_path, monkeypatch):
    import simcore.sweep.run as run_mod
    import simcore.sweep.store as store_mod

    writes = []
    real_write = store_mod.atomic_write_table
    monkeypatch.setattr(store_mod, "atomic_write_table", lambda t, p: writes.append(t.num_rows) or real_write(t, p))
    lines = []
    real_task = run_mod.run_task

    def counting(task):
        logs = list((tmp_path / "r.parquet.parts").glob("*.jsonl"))
        lines.append(logs[0].read_bytes().count(b"\n"))
        return real_task(task)

    monkeypatch.setattr(run_mod, "run_task", counting)
    grid = Grid({"density": [0.3, 0.4, 0.5, 0.6, 0.7], "dram": ["64MB", "96MB"]}, {"trace": trace, "warmup": 5})
    run_sweep(grid, tmp_path / "r.parquet", workers=1)
    assert lines == [0, 1, 2, 3, 4]  # one line per finished task, nothing else rewritten
    assert writes == [0, 10]  # the table: created at the start, merged at the end


def test_a_log_left_by_a_killed_sweep_is_merged_on_resume(trace, tmp_path, monkeypatch):
    import simcore.sweep.run as run_mod
    from simcore.sweep.store import ResultStore

    grid = Grid({"density": [0.3, 0.4, 0.5, 0.6], "policy": ["lru"]}, {"trace": trace, "warmup": 5})
    calls = {"n": 0}
    real_task, real_finish = run_mod.run_task, ResultStore.finish

    def dies_after_two(task):
        calls["n"] += 1
        if calls["n"] > 2:
            raise SystemExit("killed")
        return real_task(task)

    monkeypatch.setattr(run_mod, "run_task", dies_after_two)
    monkeypatch.setattr(ResultStore, "finish", lambda self, order: os.close(self._log_fd) or {})  # no clean end
    with pytest.raises(SystemExit):
        run_sweep(grid, tmp_path / "r.parquet", workers=1)
    (log,) = (tmp_path / "r.parquet.parts").glob("*.jsonl")
    with open(log, "ab") as f:
        f.write(b'{"rows": [{"config": "torn')  # killed while writing a line
    monkeypatch.setattr(run_mod, "run_task", real_task)
    monkeypatch.setattr(ResultStore, "finish", real_finish)
    resumed = run_sweep(grid, tmp_path / "r.parquet", workers=1)
    assert sweep_stats(resumed)["reused"] == 2 and sweep_stats(resumed)["computed"] == 2
    assert [r["status"] for r in resumed.to_pylist()] == ["ok"] * 4
    assert json.loads(pq.read_table(tmp_path / "r.parquet").column("inputs")[0].as_py())["simcore"]
