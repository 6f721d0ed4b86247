"""A policy or a method of one's own is one file anywhere on disk: written in a temporary directory with
no other edit, it runs by path through replay, sweep and eval. The policy below is FIFO written from
scratch with plain @njit hooks over its own arrays (no simcore helper), so its numbers must equal the
package's fifo exactly; the method is the glu oracle written again with an option of its own: checks
that fail if the path is ignored, loaded wrongly or driven differently."""

from __future__ import annotations

import json
import textwrap

import pyarrow.parquet as pq
import pytest

from simcore.cli import main
from simcore.engine.replay import replay
from simcore.trace.synth import synth_trace

MY_FIFO = textwrap.dedent(
    '''
    """my_fifo: evict the unit that entered first (a ring of unit ids)."""
    import numpy as np
    from numba import njit


    def init(n_units, capacity):
        # ring[i]: units in order of entry; pos[0]: index of the oldest, pos[1]: units in the ring
        return (np.zeros(max(capacity, 1), np.int64), np.zeros(2, np.int64))


    @njit
    def hit(s, u, t):
        pass


    @njit
    def evict(s, t, pinned):
        ring, pos = s
        n = ring.shape[0]
        for j in range(pos[1]):  # the oldest unit the current token does not use
            i = (pos[0] + j) % n
            v = ring[i]
            if not pinned[v]:
                for m in range(j, 0, -1):  # close the gap: the older units move up by one
                    ring[(pos[0] + m) % n] = ring[(pos[0] + m - 1) % n]
                pos[0] = (pos[0] + 1) % n
                pos[1] -= 1
                return v
        return -1


    @njit
    def insert(s, u, t, pinned):
        ring, pos = s
        ring[(pos[0] + pos[1]) % ring.shape[0]] = u
        pos[1] += 1
    '''
)


MY_METHOD = textwrap.dedent(
    '''
    """my_glu: W_u and W_g whole, the top-k of |h| selects W_d columns (as glu), k from the density."""
    from pydantic import Field

    from simcore.methods.base import Display, KindSpec, MethodOptions, Selection, neuron_fraction

    DISPLAY = Display(label="my-glu", color="tab:cyan", order=15)


    class Options(MethodOptions):
        scale: float = Field(default=1.0, gt=0, le=1, description="fraction of the oracle's k to keep")


    def resolve(shape, density, options):
        f = neuron_fraction("my_glu", density, dense_matrices=2) * options.scale
        kinds = (
            KindSpec("gate_up", shape.d_int, 2 * shape.d, "all"),
            KindSpec("down", shape.d_int, shape.d, "topk", score="h", mass=True),
        )
        return Selection(kinds, (1.0, f), {"neuron_fraction": f})
    '''
)


@pytest.fixture(scope="module")
def my_method(tmp_path_factory):
    path = tmp_path_factory.mktemp("mine") / "my_glu.py"
    path.write_text(MY_METHOD)
    return path


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return synth_trace("smollm2-135m", 40, tmp_path_factory.mktemp("t") / "smol", seed=5)


@pytest.fixture(scope="module")
def my_policy(tmp_path_factory):
    path = tmp_path_factory.mktemp("elsewhere") / "my_fifo.py"
    path.write_text(MY_FIFO)
    return path


@pytest.mark.parametrize("method, extra", [("dip", {}), ("dip-ca", {"gamma": 0.3}), ("cats", {})])
def test_a_policy_file_replays_as_the_policy_it_implements(trace, my_policy, method, extra):
    kw = dict(trace=str(trace), method=method, density=0.5, dram="72MB", warmup=4, threads=1, **extra)
    mine, fifo, lfu = (replay(policy=p, **kw) for p in (str(my_policy), "fifo", "lfu"))
    assert mine.totals["hits"] == fifo.totals["hits"] > 0
    assert [r["hits"] for r in mine.layers] == [r["hits"] for r in fifo.layers]
    assert mine.totals["tokens_per_s"] == fifo.totals["tokens_per_s"]
    assert mine.totals["hits"] != lfu.totals["hits"]  # the policy is really in the loop
    assert mine.config["policy"] == str(my_policy)


def test_a_policy_file_through_the_cli_and_a_sweep(trace, my_policy, tmp_path, capsys):
    assert main(["replay", "--trace", str(trace), "--policy", str(my_policy), "--dram", "72MB", "--json"]) == 0
    by_cli = json.loads(capsys.readouterr().out)
    assert by_cli["totals"]["hits"] == replay(trace=str(trace), policy="fifo", dram="72MB").totals["hits"]

    out = tmp_path / "sweep.parquet"
    args = ["sweep", "--trace", str(trace), "--policy", f"fifo,{my_policy}", "--dram", "64MB,80MB"]
    assert main([*args, "--method", "dip,dip-ca", "--gamma", "0.3", "--out", str(out), "--workers", "1"]) == 0
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    hits = {(r["policy"] == "fifo", r["method"], r["dram_bytes"]): r["hit_rate"] for r in rows}
    for (is_fifo, method, dram), rate in hits.items():
        assert rate == hits[(not is_fifo, method, dram)]


