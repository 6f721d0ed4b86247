"""The PyTorch tracer: recorded magnitudes equal a recomputation from the weights, metadata
matches the model, SmolLM2 traces end to end, and bad input is a SimcoreError that says how to
fix it."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from simcore.errors import ConfigError, SimcoreError  # noqa: E402
from simcore.models import PRESETS, smollm2_gguf_path  # noqa: E402
from simcore.trace.format import TraceReader  # noqa: E402
from simcore.trace.text import embedded_text, split_windows, token_windows, tokenize  # noqa: E402
from simcore.trace.tracer import trace_model  # noqa: E402

pytestmark = pytest.mark.torch

from tiny_models import D_INT, FAMILIES, HEADS, KV_HEADS, N_LAYERS, VOCAB, D, tiny_model  # noqa: E402, F401


def _rmsnorm(r, norm, gemma: bool):
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    y = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps)
    return y * (1.0 + norm.weight) if gemma else y * norm.weight


def _act(z, gelu: bool):
    if gelu:  # GELU, tanh approximation (Gemma)
        return 0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))
    return z * torch.sigmoid(z)


def reference(model, family: str, windows):
    """Per layer, |x|, |h|, |gate|, |up| recomputed from the weights: x is the post-attention
    RMSNorm (written out here) of the residual stream entering it, then gate = act(W_g x),
    up = W_u x, h = gate * up with W_g, W_u read from the layer's weights."""
    layers = model.model.layers
    resid = {}
    hooks = [
        la.post_attention_layernorm.register_forward_pre_hook(lambda m, a, i=i: resid.__setitem__(i, a[0][0]))
        for i, la in enumerate(layers)
    ]
    out = [{c: [] for c in ("x", "h", "gate", "up")} for _ in layers]
    try:
        with torch.no_grad():
            for w in windows:
                model(input_ids=torch.as_tensor(w)[None], use_cache=False)
                for i, la in enumerate(layers):
                    x = _rmsnorm(resid[i].double(), la.post_attention_layernorm, family == "gemma").float()
                    if family == "phi3":
                        wg, wu = la.mlp.gate_up_proj.weight[:D_INT], la.mlp.gate_up_proj.weight[D_INT:]
                    else:
                        wg, wu = la.mlp.gate_proj.weight, la.mlp.up_proj.weight
                    gate = _act(x @ wg.T, family == "gemma")
                    up = x @ wu.T
                    for c, v in (("x", x), ("h", gate * up), ("gate", gate), ("up", up)):
                        out[i][c].append(v.abs().numpy())
    finally:
        for h in hooks:
            h.remove()
    return [{c: np.concatenate(v) for c, v in layer.items()} for layer in out]


