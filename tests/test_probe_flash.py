"""simcore probe-flash: a real (tiny) measurement on tmp_path gives a valid curve and a profile that
load_device accepts; the test file never outlives the run (success, a failing read, Ctrl-C); bad input
is a one-line ConfigError, found before anything is written."""

from __future__ import annotations

import errno
import json
import os
import threading

import pytest
import yaml
from click.testing import CliRunner

from simcore.device import load_device
from simcore.errors import ConfigError
from simcore.flash import probe as probe_mod
from simcore.flash.probe import device_profile, format_table, probe, probe_flash, profile_yaml

SMALL = {"size": "8MB", "sizes": ["4KiB", "16KiB", "64KiB"], "queue_depths": [1, 2], "seconds": 0.05}
CLI_SMALL = ["--size", "8MB", "--sizes", "4KiB,16KiB,64KiB", "--queue-depths", "1,2", "--seconds", "0.05"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe")
    m = probe(d, **SMALL)
    assert list(d.iterdir()) == []
    return m


def test_curve_has_increasing_sizes_and_positive_throughput_at_every_depth(measured):
    assert sorted(measured["curves"]) == [1, 2]
    for curve in measured["curves"].values():
        assert [b for b, _ in curve] == [4096, 16384, 65536]
        assert all(gbps > 0 for _, gbps in curve)
    assert len(measured["points"]) == 6
    assert all(p["requests"] >= p["queue_depth"] for p in measured["points"])
    assert measured["io"] in ("O_DIRECT", "F_NOCACHE", "buffered")
    assert measured["cached"] == bool(measured["note"])
    assert "QD1" in format_table(measured) and "64 KiB" in format_table(measured)


def test_profile_is_complete_and_takes_the_curve_at_the_chosen_depth(measured, tmp_path):
    prof = device_profile(measured, dram_bw_gbps=60, queue_depth=1, name="phone", page_bytes="16KiB")
    path = tmp_path / "phone.yaml"
    path.write_text(profile_yaml(prof))
    d = load_device(path)
    assert d.name == "phone" and d.dram_bw_gbps == 60 and d.flash_queue_depth == 1
    assert [list(p) for p in d.flash_curve] == measured["curves"][1]
    assert d.flash_bw_gbps == measured["curves"][1][-1][1]
    assert d.flash_page_bytes == 16384
    assert measured["io"] in d.description and "probe-flash" in d.sources[0]


def test_base_lends_its_non_flash_fields_only(measured):
    base = load_device("snapdragon-8-gen3")
    prof = device_profile(measured, base="snapdragon-8-gen3")
    assert prof["dram_bw_gbps"] == base.dram_bw_gbps
    assert prof["dram_capacity_gb"] == base.dram_capacity_gb
    assert "flash_peak_gbps" not in prof and prof["flash_curve"] == measured["curves"][2]
    assert device_profile(measured, base="snapdragon-8-gen3", dram_bw_gbps="50GB/s")["dram_bw_gbps"] == 50


def test_profile_that_contradicts_the_dram_bandwidth_is_a_config_error(measured):
    with pytest.raises(ConfigError, match="not valid.*dram_bw_gbps"):
        device_profile(measured, dram_bw_gbps=1e-6)
    with pytest.raises(ConfigError, match="--queue-depth 4 was not measured"):
        device_profile(measured, dram_bw_gbps=60, queue_depth=4)
    with pytest.raises(ConfigError, match="--dram-bw"):
        device_profile(measured)


def test_cli_writes_a_profile_that_load_device_accepts(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out" / "me.yaml"
    data.mkdir()
    out.parent.mkdir()
    r = CliRunner().invoke(probe_flash, [str(data), *CLI_SMALL, "--dram-bw", "60", "--out", str(out), "--name", "me"])
    assert r.exit_code == 0, r.output
    assert "QD2" in r.output and f"wrote {out}" in r.output
    d = load_device(out)
    assert d.name == "me" and d.flash_queue_depth == 2 and len(d.flash_curve) == 3
    assert list(data.iterdir()) == [] and list(out.parent.iterdir()) == [out]  # no test or temporary file left


def test_cli_json_holds_measurement_and_profile(tmp_path):
    target = tmp_path / "probe.bin"  # a file name that does not exist yet
    r = CliRunner().invoke(probe_flash, [str(target), *CLI_SMALL, "--base", "a18", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["profile"]["dram_bw_gbps"] == load_device("a18").dram_bw_gbps
    assert doc["measurement"]["curves"]["2"] == doc["profile"]["flash_curve"]
    assert not target.exists()


def test_cli_without_dram_figures_prints_the_table_only(tmp_path):
    r = CliRunner().invoke(probe_flash, [str(tmp_path), *CLI_SMALL[:-2], "--seconds", "0.02", "--queue-depths", "1"])
    assert r.exit_code == 0, r.output
    assert "QD1" in r.output and "flash_curve" not in r.output


def test_test_file_is_removed_when_a_read_fails(tmp_path, monkeypatch):
    real, calls, lock = os.preadv, [0], threading.Lock()

    def failing(fd, buffers, offset):
        with lock:
            calls[0] += 1
            if calls[0] > 5:
                raise OSError(errno.EIO, "Input/output error")
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", failing)
    with pytest.raises(OSError, match="Input/output"):
        probe(tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_test_file_is_removed_on_ctrl_c(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        assert len(list(tmp_path.iterdir())) == 1  # the test file exists while reading
        raise KeyboardInterrupt

    monkeypatch.setattr(probe_mod, "_measure_point", interrupted)
    target = tmp_path / "probe.bin"
    with pytest.raises(KeyboardInterrupt):
        probe(target, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_refused_o_direct_falls_back_to_buffered_reads_and_says_so(tmp_path, monkeypatch):
    real = os.open

    def no_direct(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    monkeypatch.setattr(probe_mod, "_no_cache", lambda fd: False)  # as on Linux, also when run on macOS
    m = probe(tmp_path, **{**SMALL, "queue_depths": [1], "sizes": ["4KiB", "8KiB"]})
    assert m["io"] == "buffered" and m["cached"] and "OS cache" in m["note"]
    prof = device_profile(m, dram_bw_gbps=60)
    assert "OS cache" in prof["sources"][0] and "OS cache" in prof["description"]
    assert "warning:" in format_table(m)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"size": "999TB"}, "does not fit"),
        ({"size": "lots"}, "cannot read --size"),
        ({"size": "64KB"}, "test file needs at least"),
        ({"queue_depths": [1, 0]}, "queue depth 0 is out of range"),
        ({"queue_depths": ["x"]}, "not a whole number"),
        ({"sizes": ["4KB"]}, "not a positive multiple of 4096.*4KiB"),
        ({"sizes": ["big"]}, "cannot read request size"),
        ({"seconds": 0}, "--seconds"),
        ({"seconds": 1.0, "time_limit": 2}, "more than --time-limit"),
    ],
)
def test_bad_settings_are_config_errors_and_leave_nothing(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        probe(tmp_path, **{**SMALL, **change})
    assert list(tmp_path.iterdir()) == []


def test_bad_paths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        probe(tmp_path / "missing" / "probe.bin", **SMALL)
    (tmp_path / "mine.bin").write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="already exists"):
        probe(tmp_path / "mine.bin", **SMALL)
    assert (tmp_path / "mine.bin").read_bytes() == b"keep me"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--queue-depths", "1,0"], "queue depth 0"),
        (["--out", "x.yaml"], "--out shapes the device profile"),
        (["--dram-bw", "60", "--queue-depth", "8"], "--queue-depth 8 is not among"),
        (["--dram-bw", "fast"], "--dram-bw"),
        (["--base", "no-such-phone"], "unknown device"),
        (["--sizes", "4KiB,,8KiB"], "empty item"),
    ],
)
def test_cli_bad_options_are_config_errors_before_any_reads(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(probe_mod, "_measure_point", lambda *a, **k: pytest.fail("measured despite a bad option"))
    r = CliRunner().invoke(probe_flash, [str(tmp_path), "--size", "8MB", "--sizes", "4KiB", *args])
    assert isinstance(r.exception, ConfigError), r.output
    assert message in str(r.exception) and "\n" not in str(r.exception)
    assert list(tmp_path.iterdir()) == []


def test_profile_yaml_lists_one_curve_point_a_line(measured):
    text = profile_yaml(device_profile(measured, dram_bw_gbps=60))
    assert "- [4096, " in text
    assert yaml.safe_load(text)["flash_curve"] == measured["curves"][2]
