#!/usr/bin/env bash
# The test suite, from a fresh clone: installs what it needs into .venv, then runs pytest.
# Extra arguments go to pytest (e.g. -x, -k lfu).
source "$(dirname "$0")/venv.sh"
python -m pytest -q "$@"
