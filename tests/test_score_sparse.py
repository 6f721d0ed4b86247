"""The sparse path of ``kernels.replay_masks_at`` (runs of tokens of few units, against a recency list or a
heap of the cached units) against the dense path (``kernels.cache_step``, token by token), and its
one-unit-per-token replay against libCacheSim."""

from __future__ import annotations

import numpy as np
import pytest

from simcore import policies
from simcore.engine import kernels as K
from simcore.engine import sim
from simcore.engine.hooks import NO_READS
from simcore.engine.kernels import score

POLICIES = ["lru", "lfu", "belady"]


def _fresh(U):
    """A cold cache's state: in_cache, count, last, next_use, state."""
    return [
        np.zeros(U, np.bool_),
        np.zeros(U, np.int32),
        np.zeros(U, np.int32),
        np.full(U, K.NEVER, np.int32),
        np.zeros(K.STATE_SIZE, np.int64),
    ]


def _dense(idx, ptr, nxt, t0, cap, st, pw):
    """Hits per token of ``cache_step`` called token by token (the dense path only), as replay_masks_at
    did before the sparse path; updates the state ``st`` in place."""
    U, T = st[0].shape[0], len(ptr) - 1
    used = np.zeros(U, np.bool_)
    ckeys, cmark, cand = np.empty(U, pw.dtype), np.zeros(U, np.bool_), np.empty(U, np.int32)
    hist, sbuf = np.empty(K.HIST_SIZE, np.int32), np.empty(U, np.int16)
    hits = np.zeros(T, np.int32)
    for t in range(T):
        it = idx[ptr[t] : ptr[t + 1]]
        used[it] = True
        st[3][it] = nxt[ptr[t] : ptr[t + 1]]
        hits[t] = K.cache_step(used, len(it), t0 + t, cap, *st, pw, ckeys, cmark, cand, hist, sbuf)
        used[it] = False
    return hits


def _stream(rng, U, T):
    """CSR (idx, ptr) of T tokens in runs of one kind: one unit, a few units, or many (up to all U), so
    that the replay switches between the paths; units drawn from a skewed popularity (many repeats, so
    many ties of count and last use)."""
    pop = rng.pareto(1.0, U) + 0.05
    pop /= pop.sum()
    toks, kind = [], 0
    for _ in range(T):
        if rng.random() < 0.04:
            kind = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
        m = [1, int(rng.integers(0, 6)), int(rng.integers(1, U + 1))][kind]
        units = rng.choice(U, m, replace=False, p=pop) if rng.random() < 0.8 else rng.choice(U, m, replace=False)
        toks.append(np.sort(units).astype(np.int32))
    ptr = np.zeros(T + 1, np.int64)
    ptr[1:] = np.cumsum([len(x) for x in toks])
    return np.concatenate(toks).astype(np.int32), ptr


def _longest_sparse_run(ptr, cap, U, factor):
    m = np.diff(ptr)
    best = run = 0
    for x in (m < cap) & (m * factor <= U):
        run = run + 1 if x else 0
        best = max(best, run)
    return best


def _weights(name, T, wide):
    if name in POLICIES:
        w = policies.load(name).weights(T)
    else:  # other linear priorities: the heap takes any weights
        w = {"mru": (0, -1, 0), "flat": (0, 0, 0), "mixed": (2, -1, 1)}[name]
    pw = K.priority_weights(w, T)
    return np.array([*pw[:3], 2**62], np.int64) if wide else pw


