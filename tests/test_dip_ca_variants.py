"""dip-ca's variants as Federici et al. define them (arXiv 2412.01380; their published
``cache_aware_reweighting_current_cache`` and ``cache_aware_reweighting_approximate``).

Each variant, run through ``KindSim`` with a cache in the loop, equals a straightforward NumPy/Python
reference of the authors' definition, token by token (masks and hits), on random scores with many ties
and the cache states they lead to. Ties go to the lower unit index (torch.topk leaves them open); the
re-weighting and blending are float32 arithmetic, as in the engine. Combinations simcore does not
implement are refused with one line from ``simcore replay``.
"""

from __future__ import annotations

import zlib
from functools import partial

import naive
import naive_policies as NP
import numpy as np
import pytest

from simcore import methods
from simcore.cli import main
from simcore.engine import kernels as K
from simcore.engine.sim import KindSim
from simcore.errors import ConfigError
from simcore.trace.synth import synth_trace

# --- references of the authors' definitions ------------------------------------------------------------


def authors_gamma(gamma: float, t: int, seq_len: int) -> float:
    """Their warm-up: gamma_t = 1 - (1 - gamma)(1 - gamma^(t/4)), t the token's index in its sequence."""
    p = t % seq_len if seq_len else t
    return 1 - (1 - gamma) * (1 - gamma ** (p / 4))


def linear_gamma(gamma: float, t: int, warmup: int) -> float:
    return 1.0 - (1.0 - gamma) * (t / warmup) if warmup and t < warmup else gamma


def best(score, units, r):
    """The r units of ``units`` with the largest ``score`` (ties: lower index first), as a list."""
    return sorted(units, key=lambda u: (-score[u], u))[: max(r, 0)]


def current_cache(v, cache, gamma_t, fixed_n, k):
    """cache_aware_reweighting_current_cache, then the top-k: weight gamma_t for units neither cached
    nor among the fixed_n largest raw values, 1 for the others; float32 products."""
    n = len(v)
    fixed = set(best(v, range(n), fixed_n))
    g = np.float32(gamma_t)
    score = [float(v[u]) if (u in cache or u in fixed) else float(np.float32(v[u]) * g) for u in range(n)]
    return set(best(score, range(n), k))


def blended(v, counts, w):
    """w * stats / (max(stats) + 1e-7) + (1 - w) * score, the score being value / max(value) (dip-ca's
    score), all in float32."""
    stats = np.asarray(counts, np.float32)
    stats = stats / (stats.max() + np.float32(1e-7))
    vv = np.asarray(v, np.float32)
    s = vv / vv.max() if vv.max() > 0 else np.zeros_like(vv)
    return np.float32(w) * stats + np.float32(1 - w) * s


def approximate(v, cache, k, m, fixed_n, w, counts):
    """cache_aware_reweighting_approximate, step by step: the fixed top-n (raw values), then the best
    of top-k & cached, then of top-m & cached, then of top-k & not cached, until k units; top-k,
    top-m and the order within a group by the (optionally blended) score."""
    n = len(v)
    if fixed_n >= k:  # the authors assert fixed_top_n < top_k; simcore takes the plain top-k then
        return set(best(v, range(n), k))
    mask = set(best(v, range(n), fixed_n))
    b = [float(x) for x in (blended(v, counts, w) if w > 0 else v)]
    top_k, top_m = set(best(b, range(n), k)), set(best(b, range(n), m))
    for group in (top_k & cache, top_m & cache, top_k - cache):
        mask |= set(best(b, [u for u in group if u not in mask], k - len(mask)))
    assert len(mask) == k
    return mask


def current_cache_at(t, v, cache, counts, *, gamma, seq_len, fixed_n, k):
    """A token's current_cache selection under the authors' warm-up (counts unused)."""
    return current_cache(v, cache, authors_gamma(gamma, t, seq_len), fixed_n, k)


def approximate_at(t, v, cache, counts, *, k, m, fixed_n, w):
    """A token's approximate selection, the cache statistics being the use counts before it."""
    return approximate(v, cache, k, m, fixed_n, w, counts)


