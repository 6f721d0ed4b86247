"""simcore eval: density 1 is dense, dip-ca at gamma 1 is dip, and the cache metrics of the run equal a
replay of the masks the run applied. On tiny random models (Llama; Phi-3 for the fused gate_up; Gemma for
GeGLU)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from simcore import policies  # noqa: E402
from simcore.engine import kernels as K  # noqa: E402
from simcore.errors import ConfigError  # noqa: E402
from simcore.eval.evaluate import evaluate  # noqa: E402

pytestmark = pytest.mark.torch

from tiny_models import VOCAB, tiny_model  # noqa: E402


class Chars:
    """A tokenizer with one token per character."""

    def __call__(self, text):
        return {"input_ids": [ord(c) % VOCAB for c in text]}


def tiny(family="llama"):
    return tiny_model(family, random_norms=False)


def run(model, **kw):
    base = dict(
        tokenizer=Chars(), tokens=96, seq_len=32, calib_tokens=64, calib_offset=200, dram="1MB", context=0, warmup=8
    )
    return evaluate(model, **{**base, **kw})


@pytest.fixture(scope="module")
def llama():
    return tiny("llama")


@pytest.mark.parametrize("family", ["llama", "phi3", "gemma"])  # separate, fused gate_up, GeGLU
def test_density_one_equals_dense_for_every_method(family):
    model = tiny(family)
    dense = run(model, method="dense").perplexity
    for method in ("glu", "gate", "up", "cats", "dip", "dip-ca"):
        got = run(model, method=method, density=1.0).perplexity
        assert got == pytest.approx(dense, rel=1e-5), method


def test_dip_ca_at_gamma_one_equals_dip_exactly(llama):
    a = run(llama, method="dip", density=0.5, policy="lru")
    b = run(llama, method="dip-ca", density=0.5, gamma=1.0, policy="lru")
    assert a.perplexity == b.perplexity
    assert a.replay.totals["hits"] == b.replay.totals["hits"]


def test_sparsity_costs_accuracy_and_gamma_changes_masks(llama):
    dense = run(llama, method="dense").perplexity
    dip = run(llama, method="dip", density=0.4)
    ca = run(llama, method="dip-ca", density=0.4, gamma=0.1)
    assert dip.perplexity != dense and np.isfinite(dip.perplexity)
    assert ca.replay.totals["hit_rate"] > dip.replay.totals["hit_rate"]  # cache-aware masks hit more
    assert dip.replay.totals["mlp_density"] == pytest.approx(0.4, abs=0.01)


@pytest.mark.parametrize("method, policy", [("dip-ca", "lfu"), ("dip", "lru"), ("gate", "lfu"), ("dip", "belady")])
def test_in_loop_cache_metrics_equal_a_replay_of_the_masks_used(llama, method, policy):
    kw = dict(method=method, density=0.5, policy=policy)
    if method == "dip-ca":
        kw["gamma"] = 0.2
    r = run(llama, record_masks=True, **kw)
    caps = {name: k["capacity_per_layer"] for name, k in r.replay.kinds.items()}
    weights = K.priority_weights(policies.load(policy).weights(96), 96)
    names = list(r.replay.kinds)
    for li, layer_masks in enumerate(r.masks):
        for ki, masks in enumerate(layer_masks):
            if masks is None:
                continue
            T, n = masks.shape
            idx = np.concatenate([np.flatnonzero(m) for m in masks]).astype(np.int32)
            ptr = np.zeros(T + 1, np.int64)
            np.cumsum(masks.sum(1), out=ptr[1:])
            nxt = K.next_use_times(idx, ptr, n)
            hits = np.zeros(T, np.int32)
            K.replay_masks(
                idx,
                ptr,
                nxt,
                caps[names[ki]],
                np.zeros(n, np.bool_),
                np.zeros(n, np.int32),
                np.zeros(n, np.int32),
                np.full(n, K.NEVER, np.int32),
                np.zeros(2, np.int64),
                weights,
                hits,
            )
            rec = next(x for x in r.replay.layers if x["layer"] == li and x["kind"] == names[ki])
            assert rec["hits"] == int(hits.sum()) and rec["accesses"] == int(masks.sum())


def test_eval_refuses_overlapping_text_and_bad_settings(llama):
    with pytest.raises(ConfigError, match="overlap calibration tokens"):
        run(llama, method="cats", calib_offset=50)
    with pytest.raises(ConfigError, match="needs masks that do not depend on the cache"):
        run(llama, method="dip-ca", gamma=0.2, policy="belady")
    with pytest.raises(ConfigError, match="smaller than the model's resident part"):
        run(llama, method="dip", dram="1kB")


def test_eval_of_a_statically_pruned_model_applies_its_masks(llama, tmp_path):
    import copy

    from simcore.prune.api import apply_masks, load_masks, prune_model

    out = prune_model(
        model=llama,
        tokenizer=Chars(),
        method="wanda",
        sparsity="0.5",
        calib_tokens=64,
        seq_len=32,
        calib_offset=200,
        eval_tokens=64,
        out=tmp_path / "p",
        progress=False,
    )
    by_hand = copy.deepcopy(llama)
    apply_masks(by_hand, load_masks(out))
    expected = run(by_hand, method="dip", density=0.5).perplexity
    got = run(copy.deepcopy(llama), method="dip", density=0.5, pruned=str(out), name="llama")
    assert got.perplexity == expected and got.text["pruned"] == str(out)
    assert got.perplexity != run(llama, method="dip", density=0.5).perplexity
    with pytest.raises(ConfigError, match="not a `simcore prune` output"):
        run(llama, method="dense", pruned=str(tmp_path))


def test_calibrate_keeps_the_split_of_lowest_perplexity_and_replay_uses_it(llama, tmp_path, monkeypatch):
    from simcore.engine.replay import replay
    from simcore.eval.calibrate import calibrate, calibration_file, candidate_splits
    from simcore.trace.synth import synth_trace

    monkeypatch.setenv("SIMCORE_CALIBRATION", str(tmp_path / "cal"))
    r = calibrate(
        llama, (0.5,), tokenizer=Chars(), name="smollm2-135m", tokens=64, seq_len=32, offset=200, candidates=4, log=None
    )
    entry = r["splits"][0]
    assert [(c["rho_in"], c["rho_d"]) for c in entry["candidates"]] == candidate_splits(0.5, 4)
    assert (0.5, 0.5) in candidate_splits(0.5, 4)  # the uniform split is always tried
    assert entry["perplexity"] == min(c["perplexity"] for c in entry["candidates"])
    again = run(
        llama,
        method="dip",
        density=0.5,
        rho_in=entry["rho_in"],
        offset=200,
        calib_offset=0,
        calib_tokens=0,
        tokens=64,
        policy="none",
    )
    assert again.perplexity == pytest.approx(entry["perplexity"], rel=1e-9)
    assert r["path"] == str(calibration_file("smollm2-135m", r["text"]["sha256"]))
    trace = synth_trace("smollm2-135m", 8, tmp_path / "t")
    rep = replay(trace=str(trace), method="dip", density=0.5, dram="80MB", calibration=r["path"])
    assert rep.config["selection"]["rho_d"] == pytest.approx(entry["rho_d"])
    assert rep.config["selection"]["split"] == f"calibrated ({r['path']})"
    with pytest.raises(ConfigError, match="has splits for densities 0.5, not 0.4"):
        replay(trace=str(trace), method="dip", density=0.4, dram="80MB", calibration=r["path"])
    # a synthetic trace records no text: nothing is looked up for it
    split = replay(trace=str(trace), method="dip", density=0.5, dram="80MB").config["selection"]["split"]
    assert split.startswith("default rule; no calibration looked up")
