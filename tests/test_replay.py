"""Hand-worked examples, the throughput formula by hand, the trace format, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from simcore.engine.replay import replay
from simcore.engine.sim import simulate
from simcore.errors import ConfigError, TraceError
from simcore.trace.format import TraceReader
from simcore.trace.synth import synth_trace

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "traces" / "tiny"


@pytest.fixture(scope="module")
def tiny_h():
    return TraceReader(TINY).read_layer(0, ("h",))["h"].astype(np.float32)


# traces/tiny, one layer, units 0..3, top-2 per token: {0,1} {0,2} {1,3} {0,1} {2,3} {0,2}; capacity 3.
#
# LRU:   t0 miss 0,1 -> {0,1}                        hits 0
#        t1 {0,2}: 0 hits, 2 fits     -> {0,1,2}     hits 1
#        t2 {1,3}: 1 hits; evict from {0,2}, both last used t1, tie -> lower index 0 goes -> {1,2,3}  hits 1
#        t3 {0,1}: 1 hits; evict from {2,3}: 2 (t1) older than 3 (t2) -> {0,1,3}                    hits 1
#        t4 {2,3}: 3 hits; evict from {0,1}, both t3, tie -> 0 goes -> {1,2,3}                      hits 1
#        t5 {0,2}: 2 hits; evict from {1,3}: 1 (t3) older than 3 (t4) -> {0,2,3}                    hits 1  => 5
# LFU (count, then recency):
#        t0 0, t1 1, t2 {1,3}: 1 hits; evict from {0 (2 uses), 2 (1 use)} -> 2 goes -> {0,1,3}       hits 1
#        t3 {0,1}: both hit                                                                         hits 2
#        t4 {2,3}: 3 hits; evict from {0 (3, t3), 1 (3, t3)}: tie -> 0 goes -> {1,2,3}               hits 1
#        t5 {0,2}: 2 hits; evict from {1 (3 uses), 3 (2 uses)} -> 3 goes -> {0,1,2}                  hits 1  => 6
# Belady: t0 0, t1 1, t2 {1,3}: 1 hits; evict from {0 (next t3), 2 (next t4)} -> 2 goes             hits 1
#        t3 {0,1}: both hit                                                                         hits 2
#        t4 {2,3}: 3 hits; evict from {0 (next t5), 1 (never)} -> 1 goes -> {0,2,3}                  hits 1
#        t5 {0,2}: both hit                                                                         hits 2  => 7
HAND = {"lru": [0, 1, 1, 1, 1, 1], "lfu": [0, 1, 1, 2, 1, 1], "belady": [0, 1, 1, 2, 1, 2], "none": [0] * 6}


@pytest.mark.parametrize("policy", sorted(HAND))
def test_hand_worked_hits_for_each_policy(tiny_h, policy):
    got = simulate(tiny_h, k=2, cap=3, policy=policy)
    assert got["hits"].tolist() == HAND[policy]
    assert got["used"].tolist() == [2] * 6


def test_hand_worked_dip_ca_at_gamma_0_2(tiny_h):
    # LRU, capacity 3, uncached scores x 0.2:
    # t0 cold cache, all scaled alike -> {0,1}                                        hits 0, cache {0,1}
    # t1 [.9 .1 .8 .2] -> cached 0:.9 1:.1, uncached 2:.16 3:.04 -> {0,2}               hits 1, cache {0,1,2}
    # t2 [.1 .9 .2 .8] -> 0:.1 1:.9 2:.2 (cached), 3:.16 -> {1,2}: unit 3 loses to cached 2   hits 2
    # t3 [.8 .9 .3 .2] -> {0,1}                                                         hits 2
    # t4 [.2 .1 .9 .8] -> 2:.9 0:.2 (cached) beat 3:.16 -> {0,2}                         hits 2
    # t5 [.9 .3 .8 .1] -> {0,2}                                                         hits 2  => 9 (plain dip: 5)
    got = simulate(tiny_h, k=2, cap=3, policy="lru", gamma=0.2)
    assert got["hits"].tolist() == [0, 1, 2, 2, 2, 2]
    assert simulate(tiny_h, k=2, cap=3, policy="lru", gamma=1.0)["hits"].sum() == 5


def test_dip_ca_at_gamma_1_equals_dip_through_replay():
    a = replay(trace=str(TINY), method="dip", density=0.5, dram="1MB", policy="lru", context=0)
    b = replay(trace=str(TINY), method="dip-ca", density=0.5, gamma=1.0, dram="1MB", policy="lru", context=0)
    assert a.totals["hits"] == b.totals["hits"] and a.totals["tokens_per_s"] == b.totals["tokens_per_s"]


# --- the throughput formula by hand ---------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_trace(tmp_path_factory):
    return synth_trace("smollm2-135m", 12, tmp_path_factory.mktemp("t") / "smol", seed=3)


def test_dense_4bit_throughput_equals_the_formula_by_hand(smol_trace):
    # SmolLM2-135M: 30 layers, d 576, d_int 1536, 9 heads / 3 kv heads of 64, vocab 49152, tied.
    bpw = (4 + 16 / 128) / 8  # INT4, group 128, 16-bit scale: 4.125 bits = 0.515625 bytes
    attention = 30 * (2 * 576 * 576 + 2 * 576 * 3 * 64)  # q, o and k, v
    embedding = 49152 * 576
    norms = (2 * 30 + 1) * 576
    kv = 2 * 30 * 3 * 64 * 1024 * 2  # K and V, fp16, context 1024
    resident = (attention + embedding) * bpw + norms * 2 + kv
    read_static = (attention + embedding) * bpw + norms * 2 + kv  # tied: the LM head is the embedding table
    unit = 3 * 576 * bpw  # a neuron: W_u row, W_g row, W_d column
    budget = 70e6
    cap = int((budget - resident) / 30 // unit)  # neurons cached per layer
    assert 0 < cap < 1536
    flash = 30 * (1536 - cap) * unit  # every neuron is used every token; the cached ones hit
    dram = read_static + 30 * 1536 * unit
    tokens_per_s = 1 / (dram / 60e9 + flash / 1e9)

    r = replay(trace=str(smol_trace), method="dense", device="a18", dram="70MB", policy="lru", warmup=1)
    assert r.kinds["neuron"]["capacity_per_layer"] == cap
    assert r.totals["hit_rate_steady"] == pytest.approx(cap / 1536)
    assert r.totals["tokens_per_s_steady"] == pytest.approx(tokens_per_s, rel=1e-9)
    assert r.totals["mlp_density"] == 1.0


def test_density_is_achieved_for_each_method(smol_trace):
    for method in ("dip", "dip-ca", "gate", "up"):
        r = replay(trace=str(smol_trace), method=method, density=0.7, dram="80MB")
        assert r.totals["mlp_density"] == pytest.approx(0.7, abs=2e-3), method
    r = replay(trace=str(smol_trace), method="glu", density=0.8, dram="80MB")
    assert r.totals["mlp_density"] == pytest.approx(0.8, abs=2e-3)


def test_replay_is_deterministic_and_writes_its_configuration(smol_trace, tmp_path):
    a = replay(trace=str(smol_trace), dram="80MB")
    b = replay(trace=str(smol_trace), dram="80MB")
    assert a.to_json() == b.to_json()
    a.to_parquet(tmp_path / "r.parquet")
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "r.parquet")
    meta = json.loads(t.schema.metadata[b"simcore"])
    assert meta["config"]["method"] == "dip-ca" and meta["config"]["dram_bytes"] == 80_000_000
    assert t.num_rows == 30 * 2 + 2 + 1
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_more_dram_never_lowers_throughput_for_dip_lru(smol_trace):
    rates = [
        replay(trace=str(smol_trace), method="dip", dram=d, policy="lru").totals["tokens_per_s"]
        for d in ("60MB", "70MB", "80MB", "200MB")
    ]
    assert rates == sorted(rates)
    assert math.isfinite(rates[-1])


# --- bad input --------------------------------------------------------------------------------------


def _cli(*args):
    from simcore.cli import main

    return main(list(args))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dram", "4XB"], "cannot read --dram '4XB'"),
        (["--dram", "1MB"], "smaller than the model's resident part"),
        (["--policy", "belady"], "needs masks that do not depend on the cache"),
        (["--policy", "mru"], "unknown policy 'mru'"),
        (["--method", "magic"], "unknown method 'magic'"),
        (["--method", "glu", "--density", "0.5"], "cannot go below 0.667"),
        (["--density", "1.5"], "--density must be in (0, 1]"),
        (["--gamma", "0"], "--gamma must be in (0, 1]"),
        (["--device", "pixel-99"], "unknown device 'pixel-99'"),
        (["--flash-bw", "fast"], "cannot read --flash-bw 'fast'"),
        (["--model", "mistral7b"], "records model 'smollm2-135m', not --model 'mistral7b'"),
    ],
)
def test_bad_replay_input_is_one_clear_line(smol_trace, capsys, args, message):
    code = _cli("replay", "--trace", str(smol_trace), "--dram", "80MB", *args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_broken_traces_are_clear_errors(smol_trace, tmp_path):
    import shutil

    missing = tmp_path / "nothing"
    with pytest.raises(TraceError, match="does not exist"):
        TraceReader(missing)
    t = tmp_path / "t"
    shutil.copytree(smol_trace, t)
    f = t / "layers" / "007.parquet"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match="007.parquet is truncated or corrupt"):
        TraceReader(t)
    f.unlink()
    with pytest.raises(TraceError, match="007.parquet is missing"):
        TraceReader(t)
    (t / "trace.json").unlink()
    with pytest.raises(TraceError, match="trace.json is missing"):
        TraceReader(t)


def test_a_trace_of_another_model_shape_is_rejected(smol_trace, tmp_path):
    import shutil

    t = tmp_path / "t"
    shutil.copytree(smol_trace, t)
    meta = json.loads((t / "trace.json").read_text())
    meta["model"]["d_int"] = 2048
    (t / "trace.json").write_text(json.dumps(meta))
    with pytest.raises(TraceError, match="does not belong to this trace's model"):
        TraceReader(t)


def test_interrupted_trace_writing_leaves_nothing_that_looks_complete(tmp_path):
    from simcore.models import preset
    from simcore.trace.format import TraceMeta, TraceWriter

    meta = TraceMeta(model=preset("smollm2-135m"), source="test", seq_len=4)
    with pytest.raises(KeyboardInterrupt):
        with TraceWriter(tmp_path / "t", meta) as w:
            h = np.ones((2, 1536), np.float16)
            w.append(0, {"x": np.ones((2, 576)), "h": h, "gate": h, "up": h}, np.arange(2), np.arange(2))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_synthetic_traces_are_seeded(tmp_path):
    a = synth_trace("smollm2-135m", 5, tmp_path / "a", seed=1)
    b = synth_trace("smollm2-135m", 5, tmp_path / "b", seed=1)
    c = synth_trace("smollm2-135m", 5, tmp_path / "c", seed=2)
    la, lb, lc = (TraceReader(p).read_layer(3, ("x", "h", "gate", "up")) for p in (a, b, c))
    assert all(np.array_equal(la[k], lb[k]) for k in la)
    assert not np.array_equal(la["h"], lc["h"])
    np.testing.assert_allclose(
        la["h"].astype(np.float32), (la["gate"].astype(np.float32) * la["up"]), rtol=2e-3, atol=1e-6
    )


@pytest.mark.parametrize(
    "method, policy",
    [
        ("dip", "lru"),
        ("dip", "lfu"),
        ("dip", "belady"),
        ("glu", "lru"),
        ("dense", "lru"),
        ("cats", "lfu"),
        ("dip-ca", "lru"),
        ("dip", "none"),
    ],
)
def test_one_pass_dram_sweep_equals_separate_runs(smol_trace, method, policy):
    from simcore.engine.replay import replay_drams

    drams = ["55MB", "60MB", "70MB", "90MB"]
    kw = dict(trace=str(smol_trace), method=method, policy=policy, density={"glu": 0.8, "dense": 1.0}.get(method, 0.5))
    together = replay_drams(drams=drams, **kw)
    for dram, r in zip(drams, together):
        assert r.to_json() == replay(dram=dram, **kw).to_json()


def test_lru_recency_stack_equals_one_cache_per_capacity():
    rng = np.random.default_rng(11)
    for _ in range(60):
        T, U = int(rng.integers(1, 30)), int(rng.integers(1, 25))
        scores = (rng.integers(0, 6, size=(T, U)) / 6).astype(np.float16)
        k = int(rng.integers(0, U + 1))
        from simcore.engine import kernels as K
        from simcore.engine.sim import KindSim

        sim = KindSim(U, T, K.MODE_TOPK, k=k, policy="belady")  # collects the masks
        sim.feed(scores, None, 0)
        sim.finish_masks()
        caps = np.array([0, 1, U // 2, U, U + 3])
        got = sim.hits_at(caps, "lru")
        for b, cap in enumerate(caps):
            assert got[b].tolist() == simulate(scores, k, int(cap), "lru")["hits"].tolist()


def test_lru_at_many_capacities_equals_one_cache_each_over_long_traces():
    """Small selections and large caches over up to 300 tokens: capacities whose cache reaches back
    through many recency groups (the walk, then the galloping search), empty groups, capacities
    above every unit used so far; from collected masks and fed token by token."""
    from simcore.engine import kernels as K
    from simcore.engine.sim import KindSim

    rng = np.random.default_rng(12)
    for _ in range(25):
        T, U = int(rng.integers(20, 300)), int(rng.integers(8, 120))
        scores = (rng.random((T, U)) ** 4).astype(np.float16)
        if rng.random() < 0.3:  # a few hot units, many rarely used
            scores[:, : U // 8] += np.float16(0.5)
        k = int(rng.integers(1, max(2, U // 4)))
        caps = np.unique(rng.integers(0, U + 2, 9))
        want = np.array([simulate(scores, k, int(c), "lru")["hits"] for c in caps])
        sim = KindSim(U, T, K.MODE_TOPK, k=k, policy="belady")  # collects the masks
        sim.feed(scores, None, 0)
        sim.finish_masks()
        np.testing.assert_array_equal(sim.hits_at(caps, "lru"), want)
        direct = KindSim(U, T, K.MODE_TOPK, k=k, policy="lru", caps=caps)
        for t0 in range(0, T, 64):  # batches carry the recency state
            direct.feed(scores[t0 : t0 + 64], None, t0)
        np.testing.assert_array_equal(direct.hits_multi, want)


def test_nan_magnitudes_and_several_capacity_misuse_give_clear_errors():
    """NaN scores would make a top-k larger than k (and overrun the collected masks): a TraceError
    instead. A several-capacity KindSim hands out no masks, and finish() returns its (B, T) hits."""
    from simcore.engine import kernels as K
    from simcore.engine.sim import KindSim
    from simcore.errors import TraceError

    scores = np.full((4, 16), np.nan, np.float16)
    sim = KindSim(16, 4, K.MODE_TOPK, k=4, policy="belady")
    with pytest.raises(TraceError, match="NaN"):
        sim.feed(scores, None, 0)
    ok = np.random.default_rng(0).random((4, 16)).astype(np.float16)
    multi = KindSim(16, 4, K.MODE_TOPK, k=4, policy="lru", caps=np.array([2, 8]))
    with pytest.raises(ValueError, match="masks"):
        multi.feed(ok, None, 0, masks=np.zeros((4, 16), np.bool_))
    multi.feed(ok, None, 0)
    _, hits, _, _ = multi.finish()
    assert hits.shape == (2, 4)
    for b, cap in enumerate((2, 8)):
        assert hits[b].tolist() == simulate(ok, 4, cap, "lru")["hits"].tolist()


def test_a_statically_pruned_model_is_smaller_in_the_memory_plan(smol_trace, tmp_path):
    # a prune manifest by hand: half the weights kept, 1 bit of mask per weight (unstructured)
    (tmp_path / "p").mkdir()
    m = {
        "model": "smollm2-135m",
        "matrices": {"layers.0.mlp.up_proj": {"shape": [1536, 576], "kept": 1536 * 288, "metadata_bits": 1536 * 576}},
    }
    (tmp_path / "p" / "manifest.json").write_text(json.dumps(m))
    dense = replay(trace=str(smol_trace), method="dip", dram="80MB")
    pruned = replay(trace=str(smol_trace), method="dip", dram="80MB", pruned=str(tmp_path / "p"))
    bpw = (4 + 16 / 128) / 8
    assert pruned.kinds["down"]["unit_bytes"] == pytest.approx(576 * (0.5 * bpw + 1 / 8))
    assert pruned.memory["mlp_total"] == pytest.approx(dense.memory["mlp_total"] * (0.5 * bpw + 1 / 8) / bpw)
    assert pruned.totals["tokens_per_s_steady"] > dense.totals["tokens_per_s_steady"]
    with pytest.raises(ConfigError, match="not a `simcore prune` output"):
        replay(trace=str(smol_trace), dram="80MB", pruned=str(tmp_path))
    m["model"] = "mistral7b"
    (tmp_path / "p" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="prunes 'mistral7b', not this trace's model"):
        replay(trace=str(smol_trace), dram="80MB", pruned=str(tmp_path / "p"))
