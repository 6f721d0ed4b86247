"""SparseGPT (simcore.prune.sparsegpt): on a toy layer with correlated inputs its reconstruction error is
below magnitude pruning's and wanda's at the same pattern; one pruned weight gets the exact least-squares
update; its masks are valid N:M / exact per-block counts; layers are calibrated sequentially on the
already-pruned model; the pruned output (masks + updated weights) gives the recorded perplexity through
``simcore eval --pruned``; the memory plan counts it as wanda; bad input is a one-line ConfigError."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from simcore.errors import ConfigError  # noqa: E402
from simcore.memory import pruned_cost  # noqa: E402
from simcore.prune import apply_masks, apply_pruned, compute_masks, load_masks, prune_model  # noqa: E402
from simcore.prune.api import load_values  # noqa: E402
from simcore.prune.calibrate import collect_norms  # noqa: E402
from simcore.prune.command import prune_command  # noqa: E402
from simcore.prune.patterns import keep_mask, parse_sparsity  # noqa: E402
from simcore.prune.sparsegpt import hessians, prune, prune_matrix  # noqa: E402

pytestmark = pytest.mark.torch

from tiny_models import N_LAYERS, VOCAB, tiny_model  # noqa: E402

PATTERNS = ("0.5", "2:4", "4:8")


class Chars:
    """A tokenizer with one token per character."""

    def __call__(self, text):
        return {"input_ids": [ord(c) % VOCAB for c in text]}


def toy_layer(rows=24, cols=256, T=1024, seed=0):
    """W (rows, cols) and inputs X (T, cols) whose channels are correlated and of unequal scale."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5
    z = torch.randn(T, cols, generator=g, dtype=torch.float64)
    X = (0.5 * z + z @ mix) * torch.exp(torch.randn(cols, generator=g, dtype=torch.float64))
    return torch.randn(rows, cols, generator=g, dtype=torch.float64), X


def recon_error(W, Wp, X):
    """‖W Xᵀ − W' Xᵀ‖_F, X (T, cols)."""
    return float(torch.linalg.norm((W - Wp) @ X.T))


@pytest.mark.parametrize("sparsity", PATTERNS)
def test_reconstruction_error_below_magnitude_and_wanda(sparsity):
    W, X = toy_layer()
    p = parse_sparsity(sparsity)
    Wp, keep = prune_matrix(W, 2 * X.T @ X / len(X), p)
    mag = W * keep_mask(W.abs(), p, 1)
    wan = W * keep_mask(W.abs() * X.norm(dim=0)[None, :], p, 1)
    err = recon_error(W, Wp, X)
    assert err < 0.9 * recon_error(W, wan, X) < 0.9 * recon_error(W, mag, X)
    assert (Wp[~keep] == 0).all() and int(keep.sum()) == W.numel() // 2
    assert not torch.equal(Wp[keep], W[keep])  # the kept weights were updated


