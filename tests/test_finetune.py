"""simcore finetune (LoRA recovery) and eval --lora, on tiny random models: distillation lowers the loss,
adapters survive a save and a reload, merged and unmerged adapters compute the same, a resumed run ends
where an uninterrupted one does, the memory plan counts unmerged adapters only, bad input is one line."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from simcore.cli import main  # noqa: E402
from simcore.errors import ConfigError  # noqa: E402
from simcore.eval.evaluate import evaluate  # noqa: E402
from simcore.finetune.adapters import ADAPTER_BYTES_PER_WEIGHT, apply_lora  # noqa: E402
from simcore.finetune.train import batch_windows, finetune, kd_loss  # noqa: E402

pytestmark = pytest.mark.torch

from tiny_models import VOCAB, tiny_model  # noqa: E402

NAME = "tiny-llama"


class Chars:
    """A tokenizer with one token per character."""

    def __call__(self, text):
        return {"input_ids": [ord(c) % VOCAB for c in text]}


def _held_out():
    """Two windows of 32 tokens of the embedded text that no run here trains on (eval's [0, 64))."""
    from simcore.trace.text import embedded_text

    return torch.tensor(Chars()(embedded_text()[:64])["input_ids"]).reshape(2, 32)


IDS = _held_out()


@pytest.fixture(scope="module")
def base():
    return tiny_model("llama")


def train(model, out, **kw):
    args = dict(
        tokenizer=Chars(),
        name=NAME,
        out=out,
        rank=4,
        steps=12,
        lr=1e-2,
        seq_len=32,
        batch=2,
        calib_tokens=512,
        checkpoint_every=5,
    )
    return finetune(model, **{**args, **kw})


def run_eval(model, **kw):
    base = dict(tokenizer=Chars(), name=NAME, tokens=96, seq_len=32, dram="1MB", context=0, warmup=8)
    return evaluate(model, **{**base, **kw})


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """(the model holding the trained dip adapters in memory, their directory, the run's record)."""
    model, out = copy.deepcopy(base), tmp_path_factory.mktemp("lora") / "dip"
    record = train(model, out, method="dip", density=0.5, steps=20)
    return model, out, record


@pytest.mark.parametrize("method", ["dip", "cats"])
def test_a_few_lora_steps_lower_the_distillation_loss_under_the_masks(base, tmp_path, method):
    model = copy.deepcopy(base)
    r = train(model, tmp_path / method, method=method, density=0.6, steps=30)
    assert len(r["losses"]) == r["steps_done"] == 30
    assert r["loss_final"] == pytest.approx(np.mean(r["losses"][-10:]))
    assert r["loss_final"] < 0.85 * np.mean(r["losses"][:5])  # batches differ: compare means
    assert r["targets"] == (["down_proj", "gate_proj", "up_proj"] if method == "dip" else ["down_proj", "up_proj"])
    record = json.loads((tmp_path / method / "simcore_lora.json").read_text())
    assert record["provenance"]["tokens"] == [16384, 16384 + 512] and record["model"] == NAME
    assert (record["cats_thresholds"] is not None) == (method == "cats")
    assert not list((tmp_path / method).glob("checkpoint-*"))  # a finished run keeps no checkpoint


def test_trained_adapters_move_the_masked_model_toward_the_dense_one_on_the_training_windows(base, trained):
    from simcore import methods
    from simcore.finetune.train import Masks
    from simcore.trace.text import embedded_text
    from simcore.trace.tracer import model_shape

    _, out, record = trained
    a, b = record["provenance"]["tokens"]
    ids = torch.tensor(Chars()(embedded_text())["input_ids"][a:b]).reshape(-1, 32)  # a random model learns no more
    dense = logits(base, ids)
    sel = methods.resolve("dip", model_shape(base, NAME), 0.5)
    kl = []
    for model in (copy.deepcopy(base), apply_lora(copy.deepcopy(base), out, merge=False)[0]):
        with torch.no_grad():
            kl.append(float(kd_loss(Masks(model, sel, [0.0, 0.0]).logits(ids), dense)))
        if len(kl) == 1:
            assert torch.equal(logits(model, ids), dense)  # after a masked forward the model is dense again
    assert kl[1] < 0.9 * kl[0]


def test_saved_and_reloaded_adapters_give_the_in_memory_logits(base, trained):
    model, out, _ = trained
    reloaded, n = apply_lora(copy.deepcopy(base), out, merge=False)
    assert n > 0
    assert torch.equal(logits(reloaded), logits(model))
    assert not torch.allclose(logits(reloaded), logits(base), atol=1e-3)  # the adapters do something


def test_merged_and_unmerged_adapters_give_the_same_logits_and_perplexity(base, trained):
    _, out, _ = trained
    unmerged, n = apply_lora(copy.deepcopy(base), out, merge=False)
    merged, zero = apply_lora(copy.deepcopy(base), out, merge=True)
    assert zero == 0 and n > 0
    torch.testing.assert_close(logits(merged), logits(unmerged), rtol=1e-4, atol=1e-4)
    a = run_eval(copy.deepcopy(base), method="dip", density=0.5, lora=str(out), lora_merge=True)
    b = run_eval(copy.deepcopy(base), method="dip", density=0.5, lora=str(out), lora_merge=False)
    plain = run_eval(copy.deepcopy(base), method="dip", density=0.5)
    assert a.perplexity == pytest.approx(b.perplexity, rel=1e-4)
    assert a.perplexity != pytest.approx(plain.perplexity, rel=1e-4)
    assert a.text["lora"]["path"] == str(out) and a.text["lora"]["merged"] and not b.text["lora"]["merged"]


def test_memory_plan_counts_unmerged_adapters_and_not_merged_ones(base, trained):
    _, out, _ = trained
    plain = run_eval(copy.deepcopy(base), method="dip", density=0.5, policy="lru")
    merged = run_eval(copy.deepcopy(base), method="dip", density=0.5, policy="lru", lora=str(out))
    unmerged = run_eval(copy.deepcopy(base), method="dip", density=0.5, policy="lru", lora=str(out), lora_merge=False)
    _, n = apply_lora(copy.deepcopy(base), out, merge=False)
    adapter = n * ADAPTER_BYTES_PER_WEIGHT
    assert merged.replay.memory == plain.replay.memory
    m0, m1 = plain.replay.memory, unmerged.replay.memory
    assert m1["aux_resident"] == adapter and m0["aux_resident"] == 0
    assert m1["static_resident"] - m0["static_resident"] == pytest.approx(adapter)
    assert m1["static_read_per_token"] - m0["static_read_per_token"] == pytest.approx(adapter)
    assert m1["mlp_cache"] == pytest.approx(m0["mlp_cache"] - adapter)
    assert unmerged.text["lora"]["adapter_bytes"] == adapter and merged.text["lora"]["adapter_bytes"] == 0


@pytest.mark.parametrize("crash", [KeyboardInterrupt, RuntimeError])
def test_a_resumed_run_reaches_the_adapters_of_an_uninterrupted_one(base, tmp_path, crash):
    from safetensors.torch import load_file

    whole = train(copy.deepcopy(base), tmp_path / "whole", method="dip", density=0.5)

    def stop(step, loss):
        if step == 7:
            raise crash("stop")

    with pytest.raises(crash):
        train(copy.deepcopy(base), tmp_path / "cut", method="dip", density=0.5, callback=stop)
    kept = sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*"))
    assert kept == (["checkpoint-0000007"] if crash is KeyboardInterrupt else ["checkpoint-0000005"])
    with pytest.raises(ConfigError, match="already holds a finetune run"):
        train(copy.deepcopy(base), tmp_path / "cut", method="dip", density=0.5)
    with pytest.raises(ConfigError, match="made with lr"):
        train(copy.deepcopy(base), tmp_path / "cut", method="dip", density=0.5, lr=1e-3, resume=True)
    resumed = train(copy.deepcopy(base), tmp_path / "cut", method="dip", density=0.5, resume=True)
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5)
    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_window_order_is_a_function_of_seed_and_step():
    first = np.concatenate([batch_windows(s, 10, 3, seed=4) for s in range(10)])
    assert np.array_equal(first, np.concatenate([batch_windows(s, 10, 3, seed=4) for s in range(10)]))
    assert sorted(first[:10]) == list(range(10))  # each epoch visits every window once
    assert not np.array_equal(first, np.concatenate([batch_windows(s, 10, 3, seed=5) for s in range(10)]))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"steps": 0}, "--steps must be an integer >= 1"),
        ({"rank": 0}, "--rank must be an integer >= 1"),
        ({"method": "glu"}, "LoRA recovery is for dip or cats"),
        ({"lr": -1.0}, "--lr must be a positive number"),
        ({"torch_device": "tpu"}, "use cpu or cuda"),
    ],
)
def test_bad_finetune_settings_are_one_line_errors(base, tmp_path, kw, match):
    args = {"method": "dip", "density": 0.5, **kw}
    with pytest.raises(ConfigError, match=match) as e:
        train(base, tmp_path / "x", **args)
    assert "\n" not in str(e.value)


