"""The trace format's guarantees (issue 11, "Traces: validate what is read"): magnitudes that are NaN,
infinite or negative are refused when written and when read; metadata and files must agree; every
layer file's checksum is recorded and `simcore info --verify` checks it; a trace holds only the
columns asked for and says which methods it can serve; writers killed outright leave nothing that
the next writer does not remove."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from simcore.cli import main
from simcore.errors import ConfigError, TraceError
from simcore.models import shape_from_dims
from simcore.trace import format as fmt
from simcore.trace.format import (
    WRITER_FILE,
    TraceMeta,
    TraceReader,
    TraceWriter,
    file_checksum,
    first_bad_value,
    methods_served,
    parse_columns,
    remove_dead_leftovers,
)
from simcore.trace.synth import synth_trace

REPO = Path(__file__).resolve().parent.parent
SHAPE = shape_from_dims("small", "llama", n_layers=3, d=8, d_int=16, n_heads=2, n_kv_heads=1, vocab=50, tied=True)
N = 40


def write_trace(out: Path, columns=("x", "h", "gate", "up"), n: int = N, seed: int = 0, poison=None) -> Path:
    """A 3-layer trace of ``n`` tokens of random magnitudes; ``poison`` = (layer, column, token, unit,
    value) is written past the writer's check (as a trace from elsewhere could hold it)."""
    rng = np.random.default_rng(seed)
    meta = TraceMeta(model=SHAPE, source="test", seq_len=16, columns=list(columns))
    with TraceWriter(out, meta) as w:
        for layer in range(SHAPE.n_layers):
            values = {c: rng.random((n, meta.widths()[c])).astype(np.float16) for c in columns}
            if poison is not None and poison[0] == layer:
                _, c, t, j, v = poison
                values[c][t, j] = v
                real, fmt.first_bad_value = fmt.first_bad_value, lambda _v: None
                try:
                    w.append(layer, values, np.arange(n), np.arange(n) % 16)
                finally:
                    fmt.first_bad_value = real
            else:
                w.append(layer, values, np.arange(n), np.arange(n) % 16)
    return out


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- 8: finite magnitudes


def test_first_bad_value_agrees_with_numpy_on_every_float16_pattern():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    values = bits.view(np.float16)
    want = ~np.isfinite(values) | np.signbit(values)  # NaN, inf, and anything with the sign bit (-0 too)
    for i in range(0, 1 << 16, 997):  # each pattern alone in a row of finite magnitudes
        row = np.full((3, 7), 0.5, np.float16)
        row[2, 4] = values[i]
        assert (first_bad_value(row) == (2, 4)) == want[i], hex(i)
    rng = np.random.default_rng(0)
    for _ in range(200):  # random matrices: the first bad value in row-major order
        m = rng.integers(0, 1 << 16, size=(rng.integers(1, 9), rng.integers(1, 40)), dtype=np.uint16)
        m[rng.random(m.shape) < 0.9] &= 0x3FFF  # mostly valid
        bad = np.flatnonzero(want[m])
        got = first_bad_value(m.view(np.float16))
        assert got == (None if bad.size == 0 else divmod(int(bad[0]), m.shape[1]))


@pytest.mark.parametrize(
    ("value", "words"), [(np.nan, "NaN"), (np.inf, "infinite"), (-0.5, "negative"), (1e5, "100000")]
)
def test_nan_inf_and_negative_magnitudes_are_refused_when_written(tmp_path, value, words):
    meta = TraceMeta(model=SHAPE, source="test", seq_len=16)
    with pytest.raises(TraceError) as e:
        with TraceWriter(tmp_path / "t", meta) as w:
            for t0 in (0, 8):
                values = {c: np.ones((8, meta.widths()[c]), np.float32) for c in meta.columns}
                if t0 == 8:
                    values["gate"][5, 3] = value
                w.append(1, values, np.arange(8), np.arange(8))
    msg = str(e.value)
    assert all(s in msg for s in ("layer 1", "'gate'", "token 13", words)) and "\n" not in msg, msg
    assert list(tmp_path.iterdir()) == []


def test_nan_magnitudes_are_refused_when_read_naming_file_layer_column_and_token(tmp_path):
    path = write_trace(tmp_path / "t", poison=(2, "h", 33, 5, np.nan))
    r = TraceReader(path)  # opening reads no magnitudes
    assert r.read_layer(1, ("x", "h"))["h"].shape == (N, 16)
    assert r.read_layer(2, ("x", "gate"))["x"].shape == (N, 8)  # only the columns read are checked
    with pytest.raises(TraceError) as e:
        list(r.iter_layer(2, ("x", "h"), batch_tokens=16))
    msg = str(e.value)
    assert all(s in msg for s in ("layers/002.parquet", "layer 2", "'h'", "token 33", "NaN")), msg