@pytest.mark.parametrize("sparsity", ["2:4", "4:8", "1:4", "3:8"])
def test_nm_keeps_exactly_n_of_every_m_along_the_input_dimension(sparsity):
    W, X = toy_layer(rows=16, cols=160, T=300, seed=1)
    p = parse_sparsity(sparsity)
    _, keep = prune_matrix(W, 2 * X.T @ X / len(X), p, blocksize=32)
    assert (keep.reshape(16, 160 // p.m, p.m).sum(-1) == p.n).all()


@pytest.mark.parametrize("fraction", [0.5, 0.3, 0.7])
def test_unstructured_prunes_an_exact_count_in_every_block(fraction):
    W, X = toy_layer(rows=10, cols=200, T=400, seed=2)
    _, keep = prune_matrix(W, 2 * X.T @ X / len(X), parse_sparsity(str(fraction)), blocksize=64)
    for b0 in range(0, 200, 64):
        block = keep[:, b0 : b0 + 64]
        assert int((~block).sum()) == round(fraction * block.numel())
    assert len(set(keep.sum(1).tolist())) > 1  # the block is one comparison group: rows keep different counts


def test_one_pruned_weight_gets_the_exact_least_squares_update():
    """Pruning only column 0 of a row, SparseGPT's update is the optimum of the (dampened) layer loss
    ``δ H_d δᵀ`` subject to w'_0 = 0, solved here directly."""
    W, X = toy_layer(rows=1, cols=8, T=64, seed=3)
    W[0, 0] = 1e-3  # the lowest saliency
    H = 2 * X.T @ X / len(X)
    Wp, keep = prune_matrix(W, H, parse_sparsity("0.125"), damp=0.01)
    assert keep.tolist() == [[False] + [True] * 7]
    Hd = H + 0.01 * H.diagonal().mean() * torch.eye(8, dtype=H.dtype)
    delta_rest = torch.linalg.solve(Hd[1:, 1:], -Hd[1:, :1] * (-W[0, 0]))
    np.testing.assert_allclose(Wp[0, 1:].numpy(), (W[0, 1:] + delta_rest[:, 0]).numpy(), rtol=1e-9)
    assert Wp[0, 0] == 0


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", random_norms=False)


CALIB = [np.arange(200, 232) % VOCAB, np.arange(232, 264) % VOCAB]


def test_hessians_equal_hooked_inputs(llama):
    xs, hs = [], []
    mlp = llama.model.layers[1].mlp
    a = mlp.register_forward_pre_hook(lambda m, args: xs.append(args[0][0].double()))
    b = mlp.down_proj.register_forward_pre_hook(lambda m, args: hs.append(args[0][0].double()))
    with torch.no_grad():
        for w in CALIB:
            llama(input_ids=torch.as_tensor(w)[None], use_cache=False)
    a.remove(), b.remove()
    x, h = torch.cat(xs), torch.cat(hs)
    hx, hh = hessians(llama, 1, CALIB)
    torch.testing.assert_close(hx, 2 * x.T @ x / len(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hh, 2 * h.T @ h / len(h), rtol=1e-10, atol=1e-12)


def test_hessians_leave_out_a_bos_fed_before_each_window(llama):
    from simcore.trace.text import Windows

    xs = []
    mlp = llama.model.layers[0].mlp
    a = mlp.register_forward_pre_hook(lambda m, args: xs.append(args[0][0, 1:].double()))
    with torch.no_grad():
        for w in CALIB:
            llama(input_ids=torch.as_tensor(np.concatenate([[7], w]))[None], use_cache=False)
    a.remove()
    x = torch.cat(xs)
    hx, _ = hessians(llama, 0, Windows(CALIB, bos=7))
    torch.testing.assert_close(hx, 2 * x.T @ x / len(x), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(hx, hessians(llama, 0, CALIB)[0])


def test_layers_are_calibrated_on_the_already_pruned_model(llama):
    p = parse_sparsity("2:4")
    model = copy.deepcopy(llama)
    masks = prune(model, CALIB, p)
    assert set(masks) == {f"layers.{i}.mlp.{q}" for i in range(N_LAYERS) for q in ("gate_proj", "up_proj", "down_proj")}
    by_hand = copy.deepcopy(llama)  # layer 0 as prune left it, then layer 1 from that model's inputs
    by_hand.model.layers[0].mlp.load_state_dict(model.model.layers[0].mlp.state_dict())
    hx, hh = hessians(by_hand, 1, CALIB)
    dense_hx, _ = hessians(llama, 1, CALIB)
    assert not torch.allclose(hx, dense_hx)
    for part in ("gate_proj", "up_proj", "down_proj"):
        w = getattr(llama.model.layers[1].mlp, part).weight
        expect, keep = prune_matrix(w, hh if part == "down_proj" else hx, p)
        np.testing.assert_array_equal(masks[f"layers.1.mlp.{part}"], keep.numpy())
        got = getattr(model.model.layers[1].mlp, part).weight.detach().double()
        torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6)


def _prune(model, tmp_path, method, sparsity, name):
    return prune_model(
        model=model,
        tokenizer=Chars(),
        method=method,
        sparsity=sparsity,
        calib_tokens=64,
        seq_len=32,
        calib_offset=200,
        eval_tokens=64,
        out=tmp_path / name,
        progress=False,
    )


def _eval(model, out):
    from simcore.eval.evaluate import evaluate

    return evaluate(
        model,
        tokenizer=Chars(),
        name="llama",
        method="dense",
        pruned=str(out),
        tokens=64,
        seq_len=32,
        offset=0,
        calib_tokens=64,
        calib_offset=200,
        dram="1MB",
        context=0,
        warmup=8,
    )


@pytest.mark.parametrize("sparsity", ["0.5", "2:4"])
def test_eval_of_the_pruned_output_gives_the_recorded_perplexity(llama, tmp_path, sparsity):
    before = {n: q.detach().clone() for n, q in llama.named_parameters()}
    out = _prune(llama, tmp_path, "sparsegpt", sparsity, "s")
    for n, q in llama.named_parameters():  # a model object is left as it was
        assert torch.equal(q, before[n])
    man = json.loads((out / "manifest.json").read_text())
    assert man["method"] == "sparsegpt" and man["updated_weights"]["file"] == "weights.npz"
    assert man["sparsegpt"]["blocksize"] == 128 and man["alpha"] is None
    got = _eval(copy.deepcopy(llama), out)
    assert got.perplexity == pytest.approx(man["perplexity"]["pruned"], rel=1e-5)
    masks_only = copy.deepcopy(llama)
    apply_masks(masks_only, load_masks(out))
    applied = copy.deepcopy(llama)
    apply_pruned(applied, out)
    mlp, mo = applied.model.layers[0].mlp.up_proj.weight, masks_only.model.layers[0].mlp.up_proj.weight
    assert ((mlp == 0) == (mo == 0)).all() and not torch.equal(mlp, mo)  # same zeros, updated kept weights
    assert man["perplexity"]["pruned"] != man["perplexity"]["dense"]


def test_pruned_output_loads_and_is_counted_like_wanda(llama, tmp_path):
    s = _prune(llama, tmp_path, "sparsegpt", "4:8", "s")
    w = _prune(llama, tmp_path, "wanda", "4:8", "w")
    assert load_values(w) is None  # masks-only outputs (wanda, dass, older ones) still load as before
    plain, updated = copy.deepcopy(llama), copy.deepcopy(llama)
    assert apply_pruned(plain, w) == apply_masks(copy.deepcopy(llama), load_masks(w))
    torch.testing.assert_close(plain.state_dict(), _masked(llama, load_masks(w)).state_dict())
    values = load_values(s)
    masks = load_masks(s)
    assert {k: v.size for k, v in values.items()} == {k: int(m.sum()) for k, m in masks.items()}
    assert all(v.dtype == np.float16 for v in values.values())
    apply_pruned(updated, s)
    for k, keep in masks.items():
        i, part = int(k.split(".")[1]), k.rsplit(".", 1)[1]
        wt = getattr(updated.model.layers[i].mlp, part).weight.detach().numpy()
        np.testing.assert_array_equal(wt[keep], values[k].astype(np.float32))
        assert (wt[~keep] == 0).all()
    assert pruned_cost(str(s)) == pruned_cost(str(w))  # same pattern: same kept count and metadata bits
    ms, mw = (json.loads((d / "manifest.json").read_text())["bytes"] for d in (s, w))
    assert ms["pruned_mlp_bytes"] == mw["pruned_mlp_bytes"] and ms["metadata_bytes"] == mw["metadata_bytes"]


def _masked(model, masks):
    m = copy.deepcopy(model)
    apply_masks(m, masks)
    return m


def test_fused_gate_up_is_pruned_from_the_mlp_input():
    phi3 = tiny_model("phi3")
    masks = prune(copy.deepcopy(phi3), CALIB, parse_sparsity("2:4"))
    assert sorted(masks) == [f"layers.{i}.mlp.{p}" for i in range(N_LAYERS) for p in ("down_proj", "gate_up_proj")]
    hx, _ = hessians(phi3, 0, CALIB)
    _, keep = prune_matrix(phi3.model.layers[0].mlp.gate_up_proj.weight, hx, parse_sparsity("2:4"))
    np.testing.assert_array_equal(masks["layers.0.mlp.gate_up_proj"], keep.numpy())


def test_bad_inputs_are_config_errors(llama):
    with pytest.raises(ConfigError, match="multiple of M = 8"):
        prune_model(llama, "sparsegpt", "4:8", blocksize=100, token_ids=np.arange(400))
    with pytest.raises(ConfigError, match="SparseGPT's; wanda"):
        prune_model(llama, "wanda", "0.5", damp=0.1, token_ids=np.arange(400))
    with pytest.raises(ConfigError, match="updates the weights"):
        compute_masks(llama, collect_norms(llama, CALIB), "sparsegpt", "0.5")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sparsity", "3:2"], "0 < N < M"),
        (["--blocksize", "0"], "--blocksize must be a positive"),
        (["--sparsity", "2:4", "--blocksize", "126"], "not a multiple of M = 4"),
        (["--damp", "-0.01"], "--damp must be a positive"),
        (["--damp", "nan"], "--damp must be a positive"),
        (["--alpha", "0.3"], "--alpha is DaSS's"),
    ],
)
def test_cli_bad_input_is_one_line_config_error_before_loading(args, message):
    res = CliRunner().invoke(prune_command, ["--method", "sparsegpt", *args])
    assert isinstance(res.exception, ConfigError), res.output
    assert message in str(res.exception) and "\n" not in str(res.exception)


def test_cli_sparsegpt_options_with_another_method_are_errors():
    res = CliRunner().invoke(prune_command, ["--method", "dass", "--blocksize", "64"])
    assert isinstance(res.exception, ConfigError) and "takes neither" in str(res.exception)
