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