def replay_reference(scores, cap, policy, select):
    """Per-token (masks, hits) with the cache in the loop; ``select(t, values, cache, counts)`` is a
    token's selection (counts: uses before token t). Score-family updates as tests/naive.py, hook-family
    ones as tests/naive_policies.py (``simcore.engine.hooks``'s order)."""
    T, U = scores.shape
    cache: set[int] = set()
    count = np.zeros(U, np.int64)
    last: dict[int, int] = {}
    model = NP.MODELS[policy](cap) if policy in NP.MODELS else None
    masks, hits = [], []
    for t in range(T):
        S = select(t, [float(x) for x in scores[t]], cache, count.copy())
        masks.append(S)
        hits.append(len(S & cache))
        for u in S:
            count[u] += 1
            last[u] = t
        if cap == 0 or policy == "none":
            continue
        if model is not None:
            units = sorted(S)
            for u in units:
                if u in cache:
                    model.hit(u)
            missed = [u for u in units if u not in cache]
            for u in missed[max(0, len(units) - cap) :]:
                model.miss(u)
                while len(cache) >= cap:
                    cache.remove(model.evict(S))
                cache.add(u)
                d = model.insert(u, S)
                if d is not None:
                    cache.remove(d)
            continue

        def key(u):
            return (naive.priority(policy, int(count[u]), last.get(u, -1), 0), u)

        if len(S) >= cap:
            cache = set(sorted(S, key=key)[len(S) - cap :])
        else:
            evict = len(cache) + len(S - cache) - cap
            if evict > 0:
                cache -= set(sorted(cache - S, key=key)[:evict])
            cache |= S
    return masks, hits


def run_kindsim(scores, rng, **kw):
    """Masks and hits of a KindSim fed ``scores`` in random batches (so warm-ups cross batch edges)."""
    T, U = scores.shape
    sim = KindSim(U, T, K.MODE_TOPK, aware=True, **kw)
    masks = np.zeros((T, U), np.bool_)
    f16 = scores.astype(np.float16)
    t0 = 0
    while t0 < T:
        nb = int(rng.integers(1, 9))
        sim.feed(f16[t0 : t0 + nb], None, t0, masks=masks[t0 : t0 + nb])
        t0 += nb
    _, hits, _, _ = sim.finish()
    return [set(np.flatnonzero(m).tolist()) for m in masks], hits.tolist()


def random_scores(rng, T, U):
    """float16-exact magnitudes, often from a few levels (ties), sometimes with zero rows."""
    levels = int(rng.choice([0, 3, 6]))
    v = rng.integers(0, levels, (T, U)) / levels if levels else rng.random((T, U)) ** 3
    if rng.random() < 0.2:
        v[rng.integers(0, T)] = 0.0
    return v.astype(np.float16).astype(np.float32)


# --- the variants against the references ------------------------------------------------------------------


def test_gamma_at_is_the_authors_warm_up_per_sequence_and_the_linear_ramp_is_unchanged():
    for gamma in (0.05, 0.2, 0.5, 1.0):
        for t in range(70):
            for seq_len in (0, 1, 7, 32):
                got = K.select.gamma_at(gamma, K.select.SCHEDULE_AUTHORS, 0, seq_len, t)
                assert got == authors_gamma(gamma, t, seq_len)
            assert K.select.gamma_at(gamma, K.select.SCHEDULE_LINEAR, 10, 7, t) == linear_gamma(gamma, t, 10)
        assert K.select.gamma_at(gamma, K.select.SCHEDULE_AUTHORS, 0, 16, 32) == 1.0  # a new sequence starts at 1


@pytest.mark.parametrize("policy", ["lru", "lfu", "fifo"])
def test_fixed_top_n_and_the_authors_warm_up_equal_current_cache_reweighting(policy):
    rng = np.random.default_rng(zlib.crc32(policy.encode()))
    for _ in range(60):
        T, U = int(rng.integers(5, 50)), int(rng.integers(2, 40))
        k, cap = int(rng.integers(1, U)), int(rng.integers(0, U + 2))
        gamma = float(rng.choice([0.05, 0.2, 0.5]))
        fixed_n = int(rng.choice([0, int(rng.integers(1, U + 1))]))
        seq_len = int(rng.choice([0, int(rng.integers(1, 20))]))
        scores = random_scores(rng, T, U)
        select = partial(current_cache_at, gamma=gamma, seq_len=seq_len, fixed_n=fixed_n, k=k)
        want = replay_reference(scores, cap, policy, select)
        kw = dict(gamma=gamma, fixed_top_n=fixed_n, gamma_schedule="authors", seq_len=seq_len)
        got = run_kindsim(scores, rng, k=k, cap=cap, policy=policy, **kw)
        assert got == want, dict(T=T, U=U, k=k, cap=cap, gamma=gamma, fixed_n=fixed_n, seq_len=seq_len)


