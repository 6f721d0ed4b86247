"""Flash layouts (simcore/flash/layout.py): the computed order against the stored and frequency orders on
planted co-activation groups, the read model's figures worked by hand, layout files computed from a
trace, and the errors a user can cause."""

from __future__ import annotations

import numpy as np
import pytest

from simcore.engine import flash
from simcore.engine import layout as layout_file
from simcore.errors import ConfigError
from simcore.flash import layout as L
from simcore.trace.format import TraceReader

CURVE = flash.curve_of(L.FALLBACK_CURVE)
PAGE = 4096.0
TINY = "traces/tiny"


def planted(rng, n_tokens, perm, groups=32, size=16, p=0.2, noise=0.01):
    """Masks (bool[T, U]) of tokens that each use whole groups of ``size`` co-activated units (each group
    independently with probability ``p``, all groups alike), plus a few units flipped at random; unit
    ``perm[j]`` is the j-th unit of the groups taken in order (the groups are scattered by ``perm``)."""
    active = rng.random((n_tokens, groups)) < p
    grouped = np.repeat(active, size, axis=1) ^ (rng.random((n_tokens, groups * size)) < noise)
    masks = np.zeros_like(grouped)
    masks[:, perm] = grouped
    return masks


def test_planted_groups_end_up_contiguous_and_read_with_fewer_requests_than_frequency_order():
    rng = np.random.default_rng(7)
    groups, size = 32, 16
    U = groups * size
    perm = rng.permutation(U)  # perm[j]: the unit holding slot j of the groups
    calib, held = planted(rng, 512, perm), planted(rng, 512, perm)
    spec = flash.ReadSpec(PAGE, PAGE, CURVE, np.zeros(0, np.int32))  # a page per unit
    block = L.block_units(spec)
    assert block < size  # the hole a group leaves is skipped

    order, chosen = L.choose_order(calib, block, spec)
    assert chosen == "bisection"
    pos = L.positions(order)
    assert sorted(pos) == list(range(U))
    spans = [np.ptp(pos[perm[g * size : (g + 1) * size]]) for g in range(groups)]
    assert spans == [size - 1] * groups  # every group contiguous

    orders = {
        "identity": np.arange(U, dtype=np.int32),
        "frequency": L.positions(L.frequency_order(calib)),
        "layout": pos,
    }
    got = L.evaluate_orders(held, orders, spec.unit_bytes, PAGE, CURVE)
    assert got["layout"]["requests"] < 0.6 * min(got["identity"]["requests"], got["frequency"]["requests"])
    assert got["layout"]["seconds"] < 0.6 * min(got["identity"]["seconds"], got["frequency"]["seconds"])
    assert got["layout"]["bytes_read"] < got["frequency"]["bytes_read"]


def test_without_co_activation_the_choice_falls_back_to_an_order_it_can_defend():
    """Units used independently, each with its own frequency: nothing beats the frequency order, and the
    validation keeps the computed order only where it reads the held-back tokens fastest."""
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.6, 256)
    masks = rng.random((400, 256)) < p
    spec = flash.ReadSpec(1024.0, PAGE, CURVE, np.zeros(0, np.int32))
    block = L.block_units(spec)
    fit, val = masks[:300], masks[300:]
    trial = {
        "bisection": L.positions(L.bisection_order(fit, block)),
        "frequency": L.positions(L.frequency_order(fit)),
        "identity": np.arange(256, dtype=np.int32),
    }
    seconds = {k: v["seconds"] for k, v in L.evaluate_orders(val, trial, 1024.0, PAGE, CURVE).items()}
    _, chosen = L.choose_order(masks, block, spec)
    assert seconds[chosen] == min(seconds.values())


def test_evaluate_orders_counts_runs_pages_and_curve_time_by_hand():
    # 64 units of one page each; token 0 uses units 0, 1, 2; token 1 uses units 0 and 40
    masks = np.zeros((2, 64), np.bool_)
    masks[0, [0, 1, 2]] = True
    masks[1, [0, 40]] = True
    spread = np.arange(64, dtype=np.int32) * 7 % 64  # units 0, 1, 2 at positions 0, 7, 14: gaps of 6 pages
    got = L.evaluate_orders(masks, {"identity": np.arange(64, dtype=np.int32), "spread": spread}, PAGE, PAGE, CURVE)
    one, three = flash.request_seconds(PAGE, CURVE), flash.request_seconds(3 * PAGE, CURVE)
    # identity: token 0 one request of 3 pages, token 1 two one-page requests (a gap of 39 pages)
    assert got["identity"]["requests"] == pytest.approx(1.5)
    assert got["identity"]["bytes_read"] == pytest.approx((3 * PAGE + 2 * PAGE) / 2)
    assert got["identity"]["seconds"] == pytest.approx((three + 2 * one) / 2)
    # spread: gaps of 6 pages are skipped (more than the 5 read through): 3 + 2 one-page requests
    assert got["spread"]["requests"] == pytest.approx(2.5)
    assert got["spread"]["seconds"] == pytest.approx(5 * one / 2)