def test_infinite_magnitudes_are_refused_when_read(tmp_path):
    path = write_trace(tmp_path / "t", poison=(0, "x", 0, 0, np.inf))
    with pytest.raises(TraceError, match="layer 0, column 'x', token 0 .*infinite"):
        TraceReader(path).read_layer(0)


def test_a_replay_of_a_nan_trace_is_one_error_line_and_no_json(tmp_path, capsys):
    path = write_trace(tmp_path / "t", poison=(1, "h", 7, 2, np.nan))
    for method in ("glu", "dip", "cats", "dense"):
        code, out, err = run_cli(
            ["replay", "--trace", path, "--method", method, "--density", "1" if method == "dense" else "0.8"]
            + ["--dram", "1MB", "--json"],
            capsys,
        )
        if method == "dense":  # reads no magnitudes
            assert code == 0 and "NaN" not in out
            continue
        assert code == 2 and out == "", (method, out)
        assert "token 7" in err and "NaN" in err and len(err.strip().splitlines()) == 1, err


# --------------------------------------------------------------------------- 9: metadata and files agree


def test_metadata_and_layer_files_must_agree(tmp_path):
    base = write_trace(tmp_path / "base")

    def broken(name, edit):
        t = tmp_path / name
        shutil.copytree(base, t)
        meta = json.loads((t / "trace.json").read_text())
        edit(t, meta)
        (t / "trace.json").write_text(json.dumps(meta))
        return t

    def fewer_layers(t, m):
        m["model"]["n_layers"] = 2
        m["checksums"].pop("layers/002.parquet")

    def more_layers(t, m):
        m["model"]["n_layers"] = 4

    def stray_file(t, m):
        shutil.copy(t / "layers/000.parquet", t / "layers/003.parquet")

    def more_rows(t, m):
        m["n_tokens"] = N + 1

    def fewer_columns(t, m):
        m["columns"] = ["x", "h", "gate"]

    def more_columns(t, m):
        write_trace(tmp_path / "xh", columns=("x", "h"))
        shutil.copy(tmp_path / "xh/layers/001.parquet", t / "layers/001.parquet")

    def checksum_names(t, m):
        m["checksums"]["layers/009.parquet"] = m["checksums"].pop("layers/002.parquet")

    cases = {
        "fewer_layers": (fewer_layers, "also holds layers/002.parquet"),
        "more_layers": (more_layers, "layers/003.parquet is missing"),
        "stray_file": (stray_file, "also holds layers/003.parquet"),
        "more_rows": (more_rows, f"has {N} rows but trace.json says {N + 1}"),
        "fewer_columns": (fewer_columns, "holds columns"),
        "more_columns": (more_columns, "'gate' is missing"),
        "checksum_names": (checksum_names, "checksums are recorded for other files"),
    }
    for name, (edit, words) in cases.items():
        with pytest.raises(TraceError) as e:
            TraceReader(broken(name, edit))
        assert words in str(e.value) and "\n" not in str(e.value), (name, str(e.value))
    (tmp_path / "base/layers/.DS_Store").write_bytes(b"")  # hidden files are not layer files
    assert TraceReader(base).n_tokens == N


def test_metadata_with_bad_columns_or_dtype_is_refused(tmp_path):
    base = write_trace(tmp_path / "base")
    good = (base / "trace.json").read_text()
    for key, value, words in (
        ("columns", ["x", "gate"], "required"),
        ("columns", ["x", "h", "h"], "twice"),
        ("columns", ["x", "h", "w"], "unknown column"),
        ("dtype", "float32", "float16"),
    ):
        meta = json.loads(good)
        meta[key] = value
        (base / "trace.json").write_text(json.dumps(meta))
        with pytest.raises(TraceError, match=words):
            TraceReader(base)


# --------------------------------------------------------------------------- 10: checksums


def test_checksums_are_recorded_for_every_layer_file_and_equal_the_files_hashes(tmp_path):
    r = TraceReader(write_trace(tmp_path / "t"))
    assert sorted(r.meta.checksums) == ["layers/000.parquet", "layers/001.parquet", "layers/002.parquet"]
    for name, digest in r.meta.checksums.items():
        assert digest.startswith("sha256:") and digest == file_checksum(r.path / name)
    assert r.verify() == []
    assert not (r.path / WRITER_FILE).exists()


