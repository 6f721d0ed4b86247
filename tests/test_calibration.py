"""Calibration that cannot leak (simcore.calibration): a dip split calibrated on text A is found for text
A only, never applied to the tokens it was calibrated on, found the same from any working directory, and
named wherever it is used; overlap checks compare ranges of the same text only."""

from __future__ import annotations

import json
import os

import pytest

from simcore.calibration import TextUse, calibration_dir, calibration_file, check_disjoint, find_split, text_sha256
from simcore.errors import ConfigError

TEXT_A = "the quick brown fox jumps over the lazy dog. " * 400
TEXT_B = "pack my box with five dozen liquor jugs! " * 400


def save(model: str, text: str, tokens=(500, 600), splits=((0.5, 0.45, 0.6),), path=None) -> str:
    """A calibration file as `simcore calibrate` writes it, at ``path`` or where it is looked up."""
    sha = text_sha256(text)
    data = {
        "format": "simcore-dip-calibration",
        "model": model,
        "method": "dip",
        "text": {"source": "a file", "sha256": sha, "tokens": list(tokens), "seq_len": 32},
        "splits": [{"density": d, "rho_in": i, "rho_d": o, "perplexity": 1.0} for d, i, o in splits],
    }
    p = path or calibration_file(model, sha)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data))
    return str(p)


def use(text, first=0, end=100):
    return TextUse("a file", text_sha256(text), first, end)


def test_a_calibration_of_text_a_is_found_for_text_a_only():
    path = save("m", TEXT_A)
    assert find_split("m", 0.5, use(TEXT_A)) == ((0.45, 0.6), f"calibrated ({path})")
    split, note = find_split("m", 0.5, use(TEXT_B))
    assert split is None and note.startswith("default rule; no calibration for m on this text in ")
    assert str(calibration_dir()) in note  # the output names where it looked
    assert find_split("other-model", 0.5, use(TEXT_A))[0] is None
    split, note = find_split("m", 0.4, use(TEXT_A))
    assert split is None and "has no split for density 0.4 (it has 0.5)" in note
    assert find_split("m", 0.5, None)[0] is None  # the text is unknown: nothing is applied


def test_a_calibration_is_never_applied_to_the_tokens_it_was_calibrated_on():
    save("m", TEXT_A, tokens=(500, 600))
    with pytest.raises(
        ConfigError, match=r"calibrated on tokens \[500, 600\).*overlap the tokens used here \[550, 700\)"
    ):
        find_split("m", 0.5, use(TEXT_A, 550, 700))
    assert find_split("m", 0.5, use(TEXT_A, 600, 700))[0] is not None  # adjacent is disjoint


