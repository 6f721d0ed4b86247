"""Device profiles (simcore/device.py, simcore/devices/*.yaml) and the units they are written in."""

from __future__ import annotations

import pytest

from simcore.cli import main
from simcore.device import available_devices, load_device, override
from simcore.errors import ConfigError, SimcoreError
from simcore.trace.synth import synth_trace


@pytest.fixture(scope="module")
def smol_trace(tmp_path_factory):
    return synth_trace("smollm2-135m", 12, tmp_path_factory.mktemp("t") / "smol", seed=3)


def test_every_bundled_profile_loads_and_names_its_sources():
    names = available_devices()
    assert {"a18", "snapdragon-8s-gen3", "snapdragon-8-gen3"} <= set(names)
    for name in names:
        d = load_device(name)
        assert d.name == name and d.flash_bw_gbps <= d.dram_bw_gbps and d.sources


def test_a_profile_by_path_is_the_same_as_by_name(tmp_path):
    from simcore.device import DEVICES_DIR

    copy = tmp_path / "mine.yaml"
    copy.write_text((DEVICES_DIR / "a18.yaml").read_text())
    assert load_device(str(copy)).model_dump() | {"name": "a18"} == load_device("a18").model_dump()


def test_overrides_are_validated_like_the_file():
    a18 = load_device("a18")
    assert override(a18, flash_bw_gbps=2.0).flash_bw_gbps == 2.0
    assert override(a18, flash_bw_gbps=None) == a18
    with pytest.raises(ConfigError, match="exceeds dram_bw_gbps"):
        override(a18, flash_bw_gbps=a18.dram_bw_gbps * 2)


def test_malformed_device_files_name_the_file_and_field(tmp_path, smol_trace, capsys):
    cases = {
        "typo.yaml": ("dram_bw_gbps: 60\nflash_bw_gbsp: 1\n", "field 'flash_bw_gbsp': unknown key"),
        "neg.yaml": ("dram_bw_gbps: -60\nflash_bw_gbps: 1\n", "field 'dram_bw_gbps'"),
        "bad.yaml": ("dram_bw_gbps: [60\n", "is not valid YAML"),
        "odd.yaml": ("dram_bw_gbps: 1\nflash_bw_gbps: 5\n", "exceeds dram_bw_gbps"),
    }
    for name, (text, message) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        assert main(["replay", "--trace", str(smol_trace), "--device", str(p), "--dram", "80MB"]) == 2
        err = capsys.readouterr().err
        assert message in err and str(p) in err, err


def test_sizes_and_bandwidths_parse_in_both_spellings():
    from simcore.units import parse_bandwidth, parse_size

    assert parse_size("4GB") == 4_000_000_000 and parse_size("4GiB") == 4 * 2**30 and parse_size("512MB") == 512e6
    assert parse_bandwidth("1") == 1.0 and parse_bandwidth("1GB/s") == 1.0 and parse_bandwidth("500MB/s") == 0.5
    for bad in ("4XB", "GB", "4 G B", "-1GB"):
        with pytest.raises(ConfigError):
            parse_size(bad)
    assert issubclass(ConfigError, SimcoreError)
