"""Golden hit counts of every cache policy (STYLE.md #8b, #8c).

(b) Exact hits at capacities 1-4 on the checked-in trace traces/tiny (tools/make_tiny_trace.py: one
layer, d = d_int = 4, six tokens; x = h = gate = the rows below), through the public entry points
``simcore.engine.sim.simulate`` and ``simcore.engine.replay.replay``.

(c) One hand-worked sequence per hook-family policy, from its paper's or libCacheSim's rules, one unit
per token, through ``simcore.engine.hooks.replay_sets``.

How the golden numbers were obtained: the selections by hand from the rows (top-k, ties to the lower
index; there are none); the hits from the slow pure-Python references, tests/naive.py (score family)
and tests/naive_policies.py (hook family), which follow the policies' docstrings with plain lists and
sets and share no code with the engine; several cells are also worked by hand in the comments. The
references are re-run on the same selections below (``test_golden_numbers_are_the_references``), so a
literal mistyped here fails there, not only against the engine.
"""

from __future__ import annotations

from pathlib import Path

import naive
import naive_policies as NP
import numpy as np
import pytest

from simcore import policies
from simcore.engine import hooks
from simcore.engine.replay import replay
from simcore.engine.sim import simulate

TINY = Path(__file__).resolve().parent.parent / "traces" / "tiny"
ALL = ["lru", "lfu", "belady", "none", "fifo", "clock", "sieve", "s3fifo", "arc", "twoq", "lfuda"]
CAPS = (1, 2, 3, 4)

# traces/tiny, units 0..3 (float16 in the trace; no two values of a row are equal)
ROWS = [
    [0.9, 0.8, 0.1, 0.2],
    [0.9, 0.1, 0.8, 0.2],
    [0.1, 0.9, 0.2, 0.8],
    [0.8, 0.9, 0.3, 0.2],
    [0.2, 0.1, 0.9, 0.8],
    [0.9, 0.3, 0.8, 0.1],
]
TOP2 = [{0, 1}, {0, 2}, {1, 3}, {0, 1}, {2, 3}, {0, 2}]
TOP3 = [{0, 1, 3}, {0, 2, 3}, {1, 2, 3}, {0, 1, 2}, {0, 2, 3}, {0, 1, 2}]

# Hits per token of the top-2 selections (TOP2), HITS_TOP2[policy][capacity].
#
# Capacity 1 (two units a token, one slot): the score family keeps the used unit of highest priority.
#   lru: both were used now, a tie -> the higher index stays; no token reuses it          => 0 0 0 0 0 0
#   lfu: the most used, ties to the higher index: t0 keeps 1, t1 0 (2 uses), t2 1 (2 uses), t3 both
#        have 3 -> 1 stays, and it was cached: a hit; t4 3, t5 0                          => 0 0 0 1 0 0
#   belady: the sooner next use: t0 keeps 0 (next t1), t1 hits it and keeps it (next t3 < 2's t4),
#        t2 keeps 1 (t3), t3 hits it, keeps 0 (t5; 1 is never used again), t4 keeps 2 (t5), t5 hits it
#                                                                                          => 0 1 0 1 0 1
# The hook family streams the lower index past the cache and caches the higher one: no hits.
#
# Capacity 3, by hand (one cell per family checked this way):
#   fifo:  t0 {0,1} q=[0,1]; t1 0 hits, 2 in -> [0,1,2]; t2 1 hits, 3 in, oldest unpinned 0 out ->
#          [1,2,3]; t3 1 hits, 0 in, oldest unpinned 2 out (1 is in use) -> [1,3,0]; t4 3 hits, 2 in,
#          1 out -> [3,0,2]; t5 0 and 2 hit                                      => 0 1 1 1 1 2
#   clock: t1 0 hits (bit); t2 1 hits (bit), 3 in: 0 has its bit -> cleared, to the head [1,2,0];
#          1 in use, 2 has no bit -> out [1,0,3]; t3 both hit (bits); t4 3 hits, 2 in: 1 and 0 lose
#          their bits and go round, 3 in use, 1 out -> [3,0,2]; t5 both hit          => 0 1 1 2 1 2
#   sieve: t2 3 in: hand at 0 (visited: cleared), 1 in use (kept), 2 out, hand past the newest ->
#          [0,1,3]; t3 both hit; t4 2 in: 0 and 1 cleared, 3 in use, wrap to 0 -> out, hand at 1 ->
#          [1,3,2]; t5 2 hits, 0 in: hand at 1 (not visited since) -> out            => 0 1 1 2 1 1
#   lru, lfu, belady: worked in tests/test_replay.py (5, 6 and 7 hits).
# Capacity 4 holds every unit: every reuse hits, whatever the policy.
HITS_TOP2 = {
    "lru": {1: [0, 0, 0, 0, 0, 0], 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 1, 1, 1], 4: [0, 1, 1, 2, 2, 2]},
    "lfu": {1: [0, 0, 0, 1, 0, 0], 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 2, 1, 1], 4: [0, 1, 1, 2, 2, 2]},
    "belady": {1: [0, 1, 0, 1, 0, 1], 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 2, 1, 2], 4: [0, 1, 1, 2, 2, 2]},
    "none": {1: [0] * 6, 2: [0] * 6, 3: [0] * 6, 4: [0] * 6},
    "fifo": {1: [0] * 6, 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 1, 1, 2], 4: [0, 1, 1, 2, 2, 2]},
    "clock": {1: [0] * 6, 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 2, 1, 2], 4: [0, 1, 1, 2, 2, 2]},
    "sieve": {1: [0] * 6, 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 2, 1, 1], 4: [0, 1, 1, 2, 2, 2]},
    "s3fifo": {1: [0] * 6, 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 1, 1, 1], 4: [0, 1, 1, 2, 2, 2]},
    "arc": {1: [0] * 6, 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 2, 1, 1], 4: [0, 1, 1, 2, 2, 2]},
    "twoq": {1: [0] * 6, 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 1, 1, 2], 4: [0, 1, 1, 2, 2, 2]},
    "lfuda": {1: [0] * 6, 2: [0, 1, 0, 1, 0, 1], 3: [0, 1, 1, 2, 1, 1], 4: [0, 1, 1, 2, 2, 2]},
}

