"""A policy of one's own is one file anywhere on disk: written in a temporary directory with no other
edit, it runs by path through replay, sweep and eval. The file below is FIFO written from scratch with
plain @njit hooks over its own arrays (no simcore helper), so its numbers must equal the package's fifo
exactly: a check that fails if the path is ignored, loaded wrongly or driven differently."""

from __future__ import annotations

import json
import textwrap

import pyarrow.parquet as pq
import pytest

from simcore.cli import main
from simcore.engine.replay import replay
from simcore.trace.synth import synth_trace

MY_FIFO = textwrap.dedent(
    '''
    """my_fifo: evict the unit that entered first (a ring of unit ids)."""
    import numpy as np
    from numba import njit


    def init(n_units, capacity):
        # ring[i]: units in order of entry; pos[0]: index of the oldest, pos[1]: units in the ring
        return (np.zeros(max(capacity, 1), np.int64), np.zeros(2, np.int64))


    @njit
    def hit(s, u, t):
        pass


    @njit
    def evict(s, t, pinned):
        ring, pos = s
        n = ring.shape[0]
        for j in range(pos[1]):  # the oldest unit the current token does not use
            i = (pos[0] + j) % n
            v = ring[i]
            if not pinned[v]:
                for m in range(j, 0, -1):  # close the gap: the older units move up by one
                    ring[(pos[0] + m) % n] = ring[(pos[0] + m - 1) % n]
                pos[0] = (pos[0] + 1) % n
                pos[1] -= 1
                return v
        return -1


    @njit
    def insert(s, u, t, pinned):
        ring, pos = s
        ring[(pos[0] + pos[1]) % ring.shape[0]] = u
        pos[1] += 1
    '''
)


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return synth_trace("smollm2-135m", 40, tmp_path_factory.mktemp("t") / "smol", seed=5)


@pytest.fixture(scope="module")
def my_policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("elsewhere") / "my_fifo.py"
    path.write_text(MY_FIFO)
    return path


@pytest.mark.parametrize("method, extra", [("dip", {}), ("dip-ca", {"gamma": 0.3}), ("cats", {})])
def test_a_policy_file_replays_as_the_policy_it_implements(trace, my_policy, method, extra):
    kw = dict(trace=str(trace), method=method, density=0.5, dram="72MB", warmup=4, threads=1, **extra)
    mine, fifo, lfu = (replay(policy=p, **kw) for p in (str(my_policy), "fifo", "lfu"))
    assert mine.totals["hits"] == fifo.totals["hits"] > 0
    assert [r["hits"] for r in mine.layers] == [r["hits"] for r in fifo.layers]
    assert mine.totals["tokens_per_s"] == fifo.totals["tokens_per_s"]
    assert mine.totals["hits"] != lfu.totals["hits"]  # the policy is really in the loop
    assert mine.config["policy"] == str(my_policy)


def test_a_policy_file_through_the_cli_and_a_sweep(trace, my_policy, tmp_path, capsys):
    assert main(["replay", "--trace", str(trace), "--policy", str(my_policy), "--dram", "72MB", "--json"]) == 0
    by_cli = json.loads(capsys.readouterr().out)
    assert by_cli["totals"]["hits"] == replay(trace=str(trace), policy="fifo", dram="72MB").totals["hits"]

    out = tmp_path / "sweep.parquet"
    args = ["sweep", "--trace", str(trace), "--policy", f"fifo,{my_policy}", "--dram", "64MB,80MB"]
    assert main([*args, "--method", "dip,dip-ca", "--gamma", "0.3", "--out", str(out), "--workers", "1"]) == 0
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    hits = {(r["policy"] == "fifo", r["method"], r["dram_bytes"]): r["hit_rate"] for r in rows}
    for (is_fifo, method, dram), rate in hits.items():
        assert rate == hits[(not is_fifo, method, dram)]


def test_a_policy_file_in_the_evaluation_loop(my_policy):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from simcore.eval.evaluate import evaluate

    cfg = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()

    def chars(text):
        return {"input_ids": [ord(c) % 300 for c in text]}

    kw = dict(tokenizer=chars, tokens=96, seq_len=32, calib_tokens=64, calib_offset=200, context=0, warmup=8)
    kw.update(method="dip-ca", gamma=0.3, density=0.5, dram="40KB")
    mine, fifo = evaluate(model, policy=str(my_policy), **kw), evaluate(model, policy="fifo", **kw)
    assert mine.perplexity == fifo.perplexity
    assert mine.replay.totals["hits"] == fifo.replay.totals["hits"] > 0