@pytest.mark.parametrize("policy", ["lru", "lfu", "none"])
def test_approximate_selection_with_fixed_top_n_and_cache_statistics_equals_the_authors(policy):
    rng = np.random.default_rng(zlib.crc32(b"approx " + policy.encode()))
    for _ in range(80):
        T, U = int(rng.integers(5, 45)), int(rng.integers(3, 40))
        k, cap = int(rng.integers(1, U - 1)), int(rng.integers(0, U + 2))
        m = int(rng.integers(k + 1, U + 1))
        fixed_n = int(rng.choice([0, int(rng.integers(1, k)) if k > 1 else 0, int(rng.integers(k, U + 1))]))
        w = float(rng.choice([0.0, 0.25, 0.5, 0.9, 1.0]))
        scores = random_scores(rng, T, U)
        want = replay_reference(scores, cap, policy, partial(approximate_at, k=k, m=m, fixed_n=fixed_n, w=w))
        got = run_kindsim(scores, rng, k=k, cap=cap, policy=policy, fixed_top_n=fixed_n, approx_m=m, approx_gamma=w)
        assert got == want, dict(T=T, U=U, k=k, m=m, cap=cap, fixed_n=fixed_n, w=w)


def test_approximate_selection_with_fixed_top_n_under_a_hook_policy():
    rng = np.random.default_rng(5)
    for _ in range(40):
        T, U = int(rng.integers(5, 40)), int(rng.integers(3, 30))
        k, cap = int(rng.integers(1, U - 1)), int(rng.integers(0, U + 2))
        m, fixed_n = int(rng.integers(k + 1, U + 1)), int(rng.integers(0, k + 2))
        scores = random_scores(rng, T, U)
        want = replay_reference(scores, cap, "clock", partial(approximate_at, k=k, m=m, fixed_n=fixed_n, w=0.0))
        assert run_kindsim(scores, rng, k=k, cap=cap, policy="clock", fixed_top_n=fixed_n, approx_m=m) == want


def test_the_authors_warm_up_restarts_with_every_sequence_of_a_trace():
    """gamma_t restarts at 1 with every sequence of seq_len tokens (the run's windows, from token 0)."""
    rng = np.random.default_rng(3)
    scores = random_scores(rng, 48, 20)
    one = run_kindsim(scores, rng, k=6, cap=8, policy="lfu", gamma=0.1, gamma_schedule="authors", seq_len=16)
    whole = run_kindsim(scores, rng, k=6, cap=8, policy="lfu", gamma=0.1, gamma_schedule="authors", seq_len=0)
    assert one[0][:16] == whole[0][:16]  # the first sequence is the same
    want = replay_reference(scores, 8, "lfu", partial(current_cache_at, gamma=0.1, seq_len=16, fixed_n=0, k=6))
    assert one == want


# --- settings: what combines, what is refused, what the setting line says ---------------------------------


def test_kindsim_refuses_what_it_cannot_do_in_one_line():
    cases = [
        (dict(policy="fifo", approx_m=8, approx_gamma=0.5), "only score-family policies"),
        (dict(policy="lfu", approx_gamma=0.5), "it needs approx_m"),
        (dict(policy="lfu", approx_m=8, approx_gamma=1.5), "approx_gamma must be in [0, 1]"),
        (dict(policy="lfu", gamma=0.2, gamma_schedule="authors", gamma_warmup=5), "has no length"),
        (dict(policy="lfu", gamma=0.2, gamma_schedule="cosine"), "choose one of linear, authors"),
    ]
    for kw, message in cases:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
            KindSim(20, 4, K.MODE_TOPK, k=4, cap=8, aware=True, **kw)
        assert "\n" not in str(e.value)


