"""The score family of cache policies (lru, lfu, belady, none: ``weights()`` of a linear priority), and
what ``simcore.policies`` checks when it loads a policy of either family by name or by path."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore import policies
from simcore.engine.sim import simulate
from simcore.errors import ConfigError

SCORE = ["belady", "lfu", "lru", "none"]
HOOKS = ["arc", "clock", "fifo", "lfuda", "s3fifo", "sieve", "twoq"]


def _key(weights, count, last, next_use):
    """A unit's priority (higher is kept), in exact integer arithmetic."""
    w = [int(x) for x in weights]
    assert w == list(weights), "weights are integers"
    return w[0] * count + w[1] * last + w[2] * next_use


def _one_hot(stream, n_units=8):
    return np.eye(n_units, dtype=np.float32)[stream]


def _write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


# --- the package's policies and their families ----------------------------------------------------


def test_every_policy_of_the_package_is_listed_and_belongs_to_one_family():
    assert set(SCORE + HOOKS) <= set(policies.available())
    assert all(policies.family(policies.load(name)) in ("score", "hooks") for name in policies.available())
    for name in SCORE:
        assert policies.family(policies.load(name)) == "score", name
    for name in HOOKS:
        assert policies.family(policies.load(name)) == "hooks", name


def test_only_belady_needs_the_future_and_only_lru_is_a_stack_policy():
    flags = {name: (policies.load(name).NEEDS_FUTURE, policies.load(name).STACK) for name in SCORE + HOOKS}
    assert {n for n, (future, _) in flags.items() if future} == {"belady"}
    assert {n for n, (_, stack) in flags.items() if stack} == {"lru"}
    assert policies.load("none").NO_CACHE


# --- weights: the order each policy keeps ---------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**26 - 1).flatmap(lambda T: st.tuples(st.just(T), *[st.integers(0, T - 1)] * 4)))
def test_lfu_count_dominates_recency_for_fewer_than_2_to_the_26_tokens(case):
    """lfu keeps the unit used more often, whatever the last uses; among equal counts, the one used
    last. The priority count * (T + 1) + last is exact in float64 up to T = 2^26 - 1."""
    T, c, l1, l2, _ = case
    w = policies.load("lfu").weights(T)
    assert _key(w, c + 1, l1, 0) > _key(w, c, l2, 0)  # one more use beats any recency
    assert (_key(w, c, l1, 0) > _key(w, c, l2, 0)) == (l1 > l2)
    for count, last in ((c + 1, l1), (T, T - 1)):  # the float64 sum the docstring promises is exact
        exact = _key(w, count, last, 0)
        assert float(w[0]) * count + float(w[1]) * last == exact and exact < 2**53