def dense_perplexity(model, windows) -> float:
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            ids = torch.as_tensor(w)[None]
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            nll += float(loss) * (len(w) - 1)
            n += len(w) - 1
    return math.exp(nll / n)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_recorded_magnitudes_equal_recomputation_from_weights(family, tmp_path):
    model = tiny_model(family)
    ids = np.random.default_rng(1).integers(3, VOCAB, size=40)
    path = trace_model(model=model, token_ids=ids, tokens=40, seq_len=24, out=tmp_path / family, progress=False)
    windows = split_windows(ids, 24)  # 24 + 16 tokens: a partial last window
    ref = reference(model, family, windows)
    r = TraceReader(path)
    assert r.n_tokens == 40
    for layer in range(N_LAYERS):
        got = r.read_layer(layer, ("token_id", "position", "x", "h", "gate", "up"))
        np.testing.assert_array_equal(got["token_id"], ids)
        np.testing.assert_array_equal(got["position"], np.r_[np.arange(24), np.arange(16)])
        for c, width in (("x", D), ("h", D_INT), ("gate", D_INT), ("up", D_INT)):
            assert got[c].dtype == np.float16 and got[c].shape == (40, width)
            np.testing.assert_allclose(
                got[c].astype(np.float32),
                ref[layer][c],
                rtol=2e-3,
                atol=1e-5,
                err_msg=f"{family} layer {layer} column {c}",
            )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_metadata_describes_the_model(family, tmp_path):
    model = tiny_model(family)
    ids = np.arange(3, 35)
    meta = TraceReader(
        trace_model(model=model, token_ids=ids, tokens=32, seq_len=16, out=tmp_path / "t", progress=False)
    ).meta
    m = meta.model
    assert (m.family, m.n_layers, m.d, m.d_int) == (family, N_LAYERS, D, D_INT)
    assert (m.n_heads, m.n_kv_heads, m.head_dim, m.vocab) == (HEADS, KV_HEADS, D // HEADS, VOCAB)
    assert m.activation == ("gelu" if family == "gemma" else "silu")
    assert m.tied == (family == "gemma")
    sp = m.static_params
    total = sum(p.numel() for p in model.parameters())  # counts a tied matrix once
    assert sp.attention + sp.embedding + sp.lm_head + sp.norms + sp.other + N_LAYERS * m.mlp_params_per_layer == total
    assert sp.embedding == VOCAB * D and sp.lm_head == (0 if m.tied else VOCAB * D)
    assert sp.norms == (2 * N_LAYERS + 1) * D and sp.other == 0
    assert sp.attention == sum(p.numel() for n, p in model.named_parameters() if ".self_attn." in n)
    assert meta.seq_len == 16 and meta.n_tokens == 32 and meta.source == "token ids"
    assert meta.extra["perplexity"] == pytest.approx(dense_perplexity(model, split_windows(ids, 16)), rel=1e-4)
    assert meta.extra["model_dtype"] == "float32" and meta.extra["torch_version"] == torch.__version__


def test_interrupt_leaves_no_trace(tmp_path):
    model = tiny_model("llama")
    calls = []

    def interrupt(*_):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    handle = model.model.layers[1].mlp.register_forward_hook(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            trace_model(
                model=model, token_ids=np.arange(3, 35), tokens=32, seq_len=16, out=tmp_path / "t", progress=False
            )
    finally:
        handle.remove()
    assert list(tmp_path.iterdir()) == []


def test_columns_x_h_records_only_x_and_h(tmp_path):
    for family in ("llama", "phi3"):  # separate gate/up projections, and Phi-3's fused gate_up_proj
        model = tiny_model(family)
        ids = np.arange(3, 35)
        path = trace_model(
            model=model, token_ids=ids, tokens=32, seq_len=16, out=tmp_path / family, progress=False, columns="x,h"
        )
        r = TraceReader(path)
        assert r.meta.columns == ["x", "h"] and r.methods() == ["dense", "glu", "dejavu", "dip", "dip-ca"]
        assert r._open(1).schema_arrow.names == ["token_id", "position", "x", "h"]
        full = trace_model(model=model, token_ids=ids, tokens=32, seq_len=16, out=tmp_path / "all", progress=False)
        for layer in range(N_LAYERS):
            a, b = r.read_layer(layer), TraceReader(full).read_layer(layer)
            assert all(np.array_equal(a[c], b[c]) for c in ("x", "h"))


def test_nan_activations_stop_the_trace_naming_layer_column_and_token(tmp_path):
    model = tiny_model("llama")
    calls = []

    def poison(_module, args):  # the second window's token 5 gets a NaN in layer 1's GLU activation
        calls.append(1)
        if len(calls) == 2:
            h = args[0].clone()
            h[0, 5, 3] = float("nan")
            return (h,)
        return None

    handle = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(poison)
    try:
        with pytest.raises(SimcoreError) as e:
            trace_model(
                model=model, token_ids=np.arange(3, 43), tokens=40, seq_len=24, out=tmp_path / "t", progress=False
            )
    finally:
        handle.remove()
    msg = str(e.value)
    assert all(w in msg for w in ("layer 1", "'h'", "token 29", "NaN")), msg
    assert list(tmp_path.iterdir()) == []


def test_trace_checks_every_setting_before_the_model_loads(tmp_path, monkeypatch):
    import simcore.trace.tracer as tracer

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before a bad setting was found")

    monkeypatch.setattr(tracer, "load_model", no_load)
    (tmp_path / "file").write_text("")
    for kwargs, words in (
        ({"columns": "x,gate"}, "--columns"),
        ({"columns": "x,h,z"}, "unknown column"),
        ({"out": tmp_path / "file"}, "is a file"),
        ({"out": tmp_path / "file" / "t"}, "is a file"),
        ({"tokens": 0}, "--tokens"),
        ({"seq_len": -1}, "--seq-len"),
        ({"dtype": "int3"}, "--dtype"),
        ({"text": tmp_path / "missing.txt"}, "missing.txt"),
    ):
        kwargs.setdefault("out", tmp_path / "t")
        with pytest.raises(SimcoreError) as e:
            trace_model(progress=False, **kwargs)
        assert words in str(e.value) and "\n" not in str(e.value), (kwargs, str(e.value))


def test_smollm2_traces_end_to_end_with_plausible_perplexity(tmp_path, capfd):
    pytest.importorskip("gguf")
    try:
        smollm2_gguf_path()
    except ConfigError as e:
        pytest.skip(str(e))
    capfd.readouterr()
    path = trace_model(tokens=300, seq_len=128, out=tmp_path / "smol", progress=False)
    err = capfd.readouterr().err
    assert "GGUF" not in err and "%|" not in err, f"progress=False still drew a bar: {err[-300:]}"
    r = TraceReader(path)
    shape, preset = r.model, PRESETS["smollm2-135m"]
    assert (shape.n_layers, shape.d, shape.d_int, shape.n_heads, shape.n_kv_heads, shape.vocab, shape.tied) == (
        preset.n_layers,
        preset.d,
        preset.d_int,
        preset.n_heads,
        preset.n_kv_heads,
        preset.vocab,
        preset.tied,
    )
    assert r.n_tokens == 300 and r.meta.source == "pydoc_data.topics"
    ppl = r.meta.extra["perplexity"]
    print(f"SmolLM2-135M-Instruct Q4_1 dense perplexity on 300 tokens of pydoc_data.topics: {ppl:.2f}")
    assert math.isfinite(ppl) and 3 < ppl < 100
    layer = r.read_layer(5, ("x", "h", "gate", "up"))
    for v in layer.values():
        assert np.isfinite(v.astype(np.float32)).all() and (v > 0).mean() > 0.9


def test_text_windows_split_and_offset():
    class Chars:  # a tokenizer with one token per character
        def __call__(self, text):
            return {"input_ids": [ord(c) for c in text]}

    text = embedded_text()
    assert text.startswith('The "assert" statement')
    w = token_windows(Chars(), text, 10, 4)
    assert [len(x) for x in w] == [4, 4, 2]
    assert "".join(chr(i) for i in np.concatenate(w)) == text[:10]
    later = tokenize(Chars(), text, 10, offset=10)
    assert "".join(chr(i) for i in later) == text[10:20]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"model": "no-such-model"}, ["unknown model", "smollm2-135m"]),
        ({"text": "/nonexistent/story.txt"}, ["/nonexistent/story.txt", "no such file"]),
        ({"tokens": 0}, ["--tokens", "positive"]),
        ({"tokens": -5}, ["--tokens", "positive"]),
        ({"seq_len": 0}, ["--seq-len"]),
        ({"dataset": "imagenet"}, ["unknown data set", "wikitext2"]),
        ({"text": "a.txt", "dataset": "wikitext2"}, ["not both"]),
        ({"dtype": "int3"}, ["--dtype"]),
    ],
)
def test_bad_input_is_a_simcore_error_that_says_how_to_fix_it(kwargs, words, tmp_path):
    with pytest.raises(SimcoreError) as e:
        trace_model(out=tmp_path / "t", progress=False, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_model_without_glu_mlp_is_rejected(tmp_path):
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    gpt2 = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with pytest.raises(ConfigError, match="no GLU MLP"):
        trace_model(model=gpt2, token_ids=np.arange(20), tokens=20, out=tmp_path / "t", progress=False)
    gpt2.save_pretrained(tmp_path / "gpt2")  # from a directory: rejected before the weights load
    with pytest.raises(ConfigError, match="no GLU MLP"):
        trace_model(model=str(tmp_path / "gpt2"), out=tmp_path / "t", progress=False)


def test_model_not_in_local_cache_says_where_it_looked():
    from huggingface_hub import try_to_load_from_cache

    if try_to_load_from_cache("mistralai/Mistral-7B-v0.1", "config.json") is not None:
        pytest.skip("Mistral-7B is in the local cache")
    with pytest.raises(ConfigError) as e:
        trace_model(model="mistral7b", progress=False)
    msg = str(e.value)
    assert all(w in msg for w in ("local Hugging Face cache", "--model-path", "--allow-download")), msg


def test_command_module_does_not_import_torch():
    code = "import sys, simcore.trace.command; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_command_rejects_zero_tokens_with_a_one_line_error():
    from click.testing import CliRunner

    from simcore.trace.command import trace_command

    result = CliRunner().invoke(trace_command, ["--tokens", "0", "--no-progress"])
    assert isinstance(result.exception, ConfigError) and "--tokens" in str(result.exception)
    help_text = CliRunner().invoke(trace_command, ["--help"]).output
    assert all(opt in help_text for opt in ("--model-path", "--dataset", "--allow-download", "--torch-device"))


def test_text_sources_local_files_and_wikitext2(tmp_path, monkeypatch):
    from simcore.trace.text import load_text

    wiki = tmp_path / "wiki.test.raw"
    wiki.write_text(" = Robert Boulter = \n\n Robert Boulter is an English film and television actor .\n")
    src = load_text(dataset=str(wiki))
    assert src.name.startswith("wikitext2:") and "Boulter is an English" in src.text
    story = tmp_path / "story.txt"
    story.write_text("Once upon a time.")
    assert load_text(text=str(story)).text == "Once upon a time."

    datasets = pytest.importorskip("datasets")
    # an empty cache, offline: a clear error at once, no download attempt
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets", raising=False)
    with pytest.raises(SimcoreError, match="WikiText-2 is not in the local datasets cache"):
        load_text(dataset="wikitext2")
    # with the split in the cache, rows are joined as published perplexity evaluations do
    calls = []

    def cached(path, name, split):
        calls.append((path, name, split))
        return {"text": [" = Title = ", "", " Body ."]}

    monkeypatch.setattr(datasets, "load_dataset", cached)
    src = load_text(dataset="wikitext2")
    assert calls == [("wikitext", "wikitext-2-raw-v1", "test")]
    assert src.name == "wikitext2" and src.text == " = Title = \n\n\n\n Body ."