# Total hits of the top-3 selections (TOP3) at capacities 1, 2, 3, 4 (same references). At capacity 4
# every reuse hits: t1 reuses 0 and 3, each later token all three of its units: 0 + 2 + 3 * 4 = 14.
TOTAL_TOP3 = {
    "lru": (3, 6, 10, 14),
    "lfu": (3, 5, 10, 14),
    "belady": (5, 10, 10, 14),
    "none": (0, 0, 0, 0),
    **{name: (4, 6, 10, 14) for name in ("fifo", "clock", "sieve", "s3fifo", "arc", "twoq", "lfuda")},
}

# simcore replay of traces/tiny with method dip at density 0.5 selects 2 of the 4 input channels by |x|
# (TOP2, since x = h in this trace) and 3 of the 4 down channels by |h| (TOP3). Memory plan: 90 bytes
# resident, an input channel 4.125 bytes and a down channel 2.0625 (4.125 bits a weight), the cache
# split 2:1 between them by weight bytes, so both kinds get C units from 90 + 6.1875 C bytes of DRAM.
DRAM_FOR_CAP = {1: "97B", 2: "103B", 3: "109B", 4: "115B"}


@pytest.fixture(scope="module")
def tiny_h():
    from simcore.trace.format import TraceReader

    return TraceReader(TINY).read_layer(0, ("h",))["h"]


def test_every_policy_of_the_package_has_golden_numbers():
    assert sorted(ALL) == policies.available(), "add the new policy's rows to HITS_TOP2 and TOTAL_TOP3"


def test_the_trace_holds_the_rows_written_here(tiny_h):
    assert np.array_equal(tiny_h, np.array(ROWS, np.float16))
    assert [naive.top([float(v) for v in r], 2) for r in tiny_h] == TOP2
    assert [naive.top([float(v) for v in r], 3) for r in tiny_h] == TOP3


def test_golden_numbers_are_the_references():
    """The literals above are what the pure-Python references give (a typo here fails here)."""
    rows = np.array(ROWS, np.float16).astype(np.float32)
    for name in ALL:
        for cap in CAPS:
            for k, sets, want in ((2, TOP2, sum(HITS_TOP2[name][cap])), (3, TOP3, TOTAL_TOP3[name][cap - 1])):
                if name in NP.MODELS:
                    got = NP.replay(name, [sorted(s) for s in sets], cap)[0]
                else:
                    got = naive.replay(rows, k, cap, policy=name)[1]
                if k == 2:
                    assert got == HITS_TOP2[name][cap], (name, cap)
                assert sum(got) == want, (name, k, cap)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("cap", CAPS)
def test_hits_per_token_of_every_policy_on_the_tiny_trace(tiny_h, name, cap):
    got = simulate(tiny_h, k=2, cap=cap, policy=name)
    assert got["used"].tolist() == [2] * 6
    assert got["hits"].tolist() == HITS_TOP2[name][cap]