def test_info_verify_names_a_layer_file_with_4kB_overwritten(tmp_path, capsys):
    path = synth_trace("smollm2-135m", 40, tmp_path / "t", seed=1)
    code, out, err = run_cli(["info", "--verify", path], capsys)
    assert code == 0 and out.strip() == f"verified 30 layer files of {path}: every checksum matches"
    f = path / "layers/017.parquet"
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    f.write_bytes(bytes(data))
    assert TraceReader(path).n_tokens == 40  # still opens: only the bytes changed
    code, out, err = run_cli(["info", "--verify", path], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 2, err
    assert "layers/017.parquet" in lines[0] and "does not match" in lines[0]
    assert lines[1].startswith("simcore: error: 1 of 30 layer files")


def test_traces_written_before_checksums_still_load_and_verify_says_nothing_to_verify_against(tmp_path, capsys):
    tiny = TraceReader(REPO / "traces" / "tiny")  # checked in, format version 1
    assert tiny.read_layer(0)["h"].shape == (6, 4)
    old = write_trace(tmp_path / "old")
    meta = json.loads((old / "trace.json").read_text())
    del meta["checksums"]  # as simcore wrote trace.json before it recorded checksums
    (old / "trace.json").write_text(json.dumps(meta))
    r = TraceReader(old)
    assert r.meta.checksums == {} and r.read_layer(2)["h"].shape == (N, 16)
    code, out, err = run_cli(["info", "--verify", old], capsys)
    assert code == 0 and "nothing to verify against" in out, out + err


# --------------------------------------------------------------------------- 17: columns and methods


def test_columns_are_parsed_in_canonical_order_and_checked():
    assert parse_columns("h, x") == ("x", "h")
    assert parse_columns(["up", "x", "h"]) == ("x", "h", "up")
    for bad, words in (("x", "required"), ("x,h,h", "twice"), ("x,h,down", "unknown column"), ("", "required")):
        with pytest.raises(ConfigError, match=words):
            parse_columns(bad)


def test_methods_a_trace_can_serve_follow_from_its_columns():
    assert methods_served(("x", "h"), SHAPE) == ["dense", "glu", "dejavu", "dip", "dip-ca"]  # display order
    assert methods_served(("x", "h", "gate"), SHAPE) == ["dense", "glu", "gate", "cats", "dejavu", "dip", "dip-ca"]
    assert methods_served(("x", "h", "up"), SHAPE) == ["dense", "glu", "up", "dejavu", "dip", "dip-ca"]
    assert methods_served(("x", "h", "gate", "up"), SHAPE) == [
        "dense",
        "glu",
        "gate",
        "up",
        "cats",
        "dejavu",
        "dip",
        "dip-ca",
    ]


def test_synth_columns_records_only_those_and_info_lists_the_methods(tmp_path, capsys):
    code, out, err = run_cli(["synth", "--tokens", "8", "--columns", "x,h", "--out", tmp_path / "t"], capsys)
    assert code == 0, err
    r = TraceReader(tmp_path / "t")
    assert r.meta.columns == ["x", "h"]
    assert r._open(0).schema_arrow.names == ["token_id", "position", "x", "h"]
    code, out, err = run_cli(["info", tmp_path / "t"], capsys)
    info = json.loads(out)
    assert code == 0 and info["methods"] == ["dense", "glu", "dejavu", "dip", "dip-ca"] and "checksums" not in info


def test_replaying_a_method_whose_column_is_missing_names_the_column_and_the_methods(tmp_path, capsys):
    write_trace(tmp_path / "t", columns=("x", "h"))
    for method, column in (("gate", "gate"), ("cats", "gate"), ("up", "up")):
        code, out, err = run_cli(
            ["replay", "--trace", tmp_path / "t", "--method", method, "--density", "0.8", "--dram", "1MB"], capsys
        )
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"column '{column}'" in err and "dense, glu, dejavu, dip, dip-ca" in err, err
    with pytest.raises(TraceError, match="method gate needs column 'gate', which trace .* does not hold"):
        TraceReader(tmp_path / "t").check_columns(("x", "gate"), "method gate")


def test_synth_rejects_bad_settings_before_writing(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for args, words in (
        (["--columns", "x,gate"], "--columns"),
        (["--seq-len", "0"], "--seq-len"),
        (["--seed", "-1"], "--seed"),
        (["--phi", "nan"], "--phi"),
        (["--out", tmp_path / "file"], "is a file"),
        (["--out", tmp_path / "file" / "t"], "is a file"),
    ):
        args = ["synth", "--tokens", "4", *args]
        if "--out" not in args:
            args += ["--out", tmp_path / "t"]
        code, out, err = run_cli(args, capsys)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_trace_into_a_read_only_directory_is_one_error_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, out, err = run_cli(["synth", "--tokens", "4", "--out", ro / "t"], capsys)
        assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1, err
        with pytest.raises(TraceError, match="cannot write trace"):
            write_trace(ro / "t")
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------- 11: killed writers


def _leftovers(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.tmp-*"))


def _start_synth(out: Path) -> subprocess.Popen:
    """A `simcore synth` of a mistral7b-shaped trace (~185 MB, a few seconds), started in the background."""
    cmd = [sys.executable, "-m", "simcore", "synth", "--model", "mistral7b", "--tokens", "64", "--out", str(out)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_mid_write(proc: subprocess.Popen, out: Path, timeout: float = 60) -> Path:
    """Wait until the writer has a layer file in its temporary directory; return that directory."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for tmp in _leftovers(out.parent, out.name):
            if (tmp / "layers" / "001.parquet").exists():
                return tmp
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the writer did not start writing in time")


def test_kill_9_of_a_writer_leaves_a_leftover_that_the_next_writer_removes(tmp_path):
    out = tmp_path / "m"
    proc = _start_synth(out)
    tmp = _wait_mid_write(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert tmp.exists() and not out.exists()  # SIGKILL runs no cleanup
    record = json.loads((tmp / WRITER_FILE).read_text())
    assert record["pid"] == proc.pid and record["host"] == socket.gethostname()
    synth_trace("smollm2-135m", 4, out)
    assert _leftovers(tmp_path, "m") == [] and TraceReader(out).n_tokens == 4


def test_sigterm_of_a_writer_exits_like_ctrl_c_and_leaves_nothing(tmp_path):
    out = tmp_path / "m"
    proc = _start_synth(out)
    _wait_mid_write(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, 143), err
    assert "interrupted" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_live_writers_other_hosts_or_unknown_writers_are_kept(tmp_path):
    out = tmp_path / "t"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stat = fmt._proc_stat(sleeper.pid)
    records = {
        "live": {"pid": sleeper.pid, "host": host, "start": stat[19] if stat else None},
        "self": fmt._writer_record(),
        "other_host": {"pid": dead.pid, "host": host + "-elsewhere", "start": None},
        "dead": {"pid": dead.pid, "host": host, "start": None},
        "reused_pid": {"pid": sleeper.pid, "host": host, "start": "1"},  # same pid, another start time
        "unknown": None,
    }
    try:
        for name, record in records.items():
            d = tmp_path / f".t.tmp-{name}"
            (d / "layers").mkdir(parents=True)
            if record is not None:
                (d / WRITER_FILE).write_text(json.dumps(record))
        (tmp_path / ".u.tmp-dead").mkdir()  # another target's leftover
        (tmp_path / ".u.tmp-dead" / WRITER_FILE).write_text(json.dumps(records["dead"]))
        removed = remove_dead_leftovers(out)
        want = ["dead", "reused_pid"] if stat else ["dead"]
        assert sorted(p.name for p in removed) == [f".t.tmp-{n}" for n in want]
        kept = {p.name for p in tmp_path.iterdir()}
        assert kept == {f".t.tmp-{n}" for n in records if n not in want} | {".u.tmp-dead"}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_full_disk_while_writing_is_one_error_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fmt._HashingFile, "write", full)
    with pytest.raises(TraceError) as e:
        write_trace(tmp_path / "t")
    assert "No space left on device" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_raises_keyboard_interrupt_in_main_only_and_a_forked_child_still_dies_of_it():
    code = """
import os, signal, sys
from simcore.cli import _sigterm_as_interrupt

@_sigterm_as_interrupt
def run():
    pid = os.fork()
    if pid == 0:  # a forked worker inherits the handler: SIGTERM must still end it
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
    except KeyboardInterrupt:
        return "interrupted"

assert run() == "interrupted"
assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_rewriting_a_trace_replaces_it_and_leaves_no_hidden_files(tmp_path):
    write_trace(tmp_path / "t", seed=1)
    write_trace(tmp_path / "t", seed=2, n=8)
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["layers", "trace.json"]
    assert TraceReader(tmp_path / "t").n_tokens == 8