@given(st.integers(1, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_lru_keeps_the_most_recent_and_belady_the_soonest_used_again(T, a, b):
    lru, belady = policies.load("lru").weights(T), policies.load("belady").weights(T)
    assert (_key(lru, 0, a, 0) > _key(lru, 0, b, 0)) == (a > b)
    assert _key(lru, 5, a, 0) == _key(lru, 1, a, 7)  # neither count nor next use matters
    # belady: the farthest next use has the lowest priority; never used again (next use T) the lowest
    assert (_key(belady, 0, 0, a) > _key(belady, 0, 0, b)) == (a < b)
    assert _key(belady, 9, 9, T) <= _key(belady, 0, 0, min(a, T))


def test_belady_evicts_the_unit_used_again_farthest_in_the_future():
    # capacity 2, one unit a token: 0 1 0 2 1. At the miss of 2 the cache holds 0 (last used t2, never
    # used again) and 1 (t1, used again at t4): Belady evicts 0 and then hits 1; LRU evicts 1.
    stream = [0, 1, 0, 2, 1]
    assert simulate(_one_hot(stream), k=1, cap=2, policy="belady")["hits"].tolist() == [0, 0, 1, 0, 1]
    assert simulate(_one_hot(stream), k=1, cap=2, policy="lru")["hits"].tolist() == [0, 0, 1, 0, 0]


def test_lfu_keeps_a_unit_used_often_long_ago_over_a_recent_one():
    # capacity 2: 0 used three times, then 1, then 2 (miss): lfu evicts 1 (one use), lru evicts 0
    stream = [0, 0, 0, 1, 2, 0]
    assert simulate(_one_hot(stream), k=1, cap=2, policy="lfu")["hits"].tolist() == [0, 1, 1, 0, 0, 1]
    assert simulate(_one_hot(stream), k=1, cap=2, policy="lru")["hits"].tolist() == [0, 1, 1, 0, 0, 0]


def test_none_caches_nothing_at_any_capacity():
    stream = [0, 0, 1, 0, 1]
    for cap in (0, 1, 8):
        assert simulate(_one_hot(stream), k=1, cap=cap, policy="none")["hits"].sum() == 0


def test_a_score_policy_of_ones_own_runs_by_path(tmp_path):
    """weights() alone makes a policy: MRU (evict the most recently used) is (0, -1, 0)."""
    path = _write(
        tmp_path,
        "mru.py",
        '''
        """mru: evict the most recently used unit."""
        def weights(n_tokens):
            return (0.0, -1.0, 0.0)
        ''',
    )
    mru = policies.load(path)
    assert policies.family(mru) == "score" and not mru.NEEDS_FUTURE and not mru.STACK
    # capacity 2: 0 1 in; 2 misses and evicts 1, the most recent; 0 then hits (LRU would have evicted it)
    assert simulate(_one_hot([0, 1, 2, 0]), k=1, cap=2, policy=path)["hits"].tolist() == [0, 0, 0, 1]


# --- what load() refuses ----------------------------------------------------------------------------


def test_an_unknown_name_lists_the_available_policies():
    with pytest.raises(ConfigError, match="unknown policy 'lrv'") as e:
        policies.load("lrv")
    for name in SCORE + HOOKS:
        assert name in str(e.value)
    assert "path of a .py file" in str(e.value)


def test_stack_is_accepted_for_a_recency_order_only(tmp_path):
    ok = _write(tmp_path, "recent.py", "STACK = True\ndef weights(n_tokens):\n    return (0, 2, 0)\n")
    assert policies.load(ok).STACK
    for name, w in (("counted.py", "(1, 1, 0)"), ("mru_stack.py", "(0, -1, 0)"), ("future.py", "(0, 1, -1)")):
        bad = _write(tmp_path, name, f"STACK = True\ndef weights(n_tokens):\n    return {w}\n")
        with pytest.raises(ConfigError, match="STACK = True is implemented for recency order only"):
            policies.load(bad)


HOOK_FILE = """
import numpy as np
from numba import njit
{flags}
def init(n_units, capacity):
    return (np.zeros(1, np.int64),)
@njit
def hit(s, u, t):
    pass
@njit
def evict(s, t, pinned):
    return -1
@njit
def insert(s, u, t, pinned):
    pass
"""


def test_stack_is_refused_for_a_hook_policy(tmp_path):
    path = _write(tmp_path, "hook_stack.py", HOOK_FILE.format(flags="STACK = True"))
    with pytest.raises(ConfigError, match="STACK = True is implemented for recency order only"):
        policies.load(path)


def test_needs_future_is_refused_for_a_hook_policy(tmp_path):
    path = _write(tmp_path, "hook_future.py", HOOK_FILE.format(flags="NEEDS_FUTURE = True"))
    with pytest.raises(ConfigError, match="NEEDS_FUTURE is for score-family policies"):
        policies.load(path)
    plain = _write(tmp_path, "hook_plain.py", HOOK_FILE.format(flags=""))
    assert policies.family(policies.load(plain)) == "hooks"


def test_a_file_with_neither_interface_is_refused_naming_what_is_missing(tmp_path):
    empty = _write(tmp_path, "empty.py", "NEEDS_FUTURE = False\n")
    with pytest.raises(ConfigError, match=r"defines neither weights\(\) nor the hooks") as e:
        policies.load(empty)
    assert "missing: init, hit, evict, insert" in str(e.value) and "empty.py" in str(e.value)
    half = _write(
        tmp_path,
        "half.py",
        "import numpy as np\ndef init(n_units, capacity):\n    return (np.zeros(1),)\ndef hit(s, u, t):\n    pass\n",
    )
    with pytest.raises(ConfigError, match=r"\(missing: evict, insert\)"):
        policies.load(half)


def test_a_file_that_fails_to_import_is_a_config_error(tmp_path):
    broken = _write(tmp_path, "broken.py", "import numpy as np\nraise RuntimeError('half written')\n")
    with pytest.raises(ConfigError, match=r"--policy .*broken\.py: importing it failed: RuntimeError: half written"):
        policies.load(broken)
    syntax = _write(tmp_path, "syntax.py", "def weights(n_tokens)\n    return (0, 1, 0)\n")
    with pytest.raises(ConfigError, match="importing it failed: SyntaxError"):
        policies.load(syntax)
    with pytest.raises(ConfigError, match="no such file"):
        policies.load(str(tmp_path / "absent.py"))


def test_family_of_a_module_with_neither_interface_is_a_config_error():
    import types

    module = types.ModuleType("nothing")
    with pytest.raises(ConfigError, match="missing: init, hit, evict, insert"):
        policies.family(module)