def test_for_kind_needs_the_sequence_length_for_the_authors_warm_up():
    from simcore.models import preset

    sel = methods.resolve("dip-ca", preset("smollm2-135m"), 0.5, {"gamma_schedule": "authors"})
    kind = sel.kinds[0]
    assert kind.reweight.gamma_schedule == "authors"
    with pytest.raises(ConfigError, match="no sequence length"):
        KindSim.for_kind(kind, 100, sel.fractions[0], 8, "lfu")
    assert KindSim.for_kind(kind, 100, sel.fractions[0], 8, "lfu", seq_len=4).spec.seq_len == 4


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    return synth_trace("smollm2-135m", 40, tmp_path_factory.mktemp("ca") / "t", seed=1, seq_len=16)


def _replay(trace, *extra):
    settings = ["--dram", "40MB", "--context", "0", "--warmup", "4", "--method", "dip-ca"]
    return main(["replay", "--trace", str(trace), *settings, *extra])


def test_replay_gives_the_trace_sequence_length_to_the_warm_up(small_trace, monkeypatch):
    from simcore.engine import replay

    seen = []
    for_kind = KindSim.for_kind.__func__

    def spy(cls, *args, **kw):
        seen.append(kw.get("seq_len"))
        return for_kind(cls, *args, **kw)

    monkeypatch.setattr(KindSim, "for_kind", classmethod(spy))
    replay.replay(trace=str(small_trace), dram="40MB", context=0, method="dip-ca", gamma_schedule="authors")
    assert seen and set(seen) == {16}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--approx-m", "2", "--gamma", "0.5"], "--gamma would be ignored"),
        (["--approx-m", "2", "--gamma-warmup", "5"], "which --approx-m does not use"),
        (["--approx-m", "2", "--gamma-schedule", "authors"], "which --approx-m does not use"),
        (["--approx-gamma", "0.3"], "it needs --approx-m above 1"),
        (["--gamma-schedule", "authors", "--gamma-warmup", "5"], "drop one of them"),
        (["--gamma-schedule", "cosine"], "--gamma-schedule: Input should be 'linear' or 'authors'"),
        (["--approx-m", "2", "--approx-gamma", "1.5"], "--approx-gamma: Input should be less than or equal to 1"),
        (["--approx-m", "2", "--approx-gamma", "0.3", "--policy", "fifo"], "policy fifo does not"),
        (["--approx-m", "2", "--policy", "belady"], "belady needs masks that do not depend on the cache"),
    ],
)
def test_replay_refuses_combinations_that_would_ignore_an_option_in_one_line(small_trace, capsys, extra, message):
    assert _replay(small_trace, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("simcore: error: ")


@pytest.mark.parametrize(
    "extra, shown",
    [
        (["--approx-m", "2", "--fixed-top-n", "5"], ["approx_m=2", "fixed_top_n=5"]),
        (["--approx-m", "1.5", "--approx-gamma", "0.3", "--fixed-top-n", "2"], ["approx_m=1.5", "approx_gamma=0.3"]),
        (
            ["--gamma", "0.1", "--gamma-schedule", "authors", "--fixed-top-n", "3"],
            ["gamma=0.1", "gamma_schedule=authors"],
        ),
        (["--gamma", "0.1", "--gamma-warmup", "8"], ["gamma=0.1", "gamma_warmup=8 (linear)"]),
    ],
)
def test_replay_runs_each_combination_the_authors_define_and_names_it(small_trace, capsys, extra, shown):
    assert _replay(small_trace, *extra) == 0
    setting = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("setting"))
    assert all(s in setting for s in shown), setting


def test_the_setting_line_names_every_variant_in_effect():
    base = {"method": "dip-ca", "density": 0.5, "selection": {"rho_in": 0.4, "rho_d": 0.7, "split": "given"}}
    text = methods.describe({**base, "gamma": 1.0, "approx_m": 2.0, "approx_gamma": 0.25, "fixed_top_n": 3})
    assert "approx_m=2" in text and "approx_gamma=0.25" in text and "fixed_top_n=3" in text and " gamma=" not in text
    text = methods.describe({**base, "gamma": 0.2, "gamma_schedule": "authors", "approx_m": 0.0})
    assert "gamma=0.2" in text and "gamma_schedule=authors" in text and "approx" not in text
    assert "gamma_schedule" not in methods.describe({**base, "gamma": 0.2, "gamma_schedule": "linear"})
