"""The Flash read model (simcore/engine/flash.py, kernels/reads.py, engine/layout.py): curve interpolation,
runs, page rounding and gap merging worked by hand; the curve model through replay; layouts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simcore.cli import main
from simcore.device import load_device
from simcore.engine import flash
from simcore.engine import kernels as K
from simcore.engine import layout as layout_file
from simcore.errors import ConfigError
from simcore.trace.synth import synth_trace

CURVE = flash.curve_of([[4096, 0.4], [65536, 1.6], [1048576, 3.2]])  # 4 KB 0.4 GB/s .. 1 MB 3.2 GB/s


def reads_of(positions, unit_bytes, page=4096.0, curve=CURVE, n_units=256):
    """(requests, bytes read, seconds) of one token missing the units at ``positions``."""
    bits = np.zeros((1, flash.words(n_units)), np.uint64)
    for p in positions:
        K.mark_unit(p, np.zeros(0, np.int32), bits, 0)
    reads = flash.Reads(flash.ReadSpec(float(unit_bytes), page, curve, np.zeros(0, np.int32)), n_units, 1)
    reads.account(bits, 0)
    return int(reads.requests[0]), float(reads.bytes_read[0]), float(reads.seconds[0])


def t(nbytes, gbps):
    return nbytes / (gbps * 1e9)


def test_curve_is_interpolated_in_log_size_and_clamped_at_both_ends():
    assert K.request_seconds(4096.0, CURVE) == pytest.approx(t(4096, 0.4))
    assert K.request_seconds(1024.0, CURVE) == pytest.approx(t(4096, 0.4))  # below: a request of the first size
    assert K.request_seconds(4 * 2**20, CURVE) == pytest.approx(t(4 * 2**20, 3.2))  # above: the last throughput
    # 16 KB is halfway from 4 KB to 64 KB in log2 size: 0.4 + (1.6 - 0.4) / 2 = 1.0 GB/s
    assert K.request_seconds(16384.0, CURVE) == pytest.approx(t(16384, 1.0))
    # 256 KB: halfway from 64 KB to 1 MB: 2.4 GB/s
    assert K.request_seconds(262144.0, CURVE) == pytest.approx(t(262144, 2.4))


def test_one_unit_is_one_page_read():
    assert reads_of([5], 1000) == (1, 4096.0, pytest.approx(t(4096, 0.4)))


def test_consecutive_units_are_one_run_rounded_out_to_pages():
    # units 3..7 of 1000 bytes: bytes 3000..8000 -> pages [0, 8192): one request of 8 KB
    n, b, s = reads_of(range(3, 8), 1000)
    assert (n, b) == (1, 8192.0)
    assert s == pytest.approx(t(8192, 0.4 + 1.2 / 4))  # 8 KB: a quarter of the way to 64 KB in log2 size


def test_units_in_the_same_page_are_one_request():
    assert reads_of([0, 2], 1000)[:2] == (1, 4096.0)  # bytes 0..1000 and 2000..3000: both in page 0


def test_the_gap_read_through_comes_from_the_curve():
    # one request over 2 + g pages is no slower than two one-page requests (2 x 10.24 us) up to g = 3:
    # 5 pages at 0.4 + 1.2 * log2(5) / 4 GB/s take 18.7 us, 6 pages 20.9 us
    table = flash.cost_table(CURVE, 4096.0)
    assert table[1] == pytest.approx(t(4096, 0.4)) and table[5] == pytest.approx(t(20480, 0.4 + 0.3 * math.log2(5)))
    assert flash.gap_units(table, 4096.0, 4096.0) == 3
    assert flash.gap_units(table, 4096.0, 1000.0) == 12  # 12,288 bytes of 1,000-byte units
    assert flash.gap_units(table, 4096.0, 20000.0) == 0  # units larger than the gap: nothing read through
    flat = flash.curve_of([[4096, 1.0], [1048576, 1.0]])  # no gain from larger requests: only a page
    assert flash.gap_units(flash.cost_table(flat, 4096.0), 4096.0, 1000.0) == 4


def test_a_gap_is_read_when_that_is_cheaper_than_another_request():
    # units 0 and 2 of 4096 bytes: pages 0 and 2, a one-unit gap (at most 3 are read through): one
    # request of 12 KB at 0.4 + 1.2 * log2(3) / 4 GB/s
    n, b, s = reads_of([0, 2], 4096)
    assert (n, b) == (1, 12288.0)
    assert s == pytest.approx(t(12288, 0.4 + 1.2 * math.log2(3) / 4))
    # far apart (unit 0 and unit 200: a 796 KB gap), two requests
    n, b, s = reads_of([0, 200], 4096)
    assert (n, b) == (2, 8192.0)
    assert s == pytest.approx(2 * t(4096, 0.4))


def test_no_miss_no_read_and_fractional_unit_bytes():
    assert reads_of([], 1000) == (0, 0.0, 0.0)
    # 297-byte units (SmolLM2's down channel at 4.125 bits): unit 13 spans bytes 3861..4158, two pages
    assert reads_of([13], 297)[:2] == (1, 8192.0)


def test_energy_by_hand(tmp_path):
    from simcore.engine.throughput import token_time

    dev = load_device("a18").model_copy(update={"dram_pj_per_byte": 20.0, "flash_pj_per_byte": 150.0})
    tt = token_time(1e9, 1e8, 0.0, dev, t_flash=0.05, b_flash_read=2e8)
    assert tt["energy_dram_mj_per_token"] == pytest.approx(1e9 * 20e-12 * 1e3)  # 20 mJ
    assert tt["energy_flash_mj_per_token"] == pytest.approx(2e8 * 150e-12 * 1e3)  # 30 mJ: bytes read, pages included
    assert tt["energy_mj_per_token"] == pytest.approx(50.0)
    assert tt["t_flash_ms"] == pytest.approx(50.0)
    assert tt["tokens_per_s"] == pytest.approx(1 / (1e9 / 60e9 + 0.05))


# --- through replay -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    return synth_trace("smollm2-135m", 160, tmp_path_factory.mktemp("t") / "smol", seed=5)


@pytest.fixture(scope="module")
def curved(tmp_path_factory):
    d = load_device("snapdragon-8-gen3").model_dump(exclude_none=True)
    d.update(
        name="curved",
        flash_page_bytes=4096,
        flash_curve=[[4096, 0.45], [524288, 3.5]],
        dram_pj_per_byte=30.0,
        flash_pj_per_byte=100.0,
    )
    p = tmp_path_factory.mktemp("dev") / "curved.yaml"
    import yaml

    p.write_text(yaml.safe_dump(d))
    return str(p)


def _replay(**kw):
    from simcore import replay

    return replay(**{"dram": "70MB", "warmup": 20, "threads": 1, **kw})


@pytest.mark.parametrize("policy", ["lfu", "belady", "sieve"])
def test_curve_replay_reports_requests_amplification_bandwidth_energy(smol, curved, policy):
    method = "dip" if policy == "belady" else "dip-ca"
    const = _replay(trace=str(smol), device=curved, policy=policy, method=method)
    r = _replay(trace=str(smol), device=curved, policy=policy, method=method, flash_model="curve")
    t = r.totals
    # the cache behaves the same; only the Flash time differs
    assert t["hits"] == const.totals["hits"] and t["flash_bytes_per_token"] == const.totals["flash_bytes_per_token"]
    assert t["tokens_per_s_constant"] == pytest.approx(const.totals["tokens_per_s"])
    assert t["flash_requests_per_token"] > 0 and t["read_amplification"] >= 1.0
    assert t["flash_mean_request_bytes"] == pytest.approx(
        t["flash_bytes_read_per_token"] / t["flash_requests_per_token"]
    )
    assert t["flash_effective_gbps"] == pytest.approx(t["flash_bytes_per_token"] / (t["t_flash_ms"] / 1e3) / 1e9)
    assert t["flash_effective_gbps"] <= 3.5 + 1e-9  # never faster than the curve's best
    assert t["energy_flash_mj_per_token"] == pytest.approx(t["flash_bytes_read_per_token"] * 100e-12 * 1e3)
    assert sum(k["flash_requests_per_token"] for k in r.kinds.values()) == pytest.approx(t["flash_requests_per_token"])


def test_constant_model_is_the_default_and_unchanged(smol, curved):
    a = _replay(trace=str(smol), device=curved)
    b = _replay(trace=str(smol), device=curved, flash_model="constant")
    assert a.totals == b.totals
    dev = load_device(curved)
    t = a.totals
    assert t["t_flash_ms"] == pytest.approx(t["flash_bytes_per_token"] / (dev.flash_bw_gbps * 1e9) * 1e3)
    assert "flash_requests_per_token" not in t


def test_identity_layout_changes_nothing_and_a_shuffled_one_changes_only_reads(smol, curved, tmp_path):
    from simcore.engine.settings import ReplayConfig, resolve_setting
    from simcore.trace.format import TraceReader

    reader = TraceReader(smol)
    shape = reader.model
    setting = resolve_setting(ReplayConfig(trace=str(smol), device=curved, dram="70MB"), shape, ["70MB"])
    rng = np.random.default_rng(0)
    meta = {"model": shape.name, "n_layers": shape.n_layers, "text": "other text", "tokens": [0, 100]}
    ident, shuffled = {}, {}
    for layer in range(shape.n_layers):
        for kind in setting.selection.kinds:
            ident[(layer, kind.name)] = np.arange(kind.n_units)
            shuffled[(layer, kind.name)] = rng.permutation(kind.n_units)
    layout_file.save(tmp_path / "ident.npz", ident, meta)
    layout_file.save(tmp_path / "shuf.npz", shuffled, meta)
    base = _replay(trace=str(smol), device=curved, flash_model="curve")
    same = _replay(trace=str(smol), device=curved, flash_model="curve", layout=str(tmp_path / "ident.npz"))
    other = _replay(trace=str(smol), device=curved, flash_model="curve", layout=str(tmp_path / "shuf.npz"))
    assert same.totals == base.totals
    assert other.totals["hits"] == base.totals["hits"]
    assert other.totals["flash_requests_per_token"] != base.totals["flash_requests_per_token"]


def test_a_layout_of_the_same_text_is_judged_on_other_tokens(smol, curved, tmp_path):
    from simcore.trace.format import TraceReader

    reader = TraceReader(smol)
    shape = reader.model
    pos = {
        (layer, k): np.arange(n)
        for layer in range(shape.n_layers)
        for k, n in (("input", shape.d), ("down", shape.d_int))
    }
    p = tmp_path / "tail.npz"
    layout_file.save(
        p, pos, {"model": shape.name, "n_layers": shape.n_layers, "text": reader.meta.source, "tokens": [120, 160]}
    )
    r = _replay(trace=str(smol), device=curved, flash_model="curve", layout=str(p))
    assert r.totals["tokens"] == 120 and any("[0, 120)" in w for w in r.config["warnings"])
    with pytest.raises(ConfigError, match="judged on other tokens"):
        _replay(trace=str(smol), device=curved, flash_model="curve", layout=str(p), tokens=150)
    assert (
        _replay(trace=str(smol), device=curved, flash_model="curve", layout=str(p), tokens=100).totals["tokens"] == 100
    )


# --- bad input: one line each -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "curve, page, message",
    [
        ("[]", 4096, "flash_curve is empty"),
        ("[[4096, 0.45], [0, 1.0]]", 4096, "must be positive"),
        ("[[4096, -0.45]]", 4096, "must be positive"),
        ("[[65536, 1.0], [4096, 0.45]]", 4096, "not larger than the point before"),
        ("[[4096, 0.45]]", 0, "flash_page_bytes"),
        ("[[4096, 0.45], [8192, 9.0]]", 4096, "exceeds flash_peak_gbps"),
    ],
)
def test_bad_curves_are_one_line_errors(smol, tmp_path, capsys, curve, page, message):
    p = tmp_path / "bad.yaml"
    p.write_text(
        f"dram_bw_gbps: 60\nflash_bw_gbps: 1\nflash_peak_gbps: 5.8\nflash_page_bytes: {page}\nflash_curve: {curve}\n"
    )
    assert main(["replay", "--trace", str(smol), "--device", str(p), "--dram", "70MB"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(p) in err and len(err.strip().splitlines()) == 1, err


def test_options_that_do_not_combine_are_refused(smol, curved, capsys):
    cases = [
        (["--device", curved, "--flash-model", "curve", "--flash-bw", "1"], "drop one of them"),
        (["--device", "a18", "--flash-model", "curve"], "has none"),
        (["--device", curved, "--layout", "x.npz"], "add --flash-model curve"),
        (["--device", curved, "--flash-bundle"], "add --flash-model curve"),
        (["--device", curved, "--flash-model", "fast"], "--flash-model: Input should be"),
    ]
    for args, message in cases:
        assert main(["replay", "--trace", str(smol), "--dram", "70MB", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_bad_layout_files_are_one_line_errors(smol, curved, tmp_path, capsys):
    from simcore.trace.format import TraceReader

    shape = TraceReader(smol).model
    kinds = (("input", shape.d), ("down", shape.d_int))
    good = {(layer, k): np.arange(n) for layer in range(shape.n_layers) for k, n in kinds}
    meta = {"model": shape.name, "n_layers": shape.n_layers, "text": "t", "tokens": [0, 1]}
    not_perm = dict(good)
    not_perm[(0, "down")] = np.zeros(shape.d_int, np.int64)
    layout_file.save(tmp_path / "notperm.npz", not_perm, meta)
    layout_file.save(tmp_path / "other.npz", good, {**meta, "model": "mistral7b", "n_layers": 32})
    layout_file.save(tmp_path / "nokind.npz", {(0, "input"): np.arange(shape.d)}, meta)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "plain.npz", a=np.arange(3))
    cases = {
        "notperm.npz": "not a permutation",
        "other.npz": "is for model 'mistral7b'",
        "nokind.npz": "has no order for kind",
        "junk.npz": "cannot be read",
        "plain.npz": "not a simcore layout file",
        "missing.npz": "does not exist",
    }
    for name, message in cases.items():
        args = ["replay", "--trace", str(smol), "--dram", "70MB", "--device", curved, "--flash-model", "curve"]
        assert main([*args, "--layout", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (name, err)


def test_json_output_has_the_curve_figures(smol, curved, capsys):
    assert (
        main(["replay", "--trace", str(smol), "--dram", "70MB", "--device", curved, "--flash-model", "curve", "--json"])
        == 0
    )
    t = json.loads(capsys.readouterr().out)["totals"]
    for key in ("flash_requests_per_token", "read_amplification", "flash_effective_gbps", "energy_mj_per_token"):
        assert t[key] is not None and t[key + "_steady"] is not None


def test_sweep_columns_and_the_report_plot_of_both_models(smol, curved, tmp_path):
    from simcore.report import make_report
    from simcore.sweep.grid import Grid
    from simcore.sweep.run import run_sweep

    grid = Grid(
        {"dram": ["60MB", "80MB"], "flash_model": ["constant", "curve"], "method": ["dip"]},
        {"trace": str(smol), "device": curved, "warmup": 20},
    )
    rows = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 4, [r["error"] for r in rows]
    by = {(r["dram"], r["flash_model"]): r for r in rows}
    for d in ("60MB", "80MB"):
        c, k = by[(d, "constant")], by[(d, "curve")]
        assert c["read_amplification_steady"] is None and k["read_amplification_steady"] >= 1
        assert k["tokens_per_s_constant_steady"] == pytest.approx(c["tokens_per_s_steady"])
        assert k["hits"] == c["hits"]
    # a curve row equals its own replay
    alone = _replay(trace=str(smol), device=curved, method="dip", dram="60MB", flash_model="curve")
    assert by[("60MB", "curve")]["tokens_per_s_steady"] == pytest.approx(alone.totals["tokens_per_s_steady"])
    names = [p.name for p in make_report(tmp_path / "r.parquet", tmp_path / "report")]
    assert "flash_model.png" in names
    bad = Grid({"flash_bw": ["1"]}, {"trace": str(smol), "device": curved, "flash_model": "curve", "dram": "60MB"})
    row = run_sweep(bad, tmp_path / "bad.parquet", workers=1).to_pylist()[0]
    assert row["status"] == "error" and "drop one of them" in row["error"]


def test_a_neuron_unit_of_two_matrices_is_read_in_both_regions_unless_bundled(smol, curved):
    kw = dict(trace=str(smol), device=curved, method="gate", flash_model="curve", policy="lru")
    apart, together = _replay(**kw), _replay(**kw, flash_bundle=True)
    a, b = apart.kinds["up_down"], together.kinds["up_down"]  # a W_u row and a W_d column per neuron
    assert a["flash_bytes_per_token"] == b["flash_bytes_per_token"]
    assert a["flash_requests_per_token"] != b["flash_requests_per_token"]
    # the one-matrix kind reads the same either way
    assert apart.kinds["gate"]["flash_requests_per_token"] == together.kinds["gate"]["flash_requests_per_token"]
    # dip's input unit (W_u + W_g columns) is bundled by definition: --flash-bundle changes nothing for dip
    d1, d2 = _replay(**{**kw, "method": "dip"}), _replay(**{**kw, "method": "dip"}, flash_bundle=True)
    assert d1.totals["flash_requests_per_token"] == d2.totals["flash_requests_per_token"]


def test_a_unit_of_two_pieces_reads_its_pattern_in_each_region():
    spec1 = flash.ReadSpec(600.0, 4096.0, CURVE, np.zeros(0, np.int32), 1)
    spec2 = spec1._replace(pieces=2)
    one, two = flash.Reads(spec1, 256, 1), flash.Reads(spec2, 256, 1)
    bits = np.zeros((1, 4), np.uint64)
    for p in (3, 4, 5, 40, 41, 200):
        K.mark_unit(p, np.zeros(0, np.int32), bits, 0)
    two.account(bits.copy(), 0)  # account overwrites the bits
    assert (two.requests[0], two.bytes_read[0], two.seconds[0]) == pytest.approx(
        tuple(2 * np.array(reads_of([3, 4, 5, 40, 41, 200], 300.0)))
    )
    one.account(bits.copy(), 0)
    assert (one.requests[0], one.bytes_read[0]) == pytest.approx(reads_of([3, 4, 5, 40, 41, 200], 600.0)[:2])


def _reference_reads(missed, unit_bytes, page, gap, table):
    """The documented rule, unit by unit: gaps of at most ``gap`` units read through, runs rounded out to
    pages, runs whose pages touch joined; (requests, bytes, seconds)."""
    runs = []
    for p in missed:
        if runs and p - runs[-1][1] - 1 <= gap:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    reqs = []
    for a, b in runs:
        lo, hi = math.floor(a * unit_bytes / page), math.ceil((b + 1) * unit_bytes / page)
        if reqs and lo <= reqs[-1][1]:
            reqs[-1][1] = max(reqs[-1][1], hi)
        else:
            reqs.append([lo, hi])
    secs = sum(table[h - lo] if h - lo < len(table) else (h - lo) * page / CURVE.bps[-1] for lo, h in reqs)
    return len(reqs), sum(h - lo for lo, h in reqs) * page, secs


def test_requests_equal_the_rule_applied_unit_by_unit():
    """The word-wise kernel (run starts and ends from shifts, short gaps found by a window OR) equals the
    rule written out unit by unit, at the ends of the bitmap and across word boundaries too."""
    rng = np.random.default_rng(3)
    for trial in range(300):
        U = int(rng.integers(1, 6) * 64 - rng.integers(0, 64))
        m = rng.random(U) < rng.random() * 0.4
        if rng.random() < 0.3:
            m[-int(rng.integers(1, 5)) :] = True
        if rng.random() < 0.3:
            m[: int(rng.integers(1, 5))] = True
        unit_bytes = float(rng.choice([297.0, 1000.0, 2112.0, 4096.0, 14784.0]))
        missed = list(np.nonzero(m)[0])
        spec = flash.ReadSpec(unit_bytes, 4096.0, CURVE, np.zeros(0, np.int32))
        reads = flash.Reads(spec, U, 1)
        reads.gap = int(rng.integers(0, flash.MAX_GAP_UNITS + 1)) if trial % 2 else reads.gap
        bits = np.zeros((1, flash.words(U)), np.uint64)
        for p in missed:
            K.mark_unit(p, np.zeros(0, np.int32), bits, 0)
        reads.account(bits, 0)
        n, b, sec = _reference_reads(missed, unit_bytes, 4096.0, reads.gap, reads.table)
        assert (reads.requests[0], reads.bytes_read[0]) == (n, b), (trial, reads.gap, unit_bytes, missed)
        assert reads.seconds[0] == pytest.approx(sec)


def test_missed_units_are_marked_at_their_positions():
    """``mark_missed`` (64 flags to a word at once in stored order; unit by unit through a layout) sets
    exactly the bits of the units used and not cached, whatever the unit count."""
    rng = np.random.default_rng(5)
    for U in (1, 63, 64, 65, 200, 4096, 1000):
        used, cached = rng.random(U) < 0.5, rng.random(U) < 0.5
        for pos in (np.zeros(0, np.int32), rng.permutation(U).astype(np.int32)):
            bits = np.zeros(flash.words(U), np.uint64)
            K.mark_missed(used, cached, pos, bits[None], 0)
            want = np.zeros(flash.words(U), np.uint64)
            for u in np.nonzero(used & ~cached)[0]:
                K.mark_unit(int(u), pos, want[None], 0)
            assert np.array_equal(bits, want), (U, len(pos))
