"""dejavu: predictors trained from a trace (``simcore train-predictor``) find a planted pattern, their bytes
are resident in the memory plan and read every token, replay selects exactly the predictor's top-k
neurons (never looking into h), a predictor is never applied to its own training tokens nor to another
trace shape, and eval on a tiny random model runs with it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from simcore import methods
from simcore.cli import main
from simcore.engine.replay import replay
from simcore.errors import ConfigError
from simcore.models import shape_from_dims
from simcore.predictor import store
from simcore.predictor.train import train_predictors
from simcore.trace.format import TraceMeta, TraceReader, TraceWriter, methods_served

pytest.importorskip("torch")

D, D_INT, LAYERS, TOKENS = 30, 90, 2, 1024
FAST = dict(hidden=64, epochs=20, batch_size=32, threads=1)


def planted_trace(path, shape=None, tokens=TOKENS, seed=0, noise=0.0):
    """A trace where |h|'s largest neurons are a fixed function of |x|'s largest channels: each token has
    3 large input channels (the rest small), neuron j follows input channel j % d with a fixed scale, so
    the 3 * d_int / d neurons of the large channels are the top of |h| (9 of 90: the top 10%). ``noise``
    adds an independent random part to |h| (then its top is only partly predictable from |x|)."""
    shape = shape or shape_from_dims("planted", "llama", LAYERS, D, D_INT, 5, 1, 100, True)
    meta = TraceMeta(model=shape, source="synthetic", seq_len=64, columns=["x", "h"])
    with TraceWriter(path, meta) as w:
        for layer in range(shape.n_layers):
            rng = np.random.default_rng([seed, layer])
            scale = rng.uniform(0.8, 1.2, shape.d_int).astype(np.float32)
            channel = (np.arange(shape.d_int) + layer) % shape.d
            x = rng.uniform(0.0, 1.0, (tokens, shape.d)).astype(np.float32)
            large = np.argsort(rng.random((tokens, shape.d)), axis=1)[:, :3]
            np.put_along_axis(x, large, rng.uniform(4.0, 8.0, (tokens, 3)).astype(np.float32), axis=1)
            h = x[:, channel] * scale + noise * rng.lognormal(0.0, 1.0, (tokens, shape.d_int)).astype(np.float32)
            w.append(layer, {"x": x, "h": h}, np.zeros(tokens, np.int64), np.arange(tokens) % 64)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A planted trace and its predictor, trained on its last 768 tokens (held out: the first 256)."""
    d = tmp_path_factory.mktemp("dejavu")
    trace = planted_trace(d / "planted")
    meta = train_predictors(trace, calib_tokens=768, eval_tokens=256, **FAST)
    return trace, meta


def base(trace, **kw):
    return {"trace": str(trace), "dram": "4MB", "context": 0, "warmup": 8, "policy": "lru", **kw}


def test_the_predictor_finds_a_planted_pattern(trained):
    trace, meta = trained
    assert meta["path"] == str(trace / "predictor.npz")  # beside the trace by default
    assert meta["trace"]["tokens"] == [256, 1024] and meta["held_out"]["tokens"] == [0, 256]
    assert meta["held_out"]["recall_mean"] > 0.9
    assert all(r > 0.9 for r in meta["held_out"]["recall"]) and len(meta["held_out"]["recall"]) == LAYERS
    p = store.load(meta["path"])
    assert p.provenance == {"model": "planted", "text": "synthetic", "text_sha256": None, "tokens": [256, 1024]}
    per_layer = D * 64 + 64 + 64 * D_INT + D_INT
    assert p.nbytes == LAYERS * per_layer * 2  # float16
    # a noisy pattern (|h| only partly from |x|) is found less well: recall is measured, not assumed
    noisy = planted_trace(trace.parent / "noisy", noise=3.0)
    worse = train_predictors(noisy, calib_tokens=768, eval_tokens=256, **FAST)
    assert worse["held_out"]["recall_mean"] < meta["held_out"]["recall_mean"] - 0.1


