"""The masking methods (simcore/methods): each one's density accounting, options, display metadata and
refusals; the engine reads none of their options by name (the kinds carry what it needs)."""

from __future__ import annotations

import pytest

from simcore import methods
from simcore.engine.settings import OPTION_OWNERS, ReplayConfig, method_options
from simcore.errors import ConfigError
from simcore.models import preset

SHAPE = preset("mistral7b")
BUILT_IN = ["dense", "glu", "gate", "up", "cats", "dejavu", "dip", "dip-ca"]


def density_of(selection) -> float:
    """MLP density from the kinds: selected weights per layer over the layer's MLP weights."""
    w = sum(f * k.n_units * k.weights_per_unit for k, f in zip(selection.kinds, selection.fractions))
    return w / SHAPE.mlp_params_per_layer


def test_the_package_lists_every_method_in_display_order():
    assert methods.available() == BUILT_IN
    orders = [methods.display(m).order for m in BUILT_IN]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert len({methods.display(m).color for m in BUILT_IN}) == len(BUILT_IN)


@pytest.mark.parametrize("method", BUILT_IN)
@pytest.mark.parametrize("density", [0.7, 0.8, 1.0])
def test_each_method_selects_the_density_it_is_asked_for(method, density):
    if method == "dense" and density != 1.0:
        pytest.skip("dense has density 1 only")
    sel = methods.resolve(method, SHAPE, density)
    if method == "cats":  # a threshold: the fraction is what calibration aims at
        assert sel.threshold is not None and sel.calib_tokens == 256
    assert density_of(sel) == pytest.approx(density, abs=1e-9)
    assert sel.cache_dependent == (method == "dip-ca")  # its default gamma 0.2 re-weights by the cache


def test_dip_ca_is_dip_with_cache_aware_kinds_and_gamma_one_is_cache_independent():
    dip = methods.resolve("dip", SHAPE, 0.5)
    ca = methods.resolve("dip-ca", SHAPE, 0.5, {"gamma": 0.3, "gamma_warmup": 10})
    assert [k.name for k in ca.kinds] == [k.name for k in dip.kinds] and ca.fractions == dip.fractions
    assert all(k.reweight.gamma == 0.3 and k.reweight.gamma_warmup == 10 for k in ca.kinds)
    assert not any(k.cache_aware for k in dip.kinds) and ca.cache_dependent
    assert not methods.resolve("dip-ca", SHAPE, 0.5, {"gamma": 1.0}).cache_dependent
    approx = methods.resolve("dip-ca", SHAPE, 0.5, {"approx_m": 2})
    assert approx.cache_dependent and approx.kinds[0].reweight.gamma == 1.0  # approximate selection: no gamma


@pytest.mark.parametrize(
    "options, message",
    [
        ({"gamma": 0}, "--gamma must be in (0, 1]"),
        ({"gamma": 1.5}, "--gamma must be in (0, 1]"),
        ({"approx_m": 0.5}, "--approx-m must be 0 (off) or above 1"),
        ({"approx_gamma": 0.5}, "--approx-gamma"),
        ({"approx_m": 2, "gamma": 0.5}, "--gamma would be ignored"),
        ({"rho_in": 1.2}, "--rho-in: Input should be less than or equal to 1"),
        ({"nonsense": 1}, "unknown setting --nonsense"),
    ],
)
def test_a_method_refuses_bad_options_and_combinations_it_does_not_implement(options, message):
    with pytest.raises(ConfigError) as e:
        methods.options("dip-ca", options)
    assert message in str(e.value) and str(e.value).startswith("method dip-ca: ")


def test_options_of_another_method_are_refused_unless_neutral():
    assert OPTION_OWNERS["gamma"] == ["dip-ca"] and OPTION_OWNERS["rho_in"] == ["dip", "dip-ca"]
    for method, settings in [("dip", {"gamma": 0.5}), ("cats", {"rho_d": 0.5}), ("dip-ca", {"cats_calib_tokens": 64})]:
        with pytest.raises(ConfigError, match="applies only to method"):
            method_options(ReplayConfig(method=method, **settings))
    assert method_options(ReplayConfig(method="dip", gamma=1.0)) == methods.options("dip")  # neutral: a grid's
    opts = method_options(ReplayConfig(method="dip-ca", gamma=0.4))
    assert opts.gamma == 0.4 and opts.model_fields_set == {"gamma"}  # only what was given, then defaults


def test_a_kind_split_only_given_is_taken_and_the_other_follows():
    sel = methods.resolve("dip", SHAPE, 0.5, {"rho_in": 0.3})
    assert sel.detail == {"rho_in": 0.3, "rho_d": pytest.approx(0.9), "split": "given"}
    with pytest.raises(ConfigError, match="give only one of them"):
        methods.resolve("dip", SHAPE, 0.5, {"rho_in": 0.3, "rho_d": 0.3})


def test_the_setting_line_names_every_variant_in_effect():
    base = {"density": 0.5, "selection": {"rho_in": 0.4, "rho_d": 0.7, "split": "given"}}
    ca = {**base, "method": "dip-ca", "gamma": 0.2, "fixed_top_n": 4, "gamma_warmup": 50, "approx_m": 0.0}
    assert methods.describe(ca) == (
        "dip-ca rho=0.50 (rho_in 0.400, rho_d 0.700, given) gamma=0.2 fixed_top_n=4 gamma_warmup=50 (linear)"
    )
    assert "approx_m=2" in methods.describe({**ca, "approx_m": 2.0, "fixed_top_n": 0})
    assert methods.describe({"method": "cats", "density": 0.6}) == "cats rho=0.60"
    assert methods.describe({"method": "dense", "density": 1.0}) == "dense"


def test_cats_threshold_keeps_the_asked_fraction():
    import numpy as np

    values = np.random.default_rng(0).exponential(size=10_000)
    thr = methods.load("cats").threshold(values, 0.3)
    assert (values > thr).mean() == pytest.approx(0.3, abs=1e-3)
    assert methods.load("cats").threshold(values, 1.0) < values.min()


def test_unknown_methods_and_files_without_resolve_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'magic'; choose one of: cats, dejavu, dense"):
        methods.load("magic")
    bad = tmp_path / "nothing.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no resolve"):
        methods.load(str(bad))
    wrong = tmp_path / "wrong_options.py"
    wrong.write_text("Options = dict\ndef resolve(shape, density, options):\n    pass\n")
    with pytest.raises(ConfigError, match="Options must subclass"):
        methods.load(str(wrong))
