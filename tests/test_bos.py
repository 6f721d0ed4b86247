"""BOS before every window (simcore.trace.text.model_inputs): a tokenizer that prepends BOS gets it
before each window that does not start with it, as context only; the trace keeps one row per text
token, eval scores every text token with context and its masks and cache see the text tokens only;
a tokenizer without BOS changes nothing, bit for bit. On tiny random models."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from simcore import policies  # noqa: E402
from simcore.engine import kernels as K  # noqa: E402
from simcore.eval.evaluate import cats_thresholds, evaluate  # noqa: E402
from simcore.methods.cats import threshold  # noqa: E402
from simcore.models import Mlp  # noqa: E402
from simcore.prune.calibrate import collect_norms, perplexity  # noqa: E402
from simcore.trace.format import TraceReader  # noqa: E402
from simcore.trace.text import (  # noqa: E402
    Windows,
    bos_token,
    embedded_text,
    model_inputs,
    split_windows,
    token_windows,
    tokenize,
)
from simcore.trace.tracer import trace_model  # noqa: E402

pytestmark = pytest.mark.torch

from tiny_models import VOCAB, tiny_model  # noqa: E402

BOS = 1


class Chars:
    """One token per character, no BOS (only ``__call__``, as the other tests' toy tokenizer)."""

    def __call__(self, text):
        return {"input_ids": [2 + ord(c) % (VOCAB - 2) for c in text]}


class BosChars(Chars):
    """One token per character after a BOS, as Gemma's tokenizer puts it: only before the text."""

    bos_token_id = BOS

    def __call__(self, text):
        return {"input_ids": [BOS, *super().__call__(text)["input_ids"]]}


class NoBosChars(Chars):
    """Has a ``bos_token_id`` but does not add it (as SmolLM2's tokenizer)."""

    bos_token_id = BOS


TEXT = embedded_text()


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", random_norms=False)


def by_hand(model, fed_windows):
    """(perplexity, predicted tokens) of next-token prediction over each fed window."""
    nll, n = 0.0, 0
    with torch.no_grad():
        for fed in fed_windows:
            ids = torch.as_tensor(np.asarray(fed, np.int64))
            logits = model(input_ids=ids[None], use_cache=False).logits[0]
            nll += float(torch.nn.functional.cross_entropy(logits[:-1].float(), ids[1:], reduction="sum"))
            n += len(fed) - 1
    return float(np.exp(nll / n)), n


def test_bos_is_read_from_the_tokenizer():
    assert bos_token(BosChars()) == BOS
    assert bos_token(Chars()) is None and bos_token(NoBosChars()) is None and bos_token(None) is None


def test_windows_get_bos_before_them_except_the_first_that_has_it():
    w = token_windows(BosChars(), TEXT, 10, 4)
    assert isinstance(w, Windows) and w.bos == BOS and [len(x) for x in w] == [4, 4, 2]
    assert w[0][0] == BOS and w[1][0] != BOS
    fed = model_inputs(w)
    assert [p for _, p in fed] == [0, 1, 1]
    assert fed[0][0].tolist() == w[0].tolist()
    assert fed[1][0].tolist() == [BOS, *w[1].tolist()] and fed[2][0].tolist() == [BOS, *w[2].tolist()]
    later = token_windows(BosChars(), TEXT, 8, 4, offset=20)  # after an offset no window holds the BOS
    assert [p for _, p in model_inputs(later)] == [1, 1]
    plain = token_windows(Chars(), TEXT, 10, 4)
    assert plain.bos is None and [p for _, p in model_inputs(plain)] == [0, 0, 0]
    assert [f.tolist() for f, _ in model_inputs(plain)] == [x.tolist() for x in plain]
    assert [p for _, p in model_inputs(list(w))] == [0, 0, 0]  # a plain list: fed as it is


def test_trace_records_one_row_per_text_token_and_the_bos_fed_forward(llama, tmp_path):
    ids = tokenize(BosChars(), TEXT, 40)
    path = trace_model(model=llama, tokenizer=BosChars(), tokens=40, seq_len=16, out=tmp_path / "t", progress=False)
    r = TraceReader(path)
    assert r.n_tokens == 40
    assert r.meta.extra["bos_per_window"] is True and r.meta.extra["bos_prefixed_windows"] == 2
    assert r.meta.extra["bos_token_id"] == BOS
    got = r.read_layer(1, ("token_id", "position", "x", "h"))
    np.testing.assert_array_equal(got["token_id"], ids)
    np.testing.assert_array_equal(got["position"], np.r_[np.arange(16), np.arange(16), np.arange(8)])
    hooked = {}
    mlp = llama.model.layers[1].mlp
    handles = [
        mlp.register_forward_pre_hook(lambda m, a: hooked.__setitem__("x", a[0][0])),
        Mlp.of(mlp).down.register_forward_pre_hook(lambda m, a: hooked.__setitem__("h", a[0][0])),
    ]
    try:
        with torch.no_grad():  # the second window, fed after a BOS
            llama(input_ids=torch.as_tensor(np.r_[BOS, ids[16:32]])[None], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    for c in ("x", "h"):
        want = hooked[c][1:].abs().numpy()  # the BOS row is not recorded
        np.testing.assert_allclose(got[c][16:32].astype(np.float32), want, rtol=2e-3, atol=1e-5)
        without = got[c][16:32].astype(np.float32)  # and the window was not fed without it
        assert not np.allclose(without[1:], _hook_without_bos(llama, ids[16:32], c)[1:], rtol=2e-3, atol=1e-5)
    ppl, n = by_hand(llama, [ids[:16], np.r_[BOS, ids[16:32]], np.r_[BOS, ids[32:40]]])
    assert r.meta.extra["perplexity_tokens"] == n == 15 + 16 + 8
    assert r.meta.extra["perplexity"] == pytest.approx(ppl, rel=1e-6)


def _hook_without_bos(model, window, column):
    out = {}
    mlp = model.model.layers[1].mlp
    module = mlp if column == "x" else Mlp.of(mlp).down
    h = module.register_forward_pre_hook(lambda m, a: out.__setitem__("v", a[0][0]))
    try:
        with torch.no_grad():
            model(input_ids=torch.as_tensor(window)[None], use_cache=False)
    finally:
        h.remove()
    return out["v"].abs().numpy()


def run(model, tokenizer, **kw):
    base = dict(tokens=96, seq_len=32, calib_tokens=64, calib_offset=200, dram="1MB", context=0, warmup=8)
    return evaluate(model, tokenizer=tokenizer, **{**base, **kw})


@pytest.mark.parametrize("offset", [0, 100])
def test_eval_perplexity_is_the_hand_computation_with_bos_before_each_window(llama, offset):
    r = run(llama, BosChars(), method="dense", offset=offset)
    ids = tokenize(BosChars(), TEXT, 96, offset)
    fed = [w if w[0] == BOS else np.r_[BOS, w] for w in split_windows(ids, 32)]
    ppl, n = by_hand(llama, fed)
    assert r.tokens_scored == n == 3 * 31 + (2 if offset == 0 else 3)  # a prefixed window scores all 32
    assert r.perplexity == pytest.approx(ppl, rel=1e-6)
    assert r.text["bos_per_window"] is True and r.text["bos_prefixed_windows"] == (2 if offset == 0 else 3)
    assert r.text["eval_tokens"] == [offset, offset + 96]
    for method in ("dip", "cats", "dip-ca"):  # the BOS row goes through the dense MLP: density 1 is dense
        assert run(llama, BosChars(), method=method, density=1.0, offset=offset).perplexity == pytest.approx(
            r.perplexity, rel=1e-5
        )


@pytest.mark.parametrize("method, policy", [("dip-ca", "lfu"), ("dip", "lru")])
def test_eval_cache_metrics_with_bos_equal_a_replay_of_the_masks_used(llama, method, policy):
    kw = dict(method=method, density=0.5, policy=policy, offset=100, record_masks=True)
    if method == "dip-ca":
        kw["gamma"] = 0.2
    r = run(llama, BosChars(), **kw)
    assert r.text["bos_prefixed_windows"] == 3
    caps = {name: k["capacity_per_layer"] for name, k in r.replay.kinds.items()}
    weights = K.priority_weights(policies.load(policy).weights(96), 96)
    names = list(r.replay.kinds)
    checked = 0
    for li, layer_masks in enumerate(r.masks):
        for ki, masks in enumerate(layer_masks):
            if masks is None:
                continue
            T, n = masks.shape
            assert T == 96  # one row per text token: the BOS rows are not masked
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
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("method", ["dense", "dip", "cats", "dip-ca"])
def test_a_tokenizer_without_bos_gives_the_same_numbers_bit_for_bit(llama, method):
    kw = dict(method=method, offset=100, record_masks=True)
    if method != "dense":
        kw["density"] = 0.5
    a, b = run(llama, Chars(), **kw), run(llama, NoBosChars(), **kw)
    assert a.perplexity == b.perplexity and a.tokens_scored == b.tokens_scored == 96 - 3
    assert "bos_per_window" not in a.text and "bos_per_window" not in b.text
    assert a.replay.totals == b.replay.totals
    if method == "dense":  # the windows as they are, each window's first token unscored
        assert a.perplexity == by_hand(llama, split_windows(tokenize(Chars(), TEXT, 96, 100), 32))[0]
    else:
        for la, lb in zip(a.masks, b.masks):
            for ma, mb in zip(la, lb):
                assert (ma is None and mb is None) or np.array_equal(ma, mb)


def test_calibration_statistics_leave_the_bos_row_out(llama):
    w = token_windows(BosChars(), TEXT, 24, 12, offset=50)  # two windows, both fed after a BOS
    rows = {"g": [], "x": []}
    layer = llama.model.layers[0]
    mlp = Mlp.of(layer.mlp)

    def hook(_m, args):
        x = args[0][0, 1:]  # drop the BOS row
        rows["x"].append(x.double())
        rows["g"].append(mlp.act(mlp.gate_up(x)[0]).abs().to(torch.float16).double().numpy())

    h = layer.mlp.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for x in w:
                llama(input_ids=torch.as_tensor(np.r_[BOS, x])[None], use_cache=False)
    finally:
        h.remove()
    t = cats_thresholds(llama, list(llama.model.layers), w, 0.3, threshold)[0]
    assert t == pytest.approx(threshold(np.concatenate(rows["g"]), 0.3), rel=1e-6)
    norms = collect_norms(llama, w)[0]
    want = torch.cat(rows["x"]).pow(2).sum(0).sqrt()
    torch.testing.assert_close(norms.x, want, rtol=1e-9, atol=1e-9)
    ppl, n = perplexity(llama, w)
    assert (ppl, n) == pytest.approx(by_hand(llama, [np.r_[BOS, x] for x in w]), rel=1e-9)
    assert n == 24
