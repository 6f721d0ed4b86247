"""Bad input, typed as a new user would, ends in one line on stderr and exit status 2, never in a
traceback, and says what is wrong (issue #11, "No silent fallbacks, no traceback").

The table runs every case in-process through ``simcore.cli.main`` with a fake model loader that fails
the test when called: ``eval``, ``calibrate``, ``prune`` and ``trace`` must reject a bad setting before
they load a model (the real load takes 10-20 s). A few cases run as subprocesses, to pass path bytes that
are not UTF-8 the way a shell does.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simcore.cli import main
from simcore.errors import ConfigError

TINY = Path(__file__).resolve().parents[1] / "traces" / "tiny"
"""6 tokens, 1 layer: a replay of it needs --warmup below 6, or its figures come with a warning."""
BAD_BYTE = os.fsdecode(b"\xff")  # how Python holds a path byte that is not UTF-8 (a lone surrogate)


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    """A workspace of bad inputs: malformed device files, broken traces, a file where a directory goes."""
    from simcore.trace.synth import synth_trace

    w = tmp_path_factory.mktemp("bad")
    synth_trace("smollm2-135m", 16, w / "smol", seed=1)
    files = {
        "unknown.yaml": b"dram_bw_gbps: 60\nflash_bw_gbps: 1\nflash_bw_gbsp: 2\n",
        "wrongtype.yaml": b"dram_bw_gbps: fast\nflash_bw_gbps: 1\n",
        "negative.yaml": b"dram_bw_gbps: -60\nflash_bw_gbps: 1\n",
        "infinite.yaml": b"dram_bw_gbps: .inf\nflash_bw_gbps: 1\n",
        "list.yaml": b"- 60\n- 1\n",
        "empty.yaml": b"",
        "latin1.yaml": b"name: caf\xe9\ndram_bw_gbps: 60\nflash_bw_gbps: 1\n",
        "syntax.yaml": b"dram_bw_gbps: [60\n",
        "slow-dram.yaml": b"dram_bw_gbps: 1\nflash_bw_gbps: 5\n",
        "afile": b"hello\n",
        "notes.txt": b"plain text, not a table\n",
        "latin1.txt": b"caf\xe9\n",
        "broken.parquet": b"PAR1 not really",
    }
    for name, data in files.items():
        (w / name).write_bytes(data)
    (w / "dir.yaml").mkdir()
    (w / "emptydir").mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), w / "other.parquet")  # a Parquet file, not a results table
    pq.write_table(pa.table({"model": ["x"], "method": ["dip"]}), w / "eval-short.parquet")
    # broken traces, each a copy of the good one with one thing wrong
    for name in ("no-layer", "truncated", "bad-json", "few-layers", "no-meta", "other-model"):
        shutil.copytree(w / "smol", w / name)
    (w / "no-layer" / "layers" / "003.parquet").unlink()
    f = w / "truncated" / "layers" / "005.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    (w / "bad-json" / "trace.json").write_text("{not json")
    meta = json.loads((w / "few-layers" / "trace.json").read_text())
    meta["model"]["n_layers"] = 12
    (w / "few-layers" / "trace.json").write_text(json.dumps(meta))
    (w / "no-meta" / "trace.json").unlink()
    meta = json.loads((w / "other-model" / "trace.json").read_text())
    meta["model"]["d_int"] = 2048
    (w / "other-model" / "trace.json").write_text(json.dumps(meta))
    return w


@pytest.fixture(autouse=True)
def _no_model_load(monkeypatch):
    """Any model load fails the test: bad settings must be found before it. The fake still resolves the
    name first, as the real loader does within milliseconds (an unknown model is a fast error)."""
    from simcore.models import registry
    from simcore.trace import tracer

    def refuse(name="smollm2-135m", model_path=None, *args, **kwargs):
        registry.resolve(name, model_path)
        raise AssertionError(f"model {name!r} was loaded before a bad setting was reported")

    monkeypatch.setattr(registry, "load_model", refuse)
    monkeypatch.setattr(tracer, "load_model", refuse, raising=False)


@pytest.fixture(autouse=True)
def _special_files_stay(monkeypatch):
    """A writer must never replace or delete /dev/full or /dev/null (as root it could): fail instead."""
    for name in ("replace", "rename", "remove", "unlink"):
        real = getattr(os, name)

        def guarded(*args, _real=real, _name=name, **kwargs):
            for a in args[:2]:
                if isinstance(a, (str, os.PathLike)) and os.fspath(a) in ("/dev/full", "/dev/null"):
                    raise AssertionError(f"os.{_name}{args} would destroy a device file")
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, guarded)


T = "--trace {w}/smol --dram 80MB --warmup 1"  # a valid replay of the 16-token trace, to add one bad flag to
E = "--tokens 64 --seq-len 32"  # a valid evaluation size, to add one bad flag to
CASES: list[tuple[str, str]] = [
    # ---------------------------------------------------------------- replay: sizes and bandwidths
    (f"replay {T} --dram 4XB", "cannot read --dram '4XB'"),
    (f"replay {T} --dram 4G", "cannot read --dram '4G'"),
    (f"replay {T} --dram 4GBs", "cannot read --dram '4GBs'"),
    (f"replay {T} --dram -1GB", "--dram must not be negative"),
    (f"replay {T} --dram 0", "--dram must be positive, got '0'"),
    (f"replay {T} --dram 0GB", "--dram must be positive"),
    (f"replay {T} --dram 1e400GB", "--dram '1e400GB' is too large"),
    (f"replay {T} --dram 1e400", "is too large"),
    (f"replay {T} --dram inf", "cannot read --dram 'inf'"),
    (f"replay {T} --dram nan", "cannot read --dram 'nan'"),
    (f"replay {T} --dram ''", "cannot read --dram ''"),
    (f"replay {T} --dram 10MB", "smaller than the model's resident part"),
    (f"replay {T} --flash-bw inf", "--flash-bw must be a positive, finite number"),
    (f"replay {T} --flash-bw nan", "--flash-bw must be a positive, finite number"),
    (f"replay {T} --flash-bw 1e400", "--flash-bw must be a positive, finite number"),
    (f"replay {T} --flash-bw 1e400GB/s", "--flash-bw must be a positive, finite number"),
    (f"replay {T} --flash-bw 0", "--flash-bw must be a positive"),
    (f"replay {T} --flash-bw -1", "--flash-bw must be a positive"),
    (f"replay {T} --flash-bw fast", "cannot read --flash-bw 'fast'"),
    (f"replay {T} --flash-bw GB/s", "cannot read --flash-bw 'GB/s'"),
    (f"replay {T} --dram-bw inf", "--dram-bw must be a positive, finite number"),
    (f"replay {T} --flash-bw 70", "flash_bw_gbps (70.0) exceeds dram_bw_gbps (60.0)"),
    (f"replay {T} --dram-bw 0.5", "exceeds dram_bw_gbps (0.5)"),
    # ---------------------------------------------------------------- replay: --kind-split
    (f"replay {T} --kind-split a,b", "--kind-split 'a,b': give comma-separated numbers"),
    (f"replay {T} --kind-split ,", "--kind-split ',': give comma-separated numbers"),
    (f"replay {T} --kind-split 1", "caches 2 unit kinds per layer (input, down)"),
    (f"replay {T} --kind-split 1,2,3", "--kind-split 1,2,3: this method caches 2 unit kinds"),
    (f"replay {T} --kind-split -1,2", "non-negative"),
    (f"replay {T} --kind-split 0,0", "not all zero"),
    (f"replay {T} --kind-split nan,1", "--kind-split: Input should be a finite number"),
    (f"replay {T} --kind-split inf,1", "--kind-split: Input should be a finite number"),
    (f"replay {T} --method dense --kind-split 1,1", "caches 1 unit kind per layer (neuron)"),
    # ---------------------------------------------------------------- replay: settings
    (f"replay {T} --density 0", "--density must be in (0, 1], got 0.0"),
    (f"replay {T} --density -0.5", "--density must be in (0, 1]"),
    (f"replay {T} --density 1.5", "--density must be in (0, 1]"),
    (f"replay {T} --density nan", "--density: Input should be a finite number"),
    (f"replay {T} --density 1e400", "--density: Input should be a finite number"),
    (f"replay {T} --density half", "Invalid value for '--density'"),
    (f"replay {T} --gamma 0", "--gamma must be in (0, 1], got 0.0"),
    (f"replay {T} --gamma 1.5", "--gamma must be in (0, 1]"),
    (f"replay {T} --gamma nan", "--gamma: Input should be a finite number"),
    (f"replay {T} --method dip-ca --gamma 0.5 --policy belady", "--policy belady needs masks that do not depend"),
    (f"replay {T} --method dip-ca --approx-m 0.5", "--approx-m must be 0 (off) or above 1"),
    (f"replay {T} --method glu --density 0.5", "cannot go below 0.667"),
    (f"replay {T} --rho-in 2", "--rho-in: Input should be less than or equal to 1"),
    (f"replay {T} --rho-in 0.5 --rho-d 0.9", "give only one of them"),
    (f"replay {T} --bits 0", "--bits: Input should be greater than 0"),
    (f"replay {T} --bits 64", "--bits: Input should be less than or equal to 32"),
    (f"replay {T} --bits nan", "--bits: Input should be a finite number"),
    (f"replay {T} --group-size -1", "--group-size: Input should be greater than or equal to 0"),
    (f"replay {T} --scale-bits -1", "--scale-bits"),
    (f"replay {T} --kv-bits inf", "--kv-bits: Input should be a finite number"),
    (f"replay {T} --context -1", "--context: Input should be greater than or equal to 0, got -1"),
    (f"replay {T} --tokens 0", "--tokens: Input should be greater than 0, got 0"),
    (f"replay {T} --tokens -3", "--tokens: Input should be greater than 0"),
    (f"replay {T} --tokens many", "Invalid value for '--tokens'"),
    (f"replay {T} --warmup -1", "--warmup: Input should be greater than or equal to 0"),
    (f"replay {T} --threads -1", "--threads: Input should be greater than or equal to 0, got -1"),
    (f"replay {T} --batch-tokens 0", "--batch-tokens: Input should be greater than 0"),
    (f"replay {T} --cats-calib-tokens 0", "--cats-calib-tokens applies only to method cats"),
    (f"replay {T} --method cats --cats-calib-tokens 0", "--cats-calib-tokens: Input should be greater than 0"),
    (f"replay {T} --approx-m 2 --gamma-schedule authors", "--approx-m"),
    (f"replay {T} --approx-m 2 --gamma 0.5", "--gamma would be ignored"),
    (f"replay {T} --method ./no_such_method.py", "no such file"),
    (f"replay {T} --policy ./no_such_policy.py", "no such file"),
    (f"replay {T} --fixed-top-n -1", "--fixed-top-n"),
    (f"replay {T} --gamma-warmup -1", "--gamma-warmup"),
    (f"replay {T} --method nosuch", "unknown method 'nosuch'"),
    (f"replay {T} --method DIP", "unknown method 'DIP'"),
    (f"replay {T} --policy mru", "unknown policy 'mru'"),
    (f"replay {T} --frobnicate", "No such option '--frobnicate'"),
    (f"replay {T} extra", "unexpected extra argument"),
    (f"replay {T} --pruned {{w}}/emptydir", "--pruned {w}/emptydir: not a `simcore prune` output"),
    (f"replay {T} --pruned {{w}}/afile", "--pruned {w}/afile is a file"),
    (f"replay {T} --pruned {{w}}/nosuch", "--pruned {w}/nosuch does not exist"),
    # ---------------------------------------------------------------- replay: device files
    (f"replay {T} --device pixel-99", "unknown device 'pixel-99'"),
    (f"replay {T} --device {{w}}/unknown.yaml", "field 'flash_bw_gbsp': unknown key (did you mean 'flash_bw_gbps'"),
    (f"replay {T} --device {{w}}/wrongtype.yaml", "field 'dram_bw_gbps': Input should be a valid number"),
    (f"replay {T} --device {{w}}/negative.yaml", "field 'dram_bw_gbps': Input should be greater than 0"),
    (f"replay {T} --device {{w}}/infinite.yaml", "field 'dram_bw_gbps': Input should be a finite number"),
    (f"replay {T} --device {{w}}/list.yaml", "holds a list; it must be a mapping"),
    (f"replay {T} --device {{w}}/empty.yaml", "is empty; it must be a mapping"),
    (f"replay {T} --device {{w}}/latin1.yaml", "is not UTF-8 text (byte 0xe9"),
    (f"replay {T} --device {{w}}/syntax.yaml", "is not valid YAML"),
    (f"replay {T} --device {{w}}/slow-dram.yaml", "Flash faster than DRAM is not a phone"),
    (f"replay {T} --device {{w}}/afile", "holds a str; it must be a mapping"),
    (f"replay {T} --device {{w}}/dir.yaml", "--device {w}/dir.yaml is a directory, not a YAML device file"),
    (f"replay {T} --device {{w}}", "--device {w} is a directory, not a YAML device file"),
    (f"replay {T} --device {{w}}/nosuch.yaml", "device file {w}/nosuch.yaml does not exist"),
    # ---------------------------------------------------------------- replay: traces
    ("replay --trace {w}/afile --dram 80MB", "{w}/afile is a file, not a trace directory"),
    ("replay --trace {w}/nosuch --dram 80MB", "no trace at {w}/nosuch"),
    ("replay --trace {w}/emptydir --dram 80MB", "trace.json is missing"),
    ("replay --trace {w}/no-meta --dram 80MB", "trace.json is missing"),
    ("replay --trace {w}/no-layer --dram 80MB", "layers/003.parquet is missing"),
    ("replay --trace {w}/truncated --dram 80MB", "005.parquet is truncated or corrupt"),
    ("replay --trace {w}/bad-json --dram 80MB", "trace.json is not valid JSON"),
    ("replay --trace {w}/few-layers --dram 80MB", "n_layers 12"),
    ("replay --trace {w}/other-model --dram 80MB", "does not belong to this trace's model"),
    (f"replay {T} --model mistral7b", "records model 'smollm2-135m', not --model 'mistral7b'"),
    ("replay --model no-such-model --dram 80MB", "no trace at traces/no-such-model"),
    (f"replay --trace {BAD_BYTE} --dram 80MB", "no trace at \ufffd"),
    # ---------------------------------------------------------------- replay: outputs
    (
        f"replay {T} --out {{w}}/afile/x.json",
        "cannot write --out {w}/afile/x.json: {w}/afile is a file, not a directory",
    ),
    (f"replay {T} --out {{w}}/afile/x.parquet", "{w}/afile is a file, not a directory"),
    (f"replay {T} --out {{w}}/afile/deeper/x.json", "{w}/afile is a file, not a directory"),
    (f"replay {T} --out {{w}}/emptydir", "is a directory"),
    (f"replay {T} --out {{w}}/afile/{BAD_BYTE}.json", "{w}/afile/\ufffd.json"),
    (
        "replay --trace {tiny} --dram 1MB --context 0 --warmup 1 --out /dev/full",
        "cannot write /dev/full: No space left",
    ),
    (
        "replay --trace {tiny} --dram 1MB --context 0 --warmup 1 --out /dev/full --json",
        "cannot write /dev/full: No space left",
    ),
    # ---------------------------------------------------------------- synth
    ("synth --tokens 0 --out {w}/s", "--tokens"),
    ("synth --tokens -1 --out {w}/s", "--tokens"),
    ("synth --seq-len 0 --out {w}/s", "--seq-len"),
    ("synth --model gpt5 --out {w}/s", "unknown model preset 'gpt5'"),
    ("synth --phi 1.5 --out {w}/s", "--phi"),
    ("synth --columns x --out {w}/s", "h"),
    ("synth --columns x,h,q --out {w}/s", "'q'"),
    ("synth --out {w}/afile", "{w}/afile"),
    ("synth --out {w}/afile/t", "{w}/afile"),
    # ---------------------------------------------------------------- sweep
    ("sweep --trace {w}/smol --dram 4XB --out {w}/sw.parquet --workers 1", "cannot read --dram '4XB'"),
    ("sweep --trace {w}/smol --dram 1e400GB --out {w}/sw.parquet --workers 1", "too large"),
    ("sweep --trace {w}/smol --dram 80MB --tokens 0 --out {w}/sw.parquet --workers 1", "--tokens"),
    ("sweep --trace {w}/smol --dram 80MB --workers -1 --out {w}/sw.parquet", "--workers"),
    ("sweep --trace {w}/smol --dram 80MB --density 0.3:0.1:0.1 --out {w}/sw.parquet --workers 1", "--density"),
    ("sweep --trace {w}/smol --dram 80MB --density a,b --out {w}/sw.parquet --workers 1", "--density"),
    ("sweep --trace {w}/smol --dram 80MB --executor ray --out {w}/sw.parquet", "Invalid value for '--executor'"),
    ("sweep --grid {w}/nosuch.yaml --out {w}/sw.parquet", "{w}/nosuch.yaml"),
    ("sweep --grid {w}/latin1.yaml --out {w}/sw.parquet", "UTF-8"),
    ("sweep --grid {w}/list.yaml --out {w}/sw.parquet", "{w}/list.yaml"),
    ("sweep --trace {w}/smol --dram 80MB --out {w}/afile/sw.parquet --workers 1", "{w}/afile"),
    ("sweep --trace {w}/smol --dram 80MB --out {w}/emptydir --workers 1", "is a directory"),
    ("sweep --trace {w}/nosuch --dram 80MB --out {w}/sw-none.parquet --workers 1", "no trace at {w}/nosuch"),
    # ---------------------------------------------------------------- eval: fails before the model load
    (f"eval {E} --density 1.5", "--density must be in (0, 1], got 1.5"),
    (f"eval {E} --density 0", "--density must be in (0, 1]"),
    (f"eval {E} --density nan", "--density: Input should be a finite number"),
    (f"eval {E} --method nosuch", "unknown method 'nosuch'"),
    (f"eval {E} --policy nosuch", "unknown policy 'nosuch'"),
    (f"eval {E} --device pixel-99", "unknown device 'pixel-99'"),
    (f"eval {E} --device {{w}}/latin1.yaml", "is not UTF-8 text"),
    (f"eval {E} --device {{w}}/dir.yaml", "is a directory, not a YAML device file"),
    (f"eval {E} --dram 0", "--dram must be positive"),
    (f"eval {E} --dram 1MB", "smaller than the model's resident part"),
    (f"eval {E} --dram 1e400GB", "is too large"),
    (f"eval {E} --flash-bw inf", "--flash-bw must be a positive, finite number"),
    (f"eval {E} --gamma 0", "--gamma must be in (0, 1]"),
    (f"eval {E} --method dip-ca --gamma 0.2 --policy belady", "--policy belady needs masks that do not depend"),
    (f"eval {E} --kind-split 1,2,3", "caches 2 unit kinds"),
    (f"eval {E} --bits 0", "--bits"),
    (f"eval {E} --context -1", "--context"),
    ("eval --tokens 1", "--tokens 1 is too few to score"),
    ("eval --tokens 0", "--tokens 0 is too few to score"),
    ("eval --tokens -5", "too few to score"),
    (f"eval {E} --seq-len 1", "--seq-len 1 is too short"),
    ("eval --tokens 64 --seq-len 0", "--seq-len 0 is too short"),
    (f"eval {E} --offset -1", "--offset must not be negative"),
    (f"eval {E} --calib-tokens -1", "--calib-tokens must not be negative"),
    (f"eval {E} --offset 8190 --method cats --density 0.8", "overlap calibration tokens"),
    (f"eval {E} --out {{w}}/afile/x.json", "{w}/afile is a file, not a directory"),
    (f"eval {E} --out {{w}}/emptydir", "is a directory"),
    (f"eval {E} --fidelity={{w}}/nosuch", "no trace at {w}/nosuch"),
    (f"eval {E} --pruned {{w}}/emptydir", "not a `simcore prune` output"),
    (f"eval {E} --text {{w}}/nosuch.txt", "no such file"),
    (f"eval {E} --text {{w}}/latin1.txt", "not UTF-8 text"),
    (f"eval {E} --dataset imagenet", "unknown data set 'imagenet'"),
    (f"eval {E} --model gpt5", "unknown model 'gpt5'"),
    (f"eval {E} --model-path {{w}}/nosuch", "--model-path {w}/nosuch does not exist"),
    (f"eval {E} --model-path {{w}}/afile", "is a file but not a .gguf"),
    (f"eval {E} --model-path {{w}}/emptydir", "has no config.json and no .gguf file"),
    # ---------------------------------------------------------------- calibrate
    ("calibrate --densities 1.5", "--densities: 1.5 is not in (0, 1]"),
    ("calibrate --densities 0", "is not in (0, 1]"),
    ("calibrate --densities nan", "is not in (0, 1]"),
    ("calibrate --densities a,b", "give numbers such as 0.4,0.5"),
    ("calibrate --densities ''", "give numbers such as 0.4,0.5"),
    ("calibrate --tokens 1", "--tokens 1 is too few to score"),
    ("calibrate --tokens 0", "too few to score"),
    ("calibrate --offset -1", "--offset must not be negative"),
    ("calibrate --candidates 0", "--candidates must be at least 1"),
    ("calibrate --text {w}/nosuch.txt", "no such file"),
    ("calibrate --model gpt5", "unknown model 'gpt5'"),
    ("calibrate --model-path {w}/nosuch", "does not exist"),
    # ---------------------------------------------------------------- prune
    ("prune --method magnitude", "unknown pruning method 'magnitude'"),
    ("prune --sparsity 1.5", "--sparsity 1.5 is outside (0, 1)"),
    ("prune --sparsity 0", "--sparsity"),
    ("prune --sparsity 3:2", "needs 0 < N < M"),
    ("prune --sparsity half", "is neither a fraction nor N:M"),
    ("prune --method dass --alpha 0", "--alpha must be > 0"),
    ("prune --method dass --alpha nan", "--alpha must be > 0"),
    ("prune --method dass --alpha inf", "--alpha must be a finite number"),
    ("prune --calib-tokens 0", "--calib-tokens must be a positive number of tokens"),
    ("prune --eval-tokens -1", "--eval-tokens must be a positive number of tokens"),
    ("prune --eval-tokens 1", "score no token"),
    ("prune --seq-len 0", "--seq-len must be a positive number of tokens"),
    ("prune --calib-offset -5", "--calib-offset must be >= 0"),
    ("prune --weight-bits 0", "--weight-bits must be a positive number"),
    ("prune --weight-bits nan", "--weight-bits must be a positive number"),
    ("prune --eval-offset 8192", "overlap evaluation tokens"),
    ("prune --out {w}/afile", "--out {w}/afile is a file"),
    ("prune --out {w}", "is a directory that is not a `simcore prune` output"),
    ("prune --out {w}/afile/p", "{w}/afile is a file, not a directory"),
    ("prune --text {w}/nosuch.txt", "no such file"),
    ("prune --model gpt5", "unknown model 'gpt5'"),
    # ---------------------------------------------------------------- trace
    ("trace --tokens 0 --out {w}/tr", "--tokens"),
    ("trace --seq-len 0 --out {w}/tr", "--seq-len"),
    ("trace --model gpt5 --out {w}/tr", "unknown model 'gpt5'"),
    ("trace --text {w}/nosuch.txt --out {w}/tr", "no such file"),
    ("trace --out {w}/afile", "{w}/afile"),
    ("trace --torch-device tpu", "Invalid value for '--torch-device'"),
    ("trace --dtype int3", "Invalid value for '--dtype'"),
    # ---------------------------------------------------------------- report
    ("report {w}/nosuch.parquet --out {w}/rep", "does not exist"),
    ("report {w}/broken.parquet --out {w}/rep", "cannot read results table"),
    ("report {w}/notes.txt --out {w}/rep", "as a Parquet file"),
    ("report {w}/other.parquet --out {w}/rep", "lacks the column(s)"),
    ("report {w}/emptydir --out {w}/rep", "is a directory"),
    ("report {w}/other.parquet", "Missing option '--out'"),
    ("report {w}/other.parquet --out {w}/afile", "{w}/afile"),
    # ---------------------------------------------------------------- info, devices, the group
    ("info {w}/nosuch", "no trace at {w}/nosuch"),
    ("info {w}/afile", "{w}/afile is a file"),
    ("info {w}/truncated", "truncated or corrupt"),
    ("info {w}/emptydir", "trace.json is missing"),
    ("devices --all", "No such option '--all'"),
    # ---------------------------------------------------------------- options the method would ignore
    (f"replay {T} --dram 64MB --method dip --gamma 0.3", "--gamma applies only to method dip-ca"),
    (f"replay {T} --dram 64MB --method gate --fixed-top-n 4", "--fixed-top-n applies only to method dip-ca"),
    (f"replay {T} --dram 64MB --method up --gamma-warmup 8 --approx-m 2", "would ignore them"),
    (
        f"replay {T} --dram 64MB --method glu --density 0.8 --rho-in 0.5",
        "--rho-in applies only to method dip and dip-ca",
    ),
    (f"replay {T} --dram 64MB --method dense --density 0.5", "method dense has density 1 only"),
    ("eval --method cats --gamma 0.2 --dram 64MB", "--gamma applies only to method dip-ca"),
    (f"replay {T} --overlap-compute", "--overlap-compute needs a compute term"),
    ("devices a18", "unexpected extra argument"),
    ("replicate", "No such command 'replicate'"),
    ("--colour", "No such option '--colour'"),
]


def _argv(case: str, w: Path) -> list[str]:
    return [a.format(w=w, tiny=TINY) for a in shlex.split(case)]


@pytest.mark.parametrize("case, message", CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_line_on_stderr_and_exit_status_2(w, capsys, case, message):
    if "/dev/full" in case and not _is_char_device("/dev/full"):
        pytest.skip("no /dev/full on this machine")
    code = main(_argv(case, w))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("simcore: error: ")
    assert message.format(w=w) in lines[0]


def test_the_table_covers_every_command_with_at_least_100_cases():
    commands = {c.split()[0] for c, _ in CASES}
    assert len(CASES) >= 100
    assert {"replay", "synth", "sweep", "eval", "calibrate", "prune", "report", "info", "devices", "trace"} <= commands


@pytest.mark.parametrize(
    "args, message",
    [
        ([b"replay", b"--trace", b"\xff"], "no trace at \ufffd"),
        ([b"replay", b"--trace", b"traces/tiny", b"--device", b"\xfe.yaml"], "device file \ufffd.yaml does not exist"),
        ([b"replay", b"--trace", b"traces/tiny", b"--out", b"traces/tiny/trace.json/\xff.json"], "is a file"),
        ([b"report", b"\xff.parquet", b"--out", b"\xfe"], "does not exist"),
        ([b"eval", b"--text", b"\xff.txt"], "no such file"),
    ],
)
def test_path_bytes_that_are_not_utf8_print_as_one_line(args, message):
    """As a shell passes them (``simcore replay --trace $'\\xff'``), in the C locale as well."""
    env = dict(os.environ, LC_ALL="C", PYTHONIOENCODING="")
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-m", "simcore", *args], capture_output=True, cwd=root, env=env, timeout=120)
    err = p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err
    assert p.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("simcore: error: "), err
    assert message in err


# ------------------------------------------------------------------------------------ item 12


def test_warmup_not_below_the_tokens_warns_and_the_table_says_there_is_no_steady_state(capsys):
    code = main(["replay", "--trace", str(TINY), "--dram", "1MB", "--context", "0", "--warmup", "6"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err.splitlines() == [
        "simcore: warning: --warmup 6 is not below the 6 tokens replayed, so there is no steady state: the "
        "steady-state figures cover all 6 tokens; give --warmup below 6"
    ]
    assert "steady, after" not in out and "no steady state" in out


def test_tokens_beyond_the_trace_warn_and_are_recorded_in_the_result(capsys):
    code = main(["replay", "--trace", str(TINY), "--dram", "1MB", "--context", "0", "--warmup", "1", "--tokens", "9"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err.splitlines() == ["simcore: warning: --tokens 9 is more than the trace's 6 tokens; replayed all 6"]
    from simcore.engine.replay import replay

    r = replay(trace=str(TINY), dram="1MB", context=0, warmup=1, tokens=9)
    assert r.totals["tokens"] == 6 and r.warnings == ["--tokens 9 is more than the trace's 6 tokens; replayed all 6"]
    assert json.loads(r.to_json())["config"]["warnings"] == r.warnings
    ok = replay(trace=str(TINY), dram="1MB", context=0, warmup=1, tokens=6)
    assert ok.warnings == [] and ok.totals["steady_tokens"] == 5


def test_json_output_is_strict_json():
    from simcore.engine.replay import replay

    r = replay(trace=str(TINY), dram="1MB", context=0, warmup=1)
    r.totals["hit_rate"] = float("nan")
    r.totals["tokens_per_s"] = float("inf")
    data = json.loads(r.to_json(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert data["totals"]["hit_rate"] is None and data["totals"]["tokens_per_s"] is None


# ------------------------------------------------------------------------------------ item 13


@pytest.mark.parametrize(
    "where, err, reason",
    [
        ("replace", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        ("mkstemp", PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        ("mkstemp", OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    ],
)
def test_an_output_that_cannot_be_written_is_one_line_naming_path_and_reason(
    tmp_path, monkeypatch, capsys, where, err, reason
):
    import tempfile

    from simcore import results

    def fail(*args, **kwargs):
        raise err

    if where == "replace":
        monkeypatch.setattr(os, "replace", fail)
    else:
        monkeypatch.setattr(tempfile, "mkstemp", fail)
    out = tmp_path / "r.json"
    with pytest.raises(ConfigError, match=f"cannot write {out}: {reason}"):
        results.atomic_write_bytes(out, b"{}")
    with pytest.raises(ConfigError, match=f"cannot write {out}.parquet: {reason}"):
        results.atomic_write_table(pa.table({"a": [1]}), f"{out}.parquet")
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    code = main(["replay", "--trace", str(TINY), "--dram", "1MB", "--context", "0", "--warmup", "1", "--out", str(out)])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and lines == [f"simcore: error: cannot write {out}: {reason}"]


def test_a_special_file_is_written_in_place_never_replaced():
    from simcore import results

    if not _is_char_device("/dev/null"):
        pytest.skip("no /dev/null")
    results.atomic_write_bytes("/dev/null", b"x")
    results.atomic_write_table(pa.table({"a": [1]}), "/dev/null")
    assert _is_char_device("/dev/null")
    if _is_char_device("/dev/full"):
        with pytest.raises(ConfigError, match="cannot write /dev/full: No space left on device"):
            results.atomic_write_table(pa.table({"a": list(range(10_000))}), "/dev/full")
        assert _is_char_device("/dev/full")


def test_a_malformed_bundled_device_is_one_line_in_simcore_devices(tmp_path, monkeypatch, capsys):
    from simcore import device

    (tmp_path / "broken.yaml").write_bytes(b"dram_bw_gbps: \xff\n")
    monkeypatch.setattr(device, "DEVICES_DIR", tmp_path)
    assert main(["devices"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"simcore: error: device file {tmp_path / 'broken.yaml'} is not UTF-8 text (byte 0xff at offset 14); "
        "save it as UTF-8"
    ]


# ------------------------------------------------------------------------------------ item 15


def test_eval_rejects_a_bad_density_in_milliseconds_without_loading_the_model(capsys):
    start = time.perf_counter()
    assert main(["eval", "--density", "1.5"]) == 2  # the fixture fails the test if a model is loaded
    assert time.perf_counter() - start < 2.0
    assert "--density must be in (0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--no-progress", "--tokens", "64", "--seq-len", "32"],
        ["calibrate", "--no-progress", "--densities", "0.5", "--tokens", "64"],
        ["prune", "--no-progress", "--eval-tokens", "64", "--calib-tokens", "64"],
    ],
)
def test_no_progress_reaches_the_model_loader(argv, monkeypatch, capsys, tmp_path):
    """``--no-progress`` hides the loader's bars (the GGUF de-quantisation bar among them): the loader is
    called with progress=False, and only after every setting was accepted."""
    from simcore.models import registry

    calls = []

    def fake(name="smollm2-135m", model_path=None, *args, **kwargs):
        progress = kwargs.get("progress", args[-1] if len(args) == 4 else None)
        calls.append(progress)
        raise ConfigError("stop here")

    monkeypatch.setattr(registry, "load_model", fake)
    monkeypatch.chdir(tmp_path)  # calibrate and prune would write their outputs here
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == ["simcore: error: stop here"]
    assert calls == [False]
