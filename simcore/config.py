"""Numba options, in one place (STYLE.md #3): every kernel is compiled with these."""

import os

NJIT = dict(
    cache=os.environ.get("SIMCORE_NUMBA_CACHE", "1") != "0",  # reuse compiled kernels across runs
    nogil=True,  # kernels release the GIL, so threads can replay layers side by side
    fastmath=False,  # exact IEEE arithmetic: the kernels must equal the NumPy reference bit for bit
    boundscheck=False,
)

NJIT_REDUCE = dict(NJIT, fastmath={"reassoc", "nsz", "contract"})
"""For float sums whose order does not matter beyond rounding (the kept-mass proxy): lets the compiler
vectorise them. Results stay deterministic for a given build."""

NJIT_HOOKED = dict(NJIT, cache=False)
"""For the hook-family loop (``simcore.engine.hooks``), which takes a policy's hooks as arguments: Numba
names a dispatcher argument's type by its address, so such a compilation can never be found again on disk;
caching it would only add an entry to the cache index at every run. It compiles once per process."""

NJIT_HOOK = dict(NJIT, _nrt=False, forceinline=True, cache=False)
"""For a policy's hooks and the helpers they call (``simcore.engine.lists``): no reference counting, and
always inlined. Hooks run once per unit access and allocate nothing; with reference counting, each call
passing a state tuple of k arrays costs 2k atomic updates, and a call that is not inlined copies the
whole state (about 80 words for arc) onto the stack: several times the rest of a FIFO's or an ARC's work
(benchmarks/policies.py). Not cached on disk: they are always inlined into a loop compiled per process,
and a cached hook would keep the code of a helper from another file (``lists``) as it was when cached."""

NJIT_LEAF = dict(NJIT, _nrt=False)
"""For the score family's sparse-path kernels (``simcore.engine.kernels.score``, ``.next_use``), which
allocate nothing: without reference counting, as NJIT_HOOK, a call that passes a dozen arrays costs no
more than the O(1) or O(log C) work of a one-unit token (with it, 2 atomic updates an array)."""

NJIT_TOKEN = dict(NJIT_LEAF, forceinline=True)
"""For the sparse path's per-token helpers: also always inlined."""