def test_a_policy_file_and_a_method_file_in_the_evaluation_loop(my_policy, my_method):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import tiny_model

    from simcore.eval.evaluate import evaluate

    model = tiny_model("llama", random_norms=False)

    def chars(text):
        return {"input_ids": [ord(c) % 300 for c in text]}

    kw = dict(tokenizer=chars, tokens=96, seq_len=32, calib_tokens=64, calib_offset=200, context=0, warmup=8)
    kw.update(method="dip-ca", gamma=0.3, density=0.5, dram="40KB")
    mine, fifo = evaluate(model, policy=str(my_policy), **kw), evaluate(model, policy="fifo", **kw)
    assert mine.perplexity == fifo.perplexity
    assert mine.replay.totals["hits"] == fifo.replay.totals["hits"] > 0

    kw.update(method=str(my_method), density=0.8, policy="lfu")
    del kw["gamma"]
    mine, glu = evaluate(model, **kw), evaluate(model, **{**kw, "method": "glu"})
    assert mine.perplexity == glu.perplexity != evaluate(model, **{**kw, "method": "dense", "density": 1.0}).perplexity


def test_a_method_file_replays_as_the_method_it_implements(trace, my_method, tmp_path, capsys):
    kw = dict(trace=str(trace), density=0.8, dram="72MB", warmup=4, threads=1, policy="lfu")
    mine, glu = replay(method=str(my_method), **kw), replay(method="glu", **kw)
    assert mine.totals["hits"] == glu.totals["hits"] > 0
    assert mine.totals["mass_kept"] == glu.totals["mass_kept"] < 1
    assert mine.config["method"] == str(my_method)

    assert (
        main(["replay", "--trace", str(trace), "--method", str(my_method), "--dram", "72MB", "--density", "0.8"]) == 0
    )
    assert "my-glu rho=0.80" in capsys.readouterr().out  # the method's own label in the setting line
    assert main(["replay", "--trace", str(trace), "--method", str(my_method), "--gamma", "0.5"]) == 2
    assert "--gamma applies only to method dip-ca" in capsys.readouterr().err

    out = tmp_path / "sweep.parquet"
    args = ["sweep", "--trace", str(trace), "--method", f"glu,{my_method}", "--density", "0.8", "--dram", "72MB"]
    assert main([*args, "--gamma", "0.2", "--out", str(out), "--workers", "1"]) == 0
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 2 and rows[0]["hit_rate"] == rows[1]["hit_rate"] and {r["gamma"] for r in rows} == {1.0}


def test_a_method_file_with_a_bad_option_or_no_resolve_is_one_line(trace, tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("X = 1\n")
    assert main(["replay", "--trace", str(trace), "--method", str(broken)]) == 2
    assert "defines no resolve(shape, density, options)" in capsys.readouterr().err
    failing = tmp_path / "failing.py"
    failing.write_text("import no_such_module_here\n")
    assert main(["replay", "--trace", str(trace), "--method", str(failing)]) == 2
    err = capsys.readouterr().err
    assert "importing it failed: ModuleNotFoundError" in err and err.count("\n") == 1


BROKEN_POLICIES = {
    "init returns a list": (
        "def init(n, c):\n    return [np.zeros(n, np.int64)]\n",
        "init must return a tuple (or NamedTuple) of NumPy arrays, not a list",
    ),
    "init raises": ("def init(n, c):\n    raise ValueError('boom')\n", "failed: ValueError: boom"),
    "a hook Numba cannot type": (
        "def init(n, c):\n    return (np.zeros(n, np.int64),)\n@njit\ndef hit(s, u, t):\n    s[0][u] = 'x'\n",
        "its hooks do not compile with Numba for its state (TypingError",
    ),
}
HOOKS_OK = "@njit\ndef hit(s, u, t):\n    pass\n"
REST = "@njit\ndef evict(s, t, pinned):\n    return -1\n@njit\ndef insert(s, u, t, pinned):\n    pass\n"


@pytest.mark.parametrize("case", sorted(BROKEN_POLICIES))
def test_a_broken_policy_file_is_one_line_naming_it(trace, tmp_path, capsys, case):
    body, message = BROKEN_POLICIES[case]
    path = tmp_path / "broken_policy.py"
    hit = "" if "def hit" in body else HOOKS_OK
    path.write_text("import numpy as np\nfrom numba import njit\n" + body + hit + REST)
    assert main(["replay", "--trace", str(trace), "--dram", "72MB", "--tokens", "8", "--policy", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"policy {path}" in err and message in err, err


def test_a_method_file_that_fails_or_returns_something_else_is_one_line(trace, tmp_path, capsys):
    for body, message in [
        ("def resolve(shape, density, options):\n    return 1 / 0\n", "resolve failed: ZeroDivisionError"),
        ("def resolve(shape, density, options):\n    return (1, 2)\n", "must return a simcore.methods.base.Selection"),
    ]:
        path = tmp_path / "m.py"
        path.write_text(body)
        from simcore.plugins import _load

        _load.cache_clear()  # the same path, new content: import it again
        assert main(["replay", "--trace", str(trace), "--dram", "72MB", "--method", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
