# Sourced by tools/demo.sh and tools/test.sh: create or reuse .venv with simcore and its extras.
# Reinstalls only when pyproject.toml changes. torch is pinned to the CPU build 2.13.0 and installed
# first, so that no other package pulls a CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIMCORE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "simcore: creating virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.simcore-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "simcore: installing simcore and its dependencies into $VENV (first run takes a few minutes)" >&2
  LOG="$VENV/install.log"
  if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$VENV/bin/python" -m pip install --disable-pip-version-check "torch==2.13.0" &&
         "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT[trace,test]"; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "simcore: installation failed; the full log is $LOG" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
