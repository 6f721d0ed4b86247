"""Static pruning (wanda, dass): exact pruned counts per comparison group, N:M in every group,
each method's group direction, scores equal to a hand computation from the weights and hooked
activations, the manifest's byte accounting, apply_masks, and bad input as ConfigError."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402

from simcore.errors import ConfigError  # noqa: E402
from simcore.prune import apply_masks, compute_masks, dass, load_masks, prune_model, wanda  # noqa: E402
from simcore.prune.calibrate import collect_norms  # noqa: E402
from simcore.prune.command import prune_command  # noqa: E402
from simcore.prune.patterns import parse_sparsity  # noqa: E402

pytestmark = pytest.mark.torch

from tiny_models import D_INT, N_LAYERS, VOCAB, D, tiny_model  # noqa: E402, F401

PARTS = ("gate_proj", "up_proj", "down_proj")
TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=400)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


CALIB = [TOKENS[200:264], TOKENS[264:300]]


@pytest.fixture(scope="module")
def hooked(model):
    """Per layer, x (MLP input) and h (down_proj input) over the calibration windows, as float64 numpy (T, width)."""
    acts = [{"x": [], "h": []} for _ in range(N_LAYERS)]
    hs = []
    for i, layer in enumerate(model.model.layers):
        hs.append(layer.mlp.register_forward_pre_hook(lambda m, a, i=i: acts[i]["x"].append(a[0][0].double().numpy())))
        hs.append(
            layer.mlp.down_proj.register_forward_pre_hook(
                lambda m, a, i=i: acts[i]["h"].append(a[0][0].double().numpy())
            )
        )
    with torch.no_grad():
        for w in CALIB:
            model(input_ids=torch.as_tensor(w)[None], use_cache=False)
    for h in hs:
        h.remove()
    return [{k: np.concatenate(v) for k, v in a.items()} for a in acts]


@pytest.fixture(scope="module")
def norms(model):
    return collect_norms(model, CALIB)


def _weights(model, i):
    mlp = model.model.layers[i].mlp
    return {p: getattr(mlp, p).weight.detach().double().numpy() for p in PARTS}


def _groups(mask, axis, size=None):
    """Rows of comparison groups: along ``axis`` (1 = within rows, 0 = within columns), of ``size`` (None = whole)."""
    g = mask if axis == 1 else mask.T
    return g.reshape(-1, size if size else g.shape[1])


def test_calibration_norms_equal_hooked_activation_norms(norms, hooked):
    for ln, a in zip(norms, hooked):
        np.testing.assert_allclose(ln.x.numpy(), np.sqrt((a["x"] ** 2).sum(0)), rtol=1e-12)
        np.testing.assert_allclose(ln.h.numpy(), np.sqrt((a["h"] ** 2).sum(0)), rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_dass_scores_equal_hand_computation(model, norms, hooked, alpha):
    i = 1
    w = _weights(model, i)
    h = np.sqrt((hooked[i]["h"] ** 2).sum(0))
    mlp = model.model.layers[i].mlp
    for part in ("gate_proj", "up_proj"):
        got = dass.scores(part, getattr(mlp, part).weight, norms[i].x, norms[i].h, alpha).numpy()
        np.testing.assert_allclose(got, np.abs(w[part]) * (h**alpha)[:, None], rtol=1e-12)
    got = dass.scores("down_proj", mlp.down_proj.weight, norms[i].x, norms[i].h, alpha).numpy()
    np.testing.assert_allclose(got, np.abs(w["down_proj"]) * h[None, :], rtol=1e-12)


def test_wanda_scores_equal_hand_computation(model, norms, hooked):
    i = 0
    w = _weights(model, i)
    x = np.sqrt((hooked[i]["x"] ** 2).sum(0))
    h = np.sqrt((hooked[i]["h"] ** 2).sum(0))
    mlp = model.model.layers[i].mlp
    for part, n in (("gate_proj", x), ("up_proj", x), ("down_proj", h)):
        got = wanda.scores(part, getattr(mlp, part).weight, norms[i].x, norms[i].h).numpy()
        np.testing.assert_allclose(got, np.abs(w[part]) * n[None, :], rtol=1e-12)


def _hand_mask(score, pattern, axis):
    """numpy reference: per group along ``axis``, keep the top (ties: later position wins)."""
    s = score if axis == 1 else score.T
    keep = np.zeros_like(s, dtype=bool)
    size = pattern.m if pattern.kind == "nm" else s.shape[1]
    for r in range(s.shape[0]):
        for g0 in range(0, s.shape[1], size):
            grp = s[r, g0 : g0 + size]
            n_keep = pattern.n if pattern.kind == "nm" else size - round(pattern.fraction * size)
            order = sorted(range(size), key=lambda j: (-grp[j], j))[:n_keep]
            keep[r, g0 + np.array(order, dtype=int)] = True
    return keep if axis == 1 else keep.T


@pytest.mark.parametrize("method", ["wanda", "dass"])
@pytest.mark.parametrize("sparsity", ["0.3", "2:4"])
def test_masks_equal_hand_computation(model, norms, hooked, method, sparsity):
    pattern = parse_sparsity(sparsity)
    masks = compute_masks(model, norms, method, sparsity)
    i = 1
    w = _weights(model, i)
    x = np.sqrt((hooked[i]["x"] ** 2).sum(0))
    h = np.sqrt((hooked[i]["h"] ** 2).sum(0))
    for part in PARTS:
        if method == "wanda":
            s, axis = np.abs(w[part]) * (h if part == "down_proj" else x)[None, :], 1
        elif part == "down_proj":
            s, axis = np.abs(w[part]) * h[None, :], 1
        else:
            s, axis = np.abs(w[part]) * np.sqrt(h)[:, None], 0
        np.testing.assert_array_equal(masks[f"layers.{i}.mlp.{part}"], _hand_mask(s, pattern, axis))


@pytest.mark.parametrize("method", ["wanda", "dass"])
@pytest.mark.parametrize("fraction", [0.5, 0.3, 0.75])
def test_unstructured_prunes_exact_count_in_every_group(model, norms, method, fraction):
    mod = {"wanda": wanda, "dass": dass}[method]
    pattern = parse_sparsity(str(fraction))
    for key, keep in compute_masks(model, norms, method, pattern).items():
        groups = _groups(keep, mod.group_axis(key.rsplit(".", 1)[1], pattern))
        pruned = groups.shape[1] - groups.sum(1)
        assert (pruned == round(fraction * groups.shape[1])).all(), key


@pytest.mark.parametrize("method", ["wanda", "dass"])
@pytest.mark.parametrize("nm", ["2:4", "4:8"])
def test_nm_keeps_exactly_n_in_every_group(model, norms, method, nm):
    mod = {"wanda": wanda, "dass": dass}[method]
    pattern = parse_sparsity(nm)
    for key, keep in compute_masks(model, norms, method, pattern).items():
        groups = _groups(keep, mod.group_axis(key.rsplit(".", 1)[1], pattern), pattern.m)
        assert (groups.sum(1) == pattern.n).all(), key


def test_group_directions_wanda_rows_dass_neurons(model, norms):
    """Wanda: N:M along each row's input dimension for every matrix. DaSS: down along rows (its
    input dimension = the neurons), gate/up along columns (across neurons), where rows then fail N:M."""
    p = parse_sparsity("2:4")
    wm = compute_masks(model, norms, "wanda", p)
    dm = compute_masks(model, norms, "dass", p)
    for i in range(N_LAYERS):
        for part in PARTS:
            assert (_groups(wm[f"layers.{i}.mlp.{part}"], 1, 4).sum(1) == 2).all()
        assert (_groups(dm[f"layers.{i}.mlp.down_proj"], 1, 4).sum(1) == 2).all()
        for part in ("gate_proj", "up_proj"):
            m = dm[f"layers.{i}.mlp.{part}"]
            assert (_groups(m, 0, 4).sum(1) == 2).all()
            assert not (_groups(m, 1, 4).sum(1) == 2).all()
    assert [wanda.group_axis(q, p) for q in PARTS] == [1, 1, 1]
    assert [dass.group_axis(q, p) for q in PARTS] == [0, 0, 1]


@pytest.mark.parametrize("method", ["wanda", "dass"])
def test_fused_gate_up_is_scored_as_its_gate_and_up_halves(method):
    """Phi-3's one gate_up_proj matrix: wanda scores it by the MLP input's channel norms, dass row r by
    neuron r mod d_int's norm (rows [0, d_int) gate, [d_int, 2 d_int) up); its mask keeps its own key."""
    phi3 = tiny_model("phi3")
    norms = collect_norms(phi3, CALIB)
    pattern = parse_sparsity("0.5")
    masks = compute_masks(phi3, norms, method, pattern)
    assert sorted(masks) == [f"layers.{i}.mlp.{p}" for i in range(N_LAYERS) for p in ("down_proj", "gate_up_proj")]
    w = phi3.model.layers[1].mlp.gate_up_proj.weight.detach().double().numpy()
    x, h = norms[1].x.numpy(), norms[1].h.numpy()
    assert w.shape == (2 * D_INT, D)
    if method == "wanda":
        s, axis = np.abs(w) * x[None, :], 1
    else:
        s, axis = np.abs(w) * np.tile(np.sqrt(h), 2)[:, None], 0
    np.testing.assert_array_equal(masks["layers.1.mlp.gate_up_proj"], _hand_mask(s, pattern, axis))