@pytest.mark.parametrize("name", ALL)
def test_dip_replay_of_the_tiny_trace_hits_the_golden_counts_per_kind(name):
    for cap in CAPS:
        r = replay(trace=str(TINY), method="dip", density=0.5, dram=DRAM_FOR_CAP[cap], policy=name, context=0)
        input_, down = r.kinds["input"], r.kinds["down"]
        assert (input_["accesses"], down["accesses"]) == (12, 18)  # 2 and 3 units a token
        if name != "none":
            assert (input_["capacity_per_layer"], down["capacity_per_layer"]) == (cap, cap)
        assert (input_["hits"], down["hits"]) == (sum(HITS_TOP2[name][cap]), TOTAL_TOP3[name][cap - 1]), cap


@pytest.mark.parametrize("name", ALL)
def test_dense_replay_hits_every_cached_unit_after_the_first_token(name):
    """Dense uses all 4 neurons every token: a cache of C keeps C of them, which hit in each of the 5
    later tokens, whatever the policy (none: no cache, no hits)."""
    for cap in (1, 2, 3):
        r = replay(trace=str(TINY), method="dense", dram=DRAM_FOR_CAP[cap], policy=name, context=0)
        assert r.totals["hits"] == (0 if name == "none" else 5 * cap)


# --- (c) hand-worked sequences, one unit per token -------------------------------------------------


def _replay(name, stream, cap, n_units=16):
    hits, in_cache = hooks.replay_sets(policies.load(name), [[u] for u in stream], n_units, cap)
    return hits.tolist(), set(np.flatnonzero(in_cache).tolist())


def _replay_with_state(name, stream, cap, n_units=16):
    """As :func:`_replay` through ``hooks.replay_csr``, also returning the policy's state."""
    pol = policies.load(name)
    cache, state = hooks.new_cache(n_units), pol.init(n_units, cap)
    idx, ptr = np.asarray(stream, np.int32), np.arange(len(stream) + 1, dtype=np.int64)
    out = np.zeros(len(stream), np.int32)
    assert hooks.replay_csr(idx, ptr, 0, cap, cache, state, hooks.hooks_of(pol), out, *hooks.NO_READS) == 0
    return out.tolist(), set(np.flatnonzero(cache.in_cache).tolist()), state


def test_fifo_evicts_the_first_in_whatever_its_hits():
    # capacity 2: 0, 1 in; 0 hits (FIFO changes nothing); 2 in -> the oldest, 0, out although just used
    assert _replay("fifo", [0, 1, 0, 2], 2) == ([0, 0, 1, 0], {1, 2})


def test_clock_gives_a_used_unit_a_second_chance():
    # capacity 3: 0 1 2 in (bits 0); 0 hits (bit 1). 3: the hand finds 0 with its bit: cleared, sent to
    # the head [1 2 0]; 1 has no bit: out -> [2 0 3]. 1: 2 out -> [0 3 1]. 0 hits (bit 1). 4: 0 cleared
    # and sent round [3 1 0], 3 out -> {0 1 4}. FIFO would have evicted 0 at the first miss.
    assert _replay("clock", [0, 1, 2, 0, 3, 1, 0, 4], 3) == ([0, 0, 0, 1, 0, 0, 1, 0], {0, 1, 4})
    assert 0 not in _replay("fifo", [0, 1, 2, 0, 3], 3)[1]


def test_sieve_hand_stays_where_it_evicted():
    """SIEVE (Zhang et al., NSDI'24, Algorithm 1): hits set a bit; a miss moves the hand from where it
    last stopped (at first the oldest unit) towards the newest, clearing bits, and evicts the first unit
    without one; new units enter at the head, survivors keep their place."""
    # capacity 4: 0 1 2 3 in, queue (oldest first) [0 1 2 3]; 0, 1 hit (bits).
    # 4: hand at 0 (bit: cleared), 1 (cleared), 2 (no bit) -> out, hand to 3    [0 1 3 4]
    # 0 hits (bit). 5: hand at 3 -> out, hand to 4                               [0 1 4 5]
    # 2: hand at 4 -> out; 6: hand at 5 -> out; 7: hand at 2 -> out                [0 1 6 7]
    # 1 hits: it survived four evictions with its bit cleared, because the hand never came back to it
    # (an LRU or a hand restarting at the oldest unit would have evicted it at the miss of 5).
    stream = [0, 1, 2, 3, 0, 1, 4, 0, 5, 2, 6, 7, 1]
    assert _replay("sieve", stream, 4) == ([0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1], {0, 1, 6, 7})