def test_eval_refuses_foreign_missing_or_overlapping_adapters(base, trained, tmp_path):
    _, out, record = trained
    with pytest.raises(ConfigError, match="does not exist"):
        run_eval(base, method="dip", lora=str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no simcore adapters"):
        run_eval(base, method="dip", lora=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="holds dip adapters"):
        run_eval(base, method="cats", density=0.6, lora=str(out))
    with pytest.raises(ConfigError, match="trained for model 'tiny-llama', not 'other'"):
        run_eval(base, method="dip", name="other", lora=str(out))
    with pytest.raises(ConfigError, match="overlap the tokens used here"):
        run_eval(base, method="dip", lora=str(out), offset=16384)
    with pytest.raises(ConfigError, match="do not combine"):
        run_eval(base, method="dip", lora=str(out), pruned=str(tmp_path))
    r = run_eval(copy.deepcopy(base), method="dip-ca", density=0.6, gamma=0.5, lora=str(out))  # dip's family
    assert any("trained at density 0.5, evaluated here at 0.6" in w for w in r.replay.warnings)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    for args in (
        ["finetune", "--method", "dip", "--density", "0.5", "--steps", "0", "--out", str(tmp_path / "o")],
        ["finetune", "--method", "dip", "--density", "0.5", "--rank", "0", "--out", str(tmp_path / "o")],
        ["finetune", "--method", "up", "--density", "0.5", "--out", str(tmp_path / "o")],
        ["eval", "--method", "dip", "--lora", str(tmp_path / "missing")],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("simcore: error:") and "\n" not in err, err


# ---- simcore trace --lora: replaying the fine-tuned model --------------------------------------------


def lora_trace(base, out, lora, merge=True, **kw):
    from simcore.trace.tracer import trace_model

    model = copy.deepcopy(base)
    model.config.name_or_path = NAME  # the name the adapters were trained for
    args = dict(tokenizer=Chars(), tokens=96, seq_len=32, out=out, progress=False, lora=lora, lora_merge=merge)
    return trace_model(model=model, **{**args, **kw})


def test_a_trace_with_adapters_replays_the_fine_tuned_model_under_its_method_only(base, trained, tmp_path):
    from simcore.engine.replay import replay
    from simcore.report_text import replay_table
    from simcore.trace.format import TraceReader
    from simcore.trace.tracer import trace_model

    _, out, _ = trained
    plain_model = copy.deepcopy(base)
    plain_model.config.name_or_path = NAME
    plain = trace_model(model=plain_model, tokenizer=Chars(), tokens=96, seq_len=32, out=tmp_path / "p", progress=False)
    merged = lora_trace(base, tmp_path / "m", str(out))
    unmerged = lora_trace(base, tmp_path / "u", str(out), merge=False)
    info = TraceReader(merged).meta.extra["lora"]
    assert info["merged"] and info["method"] == "dip" and info["adapter_bytes"] == 0 and info["path"] == str(out)
    a = next(TraceReader(plain).iter_layer(1, ("h",), batch_tokens=96))["h"]
    b = next(TraceReader(merged).iter_layer(1, ("h",), batch_tokens=96))["h"]
    c = next(TraceReader(unmerged).iter_layer(1, ("h",), batch_tokens=96))["h"]
    assert not np.array_equal(a, b)  # the adapters change the activations the masks are taken from
    np.testing.assert_allclose(b.astype(np.float32), c.astype(np.float32), rtol=2e-2, atol=2e-3)

    kw = dict(method="dip", density=0.5, dram="1MB", context=0, warmup=8, policy="lru")
    r0, r1, r2 = (replay(trace=str(t), **kw) for t in (plain, merged, unmerged))
    assert r1.memory == r0.memory and r1.config["lora"] == info and r0.config["lora"] is None
    n = TraceReader(unmerged).meta.extra["lora"]["adapter_weights"]
    assert n > 0 and r2.memory["aux_resident"] == n * ADAPTER_BYTES_PER_WEIGHT
    assert r2.memory["mlp_cache"] == pytest.approx(r0.memory["mlp_cache"] - n * ADAPTER_BYTES_PER_WEIGHT)
    assert "adapter  LoRA" in replay_table(r1) and "merged into the weights" in replay_table(r1)
    assert "resident in DRAM (fp16)" in replay_table(r2) and "\nadapter  " not in replay_table(r0)
    r3 = replay(trace=str(merged), **{**kw, "method": "dip-ca", "gamma": 0.5, "density": 0.6})  # dip's family
    assert any("trained at density 0.5, replayed here at 0.6" in w for w in r3.warnings)
    for method in ("cats", "dense", "gate"):
        with pytest.raises(ConfigError, match="dip LoRA adapters") as e:
            replay(trace=str(merged), **{**kw, "method": method, "density": 0.6 if method != "dense" else 1.0})
        assert "\n" not in str(e.value)


def test_trace_refuses_adapters_of_another_model_or_trained_on_the_traced_tokens(base, trained, tmp_path):
    _, out, record = trained
    a = record["provenance"]["tokens"][0]
    with pytest.raises(ConfigError, match="overlap the tokens used here"):
        lora_trace(base, tmp_path / "o", str(out), offset=a - 10)
    model = copy.deepcopy(base)
    model.config.name_or_path = "other"
    from simcore.trace.tracer import trace_model

    with pytest.raises(ConfigError, match="trained for model 'tiny-llama', not 'other'"):
        trace_model(
            model=model, tokenizer=Chars(), tokens=96, seq_len=32, out=tmp_path / "x", progress=False, lora=str(out)
        )
    with pytest.raises(ConfigError, match="no simcore adapters"):
        (tmp_path / "empty").mkdir()
        lora_trace(base, tmp_path / "e", str(tmp_path / "empty"))
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()


def test_a_sweep_over_a_trace_with_adapters_names_them_and_the_report_labels_them(base, trained, tmp_path):
    from simcore.report.data import row_label
    from simcore.sweep.grid import Grid
    from simcore.sweep.run import run_sweep

    _, out, _ = trained
    t = lora_trace(base, tmp_path / "u", str(out), merge=False)
    grid = Grid(
        {"dram": ["1MB", "2MB"], "density": [0.5]}, {"trace": str(t), "method": "dip", "context": 0, "warmup": 8}
    )
    rows = run_sweep(grid, tmp_path / "r.parquet", workers=1).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {r["adapter"] for r in rows} == {"lora-dip-0.5-r4-20-unmerged"}
    assert row_label(rows[0]) == "dip + LoRA"
    from simcore.report.data import load_results
    from simcore.report.summary import grid_section

    grid = "\n".join(grid_section(load_results(tmp_path / "r.parquet")))
    assert "| adapter | 1 | lora-dip-0.5-r4-20-unmerged |" in grid


def test_with_a_tokenizer_that_adds_bos_each_training_window_is_fed_after_it_unmasked_and_unscored(base, tmp_path):
    """As eval feeds windows (Gemma): BOS before every window, through the dense MLP, out of the loss."""
    from simcore.finetune import train as T

    class BosChars(Chars):
        bos_token_id = 1

        def __call__(self, text):
            return {"input_ids": [1, *super().__call__(text)["input_ids"]]}

    seen = []
    real = T.LoraTrainer.step

    def spy(self, ids, step):
        seen.append((tuple(ids.shape), self.prefix, int(ids[0, 0])))
        return real(self, ids, step)

    T.LoraTrainer.step = spy
    try:
        r = train(copy.deepcopy(base), tmp_path / "b", method="dip", density=0.5, steps=2, tokenizer=BosChars())
    finally:
        T.LoraTrainer.step = real
    assert r["bos_per_window"] and seen[0] == ((2, 33), 1, 1)
    plain = train(copy.deepcopy(base), tmp_path / "p", method="dip", density=0.5, steps=2)
    assert not plain["bos_per_window"]
    trainer = T.LoraTrainer(copy.deepcopy(base), "dip", methods_resolve(base), [0.0, 0.0], rank=4, prefix=1)
    ids = torch.tensor([[1, *range(40, 72)]])
    assert trainer.logits(ids).shape[1] == 32 and trainer.teacher(ids).shape[1] == 32


def methods_resolve(model):
    from simcore import methods
    from simcore.trace.tracer import model_shape

    return methods.resolve("dip", model_shape(model, NAME), 0.5)