def test_the_predictor_bytes_are_resident_and_read_every_token(trained):
    trace, meta = trained
    nbytes = store.load(meta["path"]).nbytes
    dense = replay(**base(trace, method="dense"))
    dv = replay(**base(trace, method="dejavu", density=0.5, predictor=meta["path"]))
    assert dv.memory["aux_resident"] == nbytes
    assert dv.memory["static_resident"] == pytest.approx(dense.memory["static_resident"] + nbytes)
    assert dv.memory["static_read_per_token"] == pytest.approx(dense.memory["static_read_per_token"] + nbytes)
    assert dv.memory["mlp_cache"] == pytest.approx(dense.memory["mlp_cache"] - nbytes)  # less DRAM for the cache
    assert f"{nbytes / 1e3:.1f} kB float16 resident" in methods.describe(dv.config)


def test_replay_selects_exactly_the_predictors_top_k_and_stops_before_its_tokens(trained):
    trace, meta = trained
    r = replay(**base(trace, method="dejavu", density=0.25, predictor=meta["path"], policy="none"))
    assert r.totals["tokens"] == 256  # the predictor trained on [256, 1024): replay stops before it
    assert any("replayed tokens [0, 256)" in w for w in r.warnings)
    k = round(0.25 * D_INT)
    assert [rec["accesses"] for rec in r.layers] == [256 * k] * LAYERS  # exactly k neurons per token
    assert r.totals["mlp_density"] == pytest.approx(k / D_INT)
    # the kept |h|^2 mass equals that of the predictor's top-k by hand (ties to the lower index): the
    # selection comes from the predictor alone
    p, reader = store.load(meta["path"]), TraceReader(trace)
    kept = tot = 0.0
    for layer in range(LAYERS):
        rows = reader.read_layer(layer)
        x, h = rows["x"][:256], rows["h"][:256].astype(np.float64)
        top = np.argsort(-p.scores(layer, x).astype(np.float32), axis=1, kind="stable")[:, :k]
        kept += float((np.take_along_axis(h, top, 1) ** 2).sum())
        tot += float((h**2).sum())
    assert r.totals["mass_kept"] == pytest.approx(kept / tot, rel=1e-6)
    assert r.totals["mass_kept"] > 0.5  # the planted pattern is found: most of the mass is kept


def test_a_predictor_is_never_applied_to_its_training_tokens(trained):
    trace, meta = trained
    with pytest.raises(ConfigError, match=r"calibrated on tokens \[256, 1024\).*overlap"):
        replay(**base(trace, method="dejavu", density=0.5, predictor=meta["path"], tokens=300))
    first0 = train_predictors(trace, out=trace.parent / "first.npz", calib_tokens=512, first=0, **FAST)
    assert first0["held_out"]["tokens"] == [512, 1024]
    with pytest.raises(ConfigError, match="overlap"):  # trained on [0, 512): nothing before it to replay
        replay(**base(trace, method="dejavu", density=0.5, predictor=first0["path"]))


def test_bad_predictors_and_settings_are_one_line_errors(trained, tmp_path, capsys):
    trace, meta = trained
    other = planted_trace(tmp_path / "other", shape=shape_from_dims("planted", "llama", LAYERS, D, 60, 5, 1, 100, True))
    cases = [
        (["replay", "--trace", str(other), "--method", "dejavu", "--predictor", meta["path"]], "another trace shape"),
        (["replay", "--trace", str(trace), "--method", "dejavu"], "needs --predictor FILE"),
        (["replay", "--trace", str(trace), "--method", "dejavu", "--predictor", str(tmp_path / "no.npz")], "no such"),
        (["replay", "--trace", str(trace), "--method", "dejavu", "--predictor", str(trace / "trace.json")], "not a"),
        (["replay", "--trace", str(trace), "--method", "glu", "--predictor", meta["path"]], "applies only to method"),
        (["train-predictor", str(trace), "--top", "1.5"], "--top must be a fraction"),
        (["train-predictor", str(trace), "--calib-tokens", "5000"], "more than the trace's 1024 tokens"),
        (["train-predictor", str(trace), "--hidden", "0"], "--hidden must be"),
        (["train-predictor", str(trace), "--out", str(tmp_path / "p.json")], "ends in .npz"),
    ]
    for argv, message in cases:
        assert main([*argv, "--dram", "4MB", "--context", "0"] if argv[0] == "replay" else argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)