def test_s3fifo_ghost_hit_enters_the_main_fifo():
    """S3-FIFO (Yang et al., SOSP'23; libCacheSim S3FIFO.c): capacity 10 -> small FIFO 1, main 9, ghost 9."""
    # 0 enters small; 1..9 find small full before any eviction and fill main (libCacheSim's warm-up).
    # 10: small's 0 (used once) leaves for the ghost; 10 enters small.
    # 0 (miss, found in the ghost): small's 10 leaves for the ghost; 0 enters MAIN (main now 10 > 9).
    # 11: main is over its size -> its oldest, 1 (never used again), out; 11 enters small.
    # 12: small's 11 out; 12 enters small. 0 hits: in main it survived the small FIFO's churn (had it
    # entered small, 11 would have pushed it out).
    stream = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 11, 12, 0]
    hits, cache = _replay("s3fifo", stream, 10)
    assert hits == [0] * 14 + [1]
    assert cache == {0, 2, 3, 4, 5, 6, 7, 8, 9, 12}


def test_arc_target_size_adapts_to_ghost_hits():
    """ARC (Megiddo and Modha, FAST'03): a miss found in B1 raises p, one found in B2 lowers it, and
    REPLACE evicts from T1 when |T1| > p."""
    # capacity 2: 0 -> T1; 1 -> T1; 0 hits -> T2 [0], T1 [1].
    # 2: REPLACE, |T1| = 1 > p = 0 -> 1 to B1; 2 -> T1.                                cache {0, 2}
    # 1 (in B1): p = 0 + max(|B2|/|B1|, 1) = 1; REPLACE, |T1| = 1 = p, not from B2 -> T2's 0 to B2;
    #   1 -> T2.                                                                      cache {1, 2}
    # (with p still 0, 2 would have gone instead)
    # 0 (in B2): p = 1 - max(|B1|/|B2|, 1) = 0; |T1| = 1 > 0 -> 2 to B1; 0 -> T2.        cache {0, 1}
    hits, cache, state = _replay_with_state("arc", [0, 1, 0, 2, 1], 2)
    assert (hits, cache, state.p[0]) == ([0, 0, 1, 0, 0], {1, 2}, 1.0)
    hits, cache, state = _replay_with_state("arc", [0, 1, 0, 2, 1, 0], 2)
    assert (hits, cache, state.p[0]) == ([0, 0, 1, 0, 0, 0], {0, 1}, 0.0)
    assert _replay("arc", [0, 1, 0, 2, 1, 0], 2) == (hits, cache)


def test_twoq_promotes_a_unit_found_in_a1out_to_am():
    """2Q (Johnson and Shasha, VLDB'94; libCacheSim TwoQ.c): capacity 4 -> A1in 1, A1out 2, Am 3."""
    # 0 1 2 3 fill A1in. 4: A1in over its size -> its oldest, 0, to A1out; 4 in A1in.
    # 0 (found in A1out): A1in's 1 to A1out; 0 enters Am.                    cache {0 2 3 4}
    # 5: A1in's 2 to A1out [1 2]; 6: A1in's 3 to A1out, which drops 1 -> [2 3].  cache {0 4 5 6}
    # 0 hits: in Am it outlived the stream of new units that flushed A1in.
    assert _replay("twoq", [0, 1, 2, 3, 4, 0, 5, 6, 0], 4) == ([0] * 8 + [1], {0, 4, 5, 6})


def test_lfuda_ages_out_a_unit_popular_long_ago():
    """LFUDA (Arlitt et al., 2000): key K = F + L; L = the key of the last unit evicted."""
    # capacity 2: 0 used 3 times: K = 3 + 0. 1: K = 1. 2: 1 out (L = 1), 2: K = 1 + 1 = 2.
    # 3: 2 out (L = 2), 3: K = 1 + 2 = 3. 4: 0 and 3 both K = 3; 0's key is older -> out (L = 3), 4: K = 4.
    # 0: a miss now; 3 out (L = 3), 0: K = 1 + 3.                                     cache {0, 4}
    stream = [0, 0, 0, 1, 2, 3, 4, 0]
    assert _replay("lfuda", stream, 2) == ([0, 1, 1, 0, 0, 0, 0, 0], {0, 4})
    # without aging (simcore's lfu: counts over the session) 0, used 3 times, would still be cached
    one_hot = np.eye(16, dtype=np.float32)[stream]
    assert simulate(one_hot, k=1, cap=2, policy="lfu")["hits"].tolist()[-1] == 1