def test_an_explicit_calibration_applies_to_any_text_and_is_checked(tmp_path):
    path = save("m", TEXT_A, path=tmp_path / "mine.json")
    assert find_split("m", 0.5, use(TEXT_B), path)[0] == (0.45, 0.6)
    assert find_split("m", 0.5, use(TEXT_B, 500, 600), path)[0] == (0.45, 0.6)  # another text: no overlap
    with pytest.raises(ConfigError, match="overlap"):
        find_split("m", 0.5, use(TEXT_A, 0, 1000), path)
    with pytest.raises(ConfigError, match="was made for model 'm', not 'n'"):
        find_split("n", 0.5, use(TEXT_A), path)
    with pytest.raises(ConfigError, match="no split .*|has splits for densities 0.5, not 0.6"):
        find_split("m", 0.6, use(TEXT_A), path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a simcore calibration file"):
        find_split("m", 0.5, use(TEXT_A), tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no such file"):
        find_split("m", 0.5, use(TEXT_A), tmp_path / "none.json")


def test_the_working_directory_changes_nothing(tmp_path, monkeypatch):
    """The default location is the user's data directory, never the working directory: a run in another
    directory finds the same calibration, and an old calibration/ folder in the working directory is
    ignored."""
    monkeypatch.delenv("SIMCORE_CALIBRATION")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = save("m", TEXT_A)
    assert path.startswith(str(tmp_path / ("home" if os.uname().sysname == "Darwin" else "data")))
    for cwd in (tmp_path, tmp_path / "elsewhere"):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        assert find_split("m", 0.5, use(TEXT_A))[0] == (0.45, 0.6)
    (tmp_path / "elsewhere" / "calibration").mkdir()
    (tmp_path / "elsewhere" / "calibration" / "m.json").write_text(json.dumps({"splits": [{"density": 0.4}]}))
    assert find_split("m", 0.4, use(TEXT_A))[0] is None


def test_overlap_is_checked_against_the_same_text_only():
    prov = {"tokens": [0, 100], "text_sha256": text_sha256(TEXT_A)}
    check_disjoint(prov, "x", text_sha256(TEXT_B), 0, 100)
    check_disjoint(prov, "x", text_sha256(TEXT_A), 100, 200)
    with pytest.raises(ConfigError, match="x was calibrated on tokens"):
        check_disjoint(prov, "x", text_sha256(TEXT_A), 99, 200)
    with pytest.raises(ConfigError):  # a use whose text is unknown: checked by range alone
        check_disjoint(prov, "x", None, 50, 60)


def test_replay_finds_the_calibration_of_its_traces_text(tmp_path):
    """A trace records its text's hash and offset (the tracer does); replay then finds that text's
    calibration, and refuses it on the tokens it was calibrated on."""
    from simcore.engine.replay import replay
    from simcore.trace.synth import synth_trace

    trace = synth_trace("smollm2-135m", 8, tmp_path / "t")
    meta = json.loads((trace / "trace.json").read_text())
    meta["extra"].update(text_sha256=text_sha256(TEXT_A), offset=1000)
    (trace / "trace.json").write_text(json.dumps(meta))
    path = save("smollm2-135m", TEXT_A, tokens=(500, 600))
    rep = replay(trace=str(trace), method="dip", density=0.5, dram="80MB")
    assert rep.config["selection"]["rho_in"] == 0.45
    assert rep.config["selection"]["split"] == f"calibrated ({path})"
    save("smollm2-135m", TEXT_A, tokens=(1004, 1100))  # trace tokens 4.. are text tokens 1004..
    with pytest.raises(ConfigError, match=r"overlap the tokens used here \[1000, 1008\)"):
        replay(trace=str(trace), method="dip", density=0.5, dram="80MB")
    assert replay(trace=str(trace), method="dip", density=0.5, dram="80MB", tokens=4).config["selection"]["rho_in"]
    with pytest.raises(ConfigError, match="give one of them"):
        replay(trace=str(trace), method="dip", density=0.5, dram="80MB", rho_in=0.4, calibration=path)


torch = pytest.importorskip("torch")


@pytest.mark.torch
def test_eval_applies_a_calibration_to_its_text_only_and_cats_alone_checks_calib_tokens(tmp_path):
    from tiny_models import VOCAB, tiny_model

    from simcore.eval.evaluate import evaluate

    class Chars:
        def __call__(self, text):
            return {"input_ids": [ord(c) % VOCAB for c in text]}

    (tmp_path / "a.txt").write_text(TEXT_A)
    (tmp_path / "b.txt").write_text(TEXT_B)
    model = tiny_model("llama", random_norms=False)
    path = save("tiny", TEXT_A, tokens=(2000, 2100))
    kw = dict(tokenizer=Chars(), name="tiny", tokens=64, seq_len=32, dram="1MB", context=0, method="dip", density=0.5)
    on_a = evaluate(model, text=str(tmp_path / "a.txt"), calib_tokens=64, calib_offset=0, **kw)
    assert on_a.replay.config["selection"]["split"] == f"calibrated ({path})"  # dip: calib range not checked
    on_b = evaluate(model, text=str(tmp_path / "b.txt"), **kw)
    assert on_b.replay.config["selection"]["split"].startswith("default rule; no calibration for tiny")
    with pytest.raises(ConfigError, match="overlap"):
        evaluate(model, text=str(tmp_path / "a.txt"), offset=2050, **kw)
    cats = {**kw, "method": "cats", "density": 0.8}
    with pytest.raises(ConfigError, match="overlap calibration tokens"):
        evaluate(model, text=str(tmp_path / "a.txt"), calib_tokens=64, calib_offset=0, **cats)
    r = evaluate(model, text=str(tmp_path / "a.txt"), calib_tokens=64, calib_offset=100, **cats)
    assert r.text["calibration"] == {
        "model": "tiny",
        "text": f"file:{tmp_path / 'a.txt'}",
        "text_sha256": text_sha256(TEXT_A),
        "tokens": [100, 164],
    }