def test_train_predictor_command_reports_recall(trained, tmp_path, capsys):
    trace, _ = trained
    out = tmp_path / "p.npz"
    argv = ["train-predictor", str(trace), "--calib-tokens", "512", "--eval-tokens", "128", "--out", str(out)]
    assert main([*argv, "--hidden", "32", "--epochs", "3", "--threads", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "held-out tokens [384, 512): recall of the true top 10%" in text
    assert store.load(out).meta["held_out"]["tokens"] == [384, 512]


def test_scores_are_non_negative_float16_in_the_order_of_the_logits(trained, monkeypatch):
    _, meta = trained
    p = store.load(meta["path"])
    x = np.random.default_rng(1).lognormal(0.0, 1.0, (300, D)).astype(np.float16)  # more than one block
    logits, scores = p.logits(1, x), p.scores(1, x)
    assert scores.dtype == np.float16 and scores.shape == (300, D_INT) and (scores >= 0).all()
    order = np.argsort(-logits, axis=1)
    ranked = np.take_along_axis(scores.astype(np.float32), order, axis=1)
    assert (np.diff(ranked, axis=1) <= 0).all()  # a per-token monotone map: the ranking is the logits'
    w1, b1, w2, b2 = (getattr(p, n)[1].astype(np.float64) for n in ("w1", "b1", "w2", "b2"))
    expected = np.maximum(x.astype(np.float64) @ w1 + b1, 0) @ w2 + b2
    assert np.allclose(logits, expected, rtol=1e-4, atol=1e-4)
    monkeypatch.setitem(sys.modules, "torch", None)  # a process without torch (replay): the NumPy products
    assert np.allclose(p.logits(1, x), logits, rtol=1e-5, atol=1e-5)


def test_dejavu_reads_x_and_h_and_is_served_by_such_traces():
    shape = shape_from_dims("planted", "llama", LAYERS, D, D_INT, 5, 1, 100, True)
    assert "dejavu" in methods_served(("x", "h"), shape)
    sel = methods.resolve("dejavu", shape, 0.5)  # no predictor: a description, which cannot score
    assert sel.kinds[0].score == "x" and sel.kinds[0].mass and sel.fractions == (0.5,)
    with pytest.raises(ConfigError, match="needs --predictor"):
        sel.kinds[0].scores(0, np.zeros((1, D), np.float16))


def test_eval_with_dejavu_on_a_tiny_model(tmp_path):
    pytest.importorskip("transformers")
    from tiny_models import VOCAB, tiny_model

    from simcore.eval.evaluate import evaluate
    from simcore.trace.tracer import model_shape

    def chars(text):  # a tokenizer with one token per character
        return {"input_ids": [ord(c) % VOCAB for c in text]}

    def run(model, **kw):
        return evaluate(model, tokenizer=chars, tokens=96, seq_len=32, dram="1MB", context=0, warmup=8, **kw)

    model = tiny_model("llama", random_norms=False)
    trace = planted_trace(tmp_path / "tiny", shape=model_shape(model, "tiny"), tokens=512)
    meta = train_predictors(trace, calib_tokens=256, eval_tokens=0, hidden=16, epochs=2, threads=1)
    assert meta["provenance"]["tokens"] == [256, 512] and meta["held_out"] is None
    dense = run(model, method="dense", name="tiny").perplexity
    r = run(model, method="dejavu", density=0.5, predictor=meta["path"], name="tiny")
    assert np.isfinite(r.perplexity) and r.perplexity != dense
    assert r.replay.kinds["neuron"]["selected_fraction"] == pytest.approx(80 / 160)
    assert r.replay.memory["aux_resident"] == store.load(meta["path"]).nbytes
    full = run(model, method="dejavu", density=1.0, predictor=meta["path"], name="tiny")
    assert full.perplexity == pytest.approx(dense, rel=1e-5)  # every neuron: the dense model
    with pytest.raises(ConfigError, match="overlap"):  # eval tokens [300, 396) of the same (unnamed) text range
        run(model, method="dejavu", density=0.5, predictor=meta["path"], name="tiny", offset=300)
    with pytest.raises(ConfigError, match="another trace shape"):
        run(model, method="dejavu", density=0.5, predictor=meta["path"], name="other")