def _next_uses(idx, ptr, U, name):
    if name == "belady" or name == "mixed":
        return K.next_use_times(idx, ptr, U)
    return np.zeros(len(idx), np.int32)  # as ScoreCache.replay gives a policy without the future


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("name", POLICIES + ["mru", "flat", "mixed"])
def test_sparse_path_equals_cache_step_token_by_token(name, seed):
    rng = np.random.default_rng([seed, len(name)])
    U = int(rng.choice([32, 40, 64, 130, 300]))
    T = int(rng.integers(200, 700))
    idx, ptr = _stream(rng, U, T)
    nxt = _next_uses(idx, ptr, U, name)
    pw = _weights(name, T, wide=bool(rng.random() < 0.3))
    lru = pw[0] == 0 and pw[2] == 0 and pw[1] > 0
    factor = score.SPARSE_FACTOR_LRU if lru else score.SPARSE_FACTOR_HEAP
    for cap in sorted({1, 2, 3, 5, U // 4, U // 2, U - 1, U, U + 3}):
        if cap >= 2 and U >= factor:  # the stream has runs long enough for the sparse path
            assert _longest_sparse_run(ptr, cap, U, factor) >= score.SPARSE_RUN
        ref, got = _fresh(U), _fresh(U)
        want = _dense(idx, ptr, nxt, 0, cap, ref, pw)
        hits = np.zeros(T, np.int32)
        K.replay_masks_at(idx, ptr, nxt, 0, cap, *got, pw, hits, *NO_READS)
        bad = np.flatnonzero(hits != want)
        assert bad.size == 0, f"cap {cap}: first differing token {bad[:1]}"
        for a, b, what in zip(ref[:4], got[:4], ["in_cache", "count", "last", "next_use"]):
            np.testing.assert_array_equal(a, b, err_msg=f"{what}, cap {cap}")
        assert ref[4][0] == got[4][0] == ref[0].sum(), f"occupancy, cap {cap}"


@pytest.mark.parametrize("name", POLICIES)
def test_sparse_path_carries_its_state_across_chunks(name):
    """Replayed chunk by chunk (the mask store's way; chunk edges cut sparse runs), the hits and state
    are those of the dense path over the whole trace."""
    rng = np.random.default_rng(5)
    U, T = 200, 1500
    idx, ptr = _stream(rng, U, T)
    nxt = _next_uses(idx, ptr, U, name)
    pw = _weights(name, T, wide=False)
    for cap in (2, 7, 50, 150):
        ref = _fresh(U)
        want = _dense(idx, ptr, nxt, 0, cap, ref, pw)
        got, hits = _fresh(U), np.zeros(T, np.int32)
        edges = np.unique(np.r_[0, np.sort(rng.choice(np.arange(1, T), 12, replace=False)), T])
        for t0, t1 in zip(edges[:-1], edges[1:]):
            a0, a1 = ptr[t0], ptr[t1]
            K.replay_masks_at(idx[a0:a1], ptr[t0 : t1 + 1] - a0, nxt[a0:a1], t0, cap, *got, pw, hits[t0:t1], *NO_READS)
        np.testing.assert_array_equal(hits, want)
        for a, b in zip(ref[:4], got[:4]):
            np.testing.assert_array_equal(a, b)
        assert ref[4][0] == got[4][0]


@pytest.mark.parametrize("name", POLICIES)
def test_one_unit_tokens_with_all_ties(name):
    """Every unit used once, in index order, then again in reverse: all counts equal, and for belady
    every unit used again: the victims are decided by the ties alone."""
    U = 64
    stream = np.r_[np.arange(U), np.arange(U)[::-1], np.arange(0, U, 3)].astype(np.int32)
    ptr = np.arange(len(stream) + 1, dtype=np.int64)
    nxt = _next_uses(stream, ptr, U, name)
    pw = _weights(name, len(stream), wide=False)
    for cap in (2, 3, 10, 33, 63):
        ref, got = _fresh(U), _fresh(U)
        want = _dense(stream, ptr, nxt, 0, cap, ref, pw)
        hits = np.zeros(len(stream), np.int32)
        K.replay_masks_at(stream, ptr, nxt, 0, cap, *got, pw, hits, *NO_READS)
        np.testing.assert_array_equal(hits, want)
        np.testing.assert_array_equal(ref[0], got[0])


@pytest.mark.parametrize("U", [300, 2**15 - 2, 2**15 - 1, 40_000])
def test_recency_list_of_int16_or_int32_links(U):
    """The recency list's links are int16 below 2^15 - 1 units (its sentinel is unit U), int32 from there
    on: both widths give the dense path's hits and state, units of high index among them."""
    rng = np.random.default_rng(U)
    T = 600
    hot = rng.choice(U, 120, replace=False)
    hot[:4] = [U - 1, U - 2, 0, 1]  # the highest indices, which int16 links would not hold past 2^15 - 2
    sizes = rng.choice([1, 1, 1, 2, 5], T)
    toks = [np.sort(rng.choice(hot, m, replace=False)).astype(np.int32) for m in sizes]
    ptr = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    idx = np.concatenate(toks)
    nxt = np.zeros(len(idx), np.int32)
    pw = _weights("lru", T, wide=False)
    for cap in (2, 9, 60):
        ref, got = _fresh(U), _fresh(U)
        want = _dense(idx, ptr, nxt, 0, cap, ref, pw)
        hits = np.zeros(T, np.int32)
        K.replay_masks_at(idx, ptr, nxt, 0, cap, *got, pw, hits, *NO_READS)
        np.testing.assert_array_equal(hits, want)
        for a, b in zip(ref[:4], got[:4]):
            np.testing.assert_array_equal(a, b)
        assert 0 < hits.sum() < len(idx)


def test_recency_list_sets_the_next_uses_of_short_and_long_runs():
    """The recency list leaves ``next_use`` to a pass after each run of one-unit tokens (per token for a
    run of at most U tokens, per unit for a longer one): with the future given to a pure-recency policy,
    the state equals the dense path's, whole, in chunks, and replayed out of order (a later chunk first:
    no unit may look used in the run that is not)."""
    rng = np.random.default_rng(11)
    U = 40
    sizes = np.r_[np.ones(300, int), 3, 4, np.ones(25, int), 2, np.ones(U, int), 5, np.ones(7, int), 3]
    sizes = np.r_[sizes, np.ones(400, int)]
    T = len(sizes)
    p = np.r_[0.4, np.full(U - 11, 0.6 / (U - 11)), np.zeros(10)]  # the last 10 units are never used
    toks = [np.sort(rng.choice(U, m, replace=False, p=p)) for m in sizes]
    ptr = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    idx = np.concatenate(toks).astype(np.int32)
    nxt = K.next_use_times(idx, ptr, U)
    pw = _weights("lru", T, wide=False)
    for cap in (2, 5, 20):
        ref = _fresh(U)
        want = _dense(idx, ptr, nxt, 0, cap, ref, pw)
        for edges in ([0, T], [0, 150, 301, 330, T], [0, 500]):
            got, hits = _fresh(U), np.zeros(T, np.int32)
            for t0, t1 in zip(edges[:-1], edges[1:]):
                a0, a1 = ptr[t0], ptr[t1]
                K.replay_masks_at(
                    idx[a0:a1], ptr[t0 : t1 + 1] - a0, nxt[a0:a1], t0, cap, *got, pw, hits[t0:t1], *NO_READS
                )
            if edges[-1] == T:
                np.testing.assert_array_equal(hits, want)
                for a, b, what in zip(ref[:4], got[:4], ["in_cache", "count", "last", "next_use"]):
                    np.testing.assert_array_equal(a, b, err_msg=f"{what}, cap {cap}, chunks {edges}")
        # out of order: tokens 500 .. T first, then 0 .. 500 on the same cache, as the dense path does them
        ref, got = _fresh(U), _fresh(U)
        for t0, t1 in ((500, T), (0, 500)):
            a0, a1 = ptr[t0], ptr[t1]
            args = idx[a0:a1], ptr[t0 : t1 + 1] - a0, nxt[a0:a1], t0, cap
            want = _dense(*args, ref, pw)
            hits = np.zeros(t1 - t0, np.int32)
            K.replay_masks_at(*args, *got, pw, hits, *NO_READS)
            np.testing.assert_array_equal(hits, want)
            for a, b, what in zip(ref[:4], got[:4], ["in_cache", "count", "last", "next_use"]):
                np.testing.assert_array_equal(a, b, err_msg=f"{what}, cap {cap}, out of order")


def _belady_streams():
    """(name, U, idx, nxt) of one-unit streams for the next-use buckets (kernels/next_use.py): next uses
    of the stream itself (a Zipf stream, with "never again" shared by many units), all equal (every
    victim decided by the unit index), arbitrary (not the stream's own: the order is still (next use,
    unit)), a dozen values (ties within a bucket), and bunched at the top of their range (a bucket scan past SCAN_LIMIT hands over to the heap)."""
    rng = np.random.default_rng(3)
    out = []
    for U in (40, 300):
        stream = ((rng.zipf(1.2, 4000) - 1) % U).astype(np.int32)
        ptr = np.arange(len(stream) + 1, dtype=np.int64)
        out.append(("own", U, stream, K.next_use_times(stream, ptr, U)))
        out.append(("equal", U, stream, np.full(len(stream), 7, np.int32)))
        out.append(("arbitrary", U, stream, rng.integers(0, 50_000, len(stream)).astype(np.int32)))
        few = rng.integers(0, 12, len(stream)).astype(np.int32)  # ties in every bucket, below a lone top
        few[5] = 10**6
        out.append(("few", U, stream, few))
    U = 1200
    stream = rng.permutation(np.r_[np.arange(U), np.arange(U)]).astype(np.int32)
    bunched = np.where(rng.random(len(stream)) < 0.02, 0, 10**6 + rng.integers(0, 600, len(stream)))
    out.append(("bunched", U, stream, bunched.astype(np.int32)))
    return out


@pytest.mark.parametrize("name, U, stream, nxt", _belady_streams(), ids=lambda x: x if isinstance(x, str) else "")
def test_next_use_buckets_equal_the_dense_path(name, U, stream, nxt):
    """Belady over long runs of one-unit tokens takes the next-use buckets, not the heap: same hits and
    state as cache_step token by token, in one call and chunk by chunk (each chunk's run is long enough
    to take them again), and across runs cut by tokens of several units."""
    T = len(stream)
    ptr = np.arange(T + 1, dtype=np.int64)
    pw = _weights("belady", T, wide=False)
    total = 0
    for cap in (2, U // 3, U - 1):
        ref = _fresh(U)
        want = _dense(stream, ptr, nxt, 0, cap, ref, pw)
        got, hits = _fresh(U), np.zeros(T, np.int32)
        K.replay_masks_at(stream, ptr, nxt, 0, cap, *got, pw, hits, *NO_READS)
        np.testing.assert_array_equal(hits, want, err_msg=f"{name}, cap {cap}")
        for a, b in zip(ref[:4], got[:4]):
            np.testing.assert_array_equal(a, b)
        got, hits = _fresh(U), np.zeros(T, np.int32)
        for t0 in range(0, T, T // 3):
            t1 = min(T, t0 + T // 3)
            K.replay_masks_at(
                stream[t0:t1], ptr[t0 : t1 + 1] - t0, nxt[t0:t1], t0, cap, *got, pw, hits[t0:t1], *NO_READS
            )
        np.testing.assert_array_equal(hits, want, err_msg=f"{name}, cap {cap}, chunked")
        total += want.sum()
    assert 0 < total < 3 * T
    # runs of one-unit tokens cut by tokens of three units (the heap between them)
    toks = [stream[i : i + 1] if (i // 500) % 2 == 0 else np.unique(stream[i : i + 3]) for i in range(0, T, 1)]
    sizes = np.array([len(x) for x in toks])
    ptr2 = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    idx2 = np.concatenate(toks).astype(np.int32)
    nxt2 = K.next_use_times(idx2, ptr2, U)
    pw2 = _weights("belady", len(toks), wide=False)
    ref, got = _fresh(U), _fresh(U)
    want = _dense(idx2, ptr2, nxt2, 0, U // 3, ref, pw2)
    hits = np.zeros(len(toks), np.int32)
    K.replay_masks_at(idx2, ptr2, nxt2, 0, U // 3, *got, pw2, hits, *NO_READS)
    np.testing.assert_array_equal(hits, want)


def test_next_use_buckets_are_taken_and_hand_over():
    """The buckets replay a long one-unit run to its end; next uses bunched at the top make a victim's
    scan pass more than SCAN_LIMIT units, and the run stops there (the heap goes on)."""
    from simcore.engine.kernels import next_use

    rng = np.random.default_rng(0)
    U, T = 400, 3000
    stream = ((rng.zipf(1.2, T) - 1) % U).astype(np.int32)
    ptr = np.arange(T + 1, dtype=np.int64)
    nxt = K.next_use_times(stream, ptr, U)
    st, hits = _fresh(U), np.zeros(T, np.int32)
    assert next_use.run_ones(stream, ptr, nxt, 0, 0, 100, *st, hits, U) == T
    assert next_use.run_ones(stream, ptr, nxt, 0, 0, 100, *_fresh(U), hits, T + 1) == 0  # too short a run
    stream = rng.permutation(np.r_[np.arange(U), np.arange(U), np.arange(U)]).astype(np.int32)
    ptr = np.arange(len(stream) + 1, dtype=np.int64)
    bunched = (10**6 + rng.integers(0, 3, len(stream))).astype(np.int32)  # one bucket: scans of ~cap units
    bunched[0], bunched[1] = 0, 2 * 10**6  # the range, and its top (hi: no other unit shares it)
    end = next_use.run_ones(stream, ptr, bunched, 0, 0, 390, *_fresh(U), np.zeros(len(stream), np.int32), U)
    assert 390 < end < len(stream)


# --- against libCacheSim ----------------------------------------------------------------------------


def _oracle_file(stream, path):
    """libCacheSim's oracleGeneral trace: (time u32, id u64, size u32, next access vtime i64, -1: none)."""
    rec = np.zeros(len(stream), np.dtype([("t", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")]))
    rec["t"] = np.arange(len(stream))
    rec["id"] = stream.astype(np.uint64) + 1
    rec["size"] = 1
    nxt = K.next_use_times(stream, np.arange(len(stream) + 1, dtype=np.int64), int(stream.max()) + 1)
    rec["next"] = np.where(nxt == len(stream), -1, nxt)
    rec.tofile(path)


@pytest.fixture(scope="module")
def zipf_streams():
    rng = np.random.default_rng(11)
    return {U: ((rng.zipf(1.1, 30000) - 1) % U).astype(np.int32) for U in (64, 500)}


@pytest.mark.parametrize("U, cap", [(64, 2), (64, 5), (64, 40), (500, 2), (500, 16), (500, 100), (500, 450)])
def test_one_unit_zipf_hits_equal_libcachesim(zipf_streams, tmp_path, U, cap):
    lcs = pytest.importorskip("libcachesim")
    stream = zipf_streams[U]
    T = len(stream)
    path = str(tmp_path / "zipf.oracleGeneral")
    _oracle_file(stream, path)
    ptr = np.arange(T + 1, dtype=np.int64)
    nxt = K.next_use_times(stream, ptr, U)
    for name, cls in (("lru", lcs.LRU), ("belady", lcs.Belady)):
        cache = sim.cache_for(policies.load(name), U, T, cap)
        hits = np.zeros(T, np.int32)
        cache.replay(stream, ptr, nxt, 0, hits)
        miss_ratio, _ = cls(cache_size=cap).process_trace(lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE))
        assert int(hits.sum()) == T - round(miss_ratio * T), name