def test_dass_keeps_more_weights_of_strong_neurons(model, norms):
    keep = compute_masks(model, norms, "dass", "0.5")["layers.0.mlp.up_proj"].sum(1)
    h = norms[0].h.numpy()
    strong, weak = h > np.quantile(h, 0.75), h < np.quantile(h, 0.25)
    assert keep[strong].mean() > keep[weak].mean()


def test_apply_masks_zeroes_exactly_the_pruned_weights(model, norms):
    masks = compute_masks(model, norms, "dass", "4:8")
    m2 = copy.deepcopy(model)
    zeroed = apply_masks(m2, masks)
    assert zeroed == sum(int((~k).sum()) for k in masks.values())
    for name, p in model.named_parameters():
        q = dict(m2.named_parameters())[name].detach().numpy()
        key = name.removeprefix("model.").removesuffix(".weight")
        if key in masks:
            keep = masks[key]
            assert (q[~keep] == 0).all()
            np.testing.assert_array_equal(q[keep], p.detach().numpy()[keep])
        else:
            np.testing.assert_array_equal(q, p.detach().numpy())


@pytest.mark.parametrize("sparsity", ["0.5", "0.3", "2:4", "4:8"])
def test_prune_model_manifest_bytes_follow_the_accounting(model, tmp_path, sparsity):
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = prune_model(
        model,
        "dass",
        sparsity,
        calib_tokens=100,
        seq_len=64,
        out=tmp_path / "p",
        token_ids=TOKENS,
        calib_offset=200,
        eval_tokens=128,
    )
    for n, p in model.named_parameters():  # a model object is left as it was
        assert torch.equal(p, before[n])
    man = json.loads((out / "manifest.json").read_text())
    assert man["calibration"]["tokens"] == [200, 300] and man["evaluation"]["tokens"] == [0, 128]
    assert man["alpha"] == 0.5 and man["pattern"] == sparsity
    masks = load_masks(out)
    assert set(masks) == {f"layers.{i}.mlp.{p}" for i in range(N_LAYERS) for p in PARTS}
    pattern = parse_sparsity(sparsity)
    total = 0
    for key, keep in masks.items():
        numel, kept = keep.size, int(keep.sum())
        meta = (
            numel
            if pattern.kind == "unstructured"
            else (numel // pattern.m) * {(2, 4): 3, (4, 8): 7}[(pattern.n, pattern.m)]
        )
        entry = man["matrices"][key]
        assert entry["kept"] == kept and entry["kept_fraction"] == kept / numel
        assert entry["metadata_bits"] == meta
        assert entry["pruned_bytes"] == math.ceil((kept * 16 + meta) / 8)
        total += entry["pruned_bytes"]
    assert man["bytes"]["pruned_mlp_bytes"] == total
    assert man["bytes"]["dense_mlp_bytes"] == N_LAYERS * 3 * D * D_INT * 2
    assert man["perplexity"]["pruned"] > 0 and man["perplexity"]["dense"] > 0


def test_prune_model_masks_equal_compute_masks(model, tmp_path):
    out = prune_model(
        model,
        "wanda",
        "0.5",
        calib_tokens=100,
        seq_len=64,
        out=tmp_path / "w",
        token_ids=TOKENS,
        calib_offset=200,
        eval_tokens=128,
    )
    expect = compute_masks(model, collect_norms(model, [TOKENS[200:264], TOKENS[264:300]]), "wanda", "0.5")
    got = load_masks(out)
    for k in expect:
        np.testing.assert_array_equal(got[k], expect[k])
    assert json.loads((out / "manifest.json").read_text())["alpha"] is None


@pytest.mark.parametrize("bad", ["0.5x", "3:2", "0", "1", "1.5", "-0.2", "2:x", "0:4", "4:4", ""])
def test_bad_sparsity_is_config_error(bad):
    with pytest.raises(ConfigError, match="sparsity"):
        parse_sparsity(bad)


def test_bad_inputs_are_config_errors(model):
    with pytest.raises(ConfigError, match="wanda, dass or sparsegpt"):
        prune_model(model, "magnitude", "0.5", token_ids=TOKENS)
    with pytest.raises(ConfigError, match="alpha"):
        prune_model(model, "dass", "0.5", alpha=0, token_ids=TOKENS)
    with pytest.raises(ConfigError, match="overlap"):
        prune_model(model, "wanda", "0.5", calib_offset=100, eval_tokens=256, token_ids=TOKENS)
    with pytest.raises(ConfigError, match="multiple of 3"):
        prune_model(
            model, "wanda", "1:3", calib_tokens=64, seq_len=64, calib_offset=200, eval_tokens=64, token_ids=TOKENS
        )


@pytest.mark.parametrize(
    "args", [["--method", "magnitude"], ["--sparsity", "0.5x"], ["--sparsity", "3:2"], ["--sparsity", "1.2"]]
)
def test_cli_bad_input_is_config_error_before_loading(args):
    res = CliRunner().invoke(prune_command, args)
    assert isinstance(res.exception, ConfigError)
    assert "\n" not in str(res.exception)