def test_bisection_is_a_deterministic_permutation():
    rng = np.random.default_rng(1)
    masks = rng.random((100, 300)) < 0.3
    a, b = L.bisection_order(masks, 4), L.bisection_order(masks.copy(), 4)
    assert np.array_equal(a, b)
    assert sorted(a) == list(range(300))
    assert sorted(L.bisection_order(masks[:, :1], 4)) == [0]


def test_layout_of_a_trace_is_a_file_replay_accepts(tmp_path):
    out = tmp_path / "tiny.npz"
    meta = L.write_layout(out, TINY, method="dip-ca", calib_tokens=4, eval_tokens=2, threads=1)
    loaded = layout_file.load(out)  # refuses anything but permutations
    reader = TraceReader(TINY)
    shape = reader.model
    assert loaded.meta["tokens"] == [2, 6] == meta["tokens"]  # the trace's last 4 tokens
    assert loaded.meta["text"] == reader.meta.source
    assert loaded.meta["model"] == shape.name and loaded.meta["n_layers"] == shape.n_layers
    assert loaded.meta["method"] == "dip-ca" and loaded.meta["algorithm"] == L.ALGORITHM
    assert "without its cache re-weighting" in loaded.meta["masks"]
    assert loaded.meta["kinds"] == {"input": shape.d, "down": shape.d_int}
    for layer in range(shape.n_layers):
        for kind, n in loaded.meta["kinds"].items():
            assert sorted(loaded.positions(layer, kind, n)) == list(range(n))
    assert loaded.meta["held_out"]["tokens"] == [0, 2]
    layout_file.check_fits(loaded, shape.name, shape.n_layers)
    layout_file.check_disjoint(loaded, reader.text_use(0, 2))  # replaying the tokens before is allowed
    with pytest.raises(ConfigError):
        layout_file.check_disjoint(loaded, reader.text_use(0, 3))


def test_replay_reads_the_layout_and_stops_before_its_tokens(tmp_path):
    from simcore.engine.replay import replay

    device = tmp_path / "phone.yaml"
    device.write_text(
        "name: phone\ndram_bw_gbps: 60\nflash_bw_gbps: 1\ndram_budget_gb: 4\nflash_page_bytes: 4096\n"
        "flash_curve: [[4096, 0.45], [524288, 3.5]]\n"
    )
    out = tmp_path / "tiny.npz"
    L.write_layout(out, TINY, calib_tokens=4, device=str(device), threads=1)
    result = replay(
        trace=TINY,
        method="dip",
        density=0.5,
        policy="lru",
        dram="1GB",
        device=str(device),
        flash_model="curve",
        layout=str(out),
        warmup=0,
    )
    assert any("replayed tokens [0, 2)" in w for w in result.warnings)


def test_first_chooses_the_calibration_tokens_and_threads_do_not_change_the_layout():
    pos1, meta1 = L.compute_layout(TINY, calib_tokens=3, first=0, eval_tokens=2, threads=1)
    pos2, meta2 = L.compute_layout(TINY, calib_tokens=3, first=0, eval_tokens=2, threads=2)
    assert meta1["tokens"] == [0, 3] and meta1["held_out"]["tokens"] == [3, 5]  # after, when they start at 0
    assert pos1.keys() == pos2.keys() and all(np.array_equal(pos1[k], pos2[k]) for k in pos1)


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"method": "nope"}, "unknown method"),
        ({"calib_tokens": 7}, "more than the trace's 6 tokens"),
        ({"calib_tokens": 0}, "--calib-tokens must be positive"),
        ({"calib_tokens": 4, "first": 3}, "--first 3"),
        ({"calib_tokens": 4, "first": -1}, "--first -1"),
        ({"method": "dense"}, "changes nothing"),
        ({"density": 1.5}, "--density"),
        ({"validation": 1.0}, "--validation"),
        ({"eval_tokens": -1}, "--eval-tokens"),
        ({"device": "no-such-phone"}, "no-such-phone"),
    ],
)
def test_bad_settings_are_one_line_config_errors(settings, words):
    with pytest.raises(ConfigError) as e:
        L.compute_layout(TINY, **{"calib_tokens": 4, **settings})
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_layout_file_must_end_in_npz(tmp_path):
    with pytest.raises(ConfigError, match=r"\.npz"):
        L.write_layout(tmp_path / "tiny.json", TINY, calib_tokens=4)
    assert not list(tmp_path.iterdir())
