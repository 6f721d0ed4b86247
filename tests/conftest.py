import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_user_calibration(tmp_path_factory, monkeypatch):
    """Tests see no calibration/ files of the working directory (simcore calibrate's output)."""
    monkeypatch.setenv("SIMCORE_CALIBRATION", str(tmp_path_factory.mktemp("calibration")))
