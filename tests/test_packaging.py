"""What an installed simcore carries: device profiles as package data, the py.typed marker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import simcore
from simcore.device import DEVICES_DIR, available_devices, load_device

ROOT = Path(__file__).resolve().parent.parent


def test_device_profiles_live_inside_the_package():
    assert DEVICES_DIR.parent == Path(simcore.__file__).resolve().parent
    assert {"a18", "snapdragon-8s-gen3", "snapdragon-8-gen3"} <= set(available_devices())
    assert load_device("a18").flash_bw_gbps == 1.0
    assert (ROOT / "devices" / "a18.yaml").read_bytes() == (DEVICES_DIR / "a18.yaml").read_bytes()


@pytest.mark.slow
def test_a_built_wheel_holds_every_device_profile_and_py_typed(tmp_path):
    setuptools = pytest.importorskip("setuptools")  # built offline, with the environment's setuptools
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("pyproject.toml needs setuptools >= 77 to build")
    src = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT / "simcore", src / "simcore", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(src),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("simcore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "simcore/py.typed" in names
    assert {f"simcore/devices/{n}.yaml" for n in available_devices()} <= names
