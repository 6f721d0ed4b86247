"""Float16 bit tricks: traces store magnitudes as float16, which the kernels read as uint16 bit
patterns (ordered like the values, as magnitudes are >= 0) and convert exactly (``LUT``, hardware
conversion where the CPU has it); and the bit intrinsics the kernels share (bit counts, 64 flags to a
word)."""

from __future__ import annotations

import os
import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from simcore.config import NJIT

LUT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
"""float16 bit pattern -> float32 value (NaN patterns map to NaN; magnitudes never hold them)."""


F16_INF = 0x7C00  # the float16 pattern of +inf; larger ones are NaN


F16_SCALE = np.float32(2.0**112)  # float16 pattern << 13, read as float32, is the value / 2^112


def _half_in_hardware() -> bool:
    """Whether the compiled code converts float16 to float32 in hardware (x86 F16C, which every x86
    CPU since 2012 has; aarch64 always). Without it LLVM would call a runtime helper that Numba's
    JIT may not link, so the kernels keep to integer arithmetic then."""
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        return False  # a target chosen by hand (portable caches): assume the lowest common one
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    if machine in ("x86_64", "amd64"):
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("f16c", False))
    return False


HALF_IN_HARDWARE = _half_in_hardware()


@intrinsic
def half_to_float(typingctx, bits):
    """float32 value of a float16 bit pattern (uint16): one ``fpext``, which LLVM vectorises to
    ``vcvtph2ps`` (F16C) or ``fcvtl`` (aarch64). Use only where HALF_IN_HARDWARE."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def float_bits(typingctx, x):
    """The IEEE bits of a float32 as uint32 (a bitcast: no instruction of its own)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


def _zeros64(count: str, doc: str):
    """An intrinsic counting the zero bits of a uint64 from one end (64 for 0): LLVM's ``count``
    (``cttz`` or ``ctlz``), one instruction on x86 and aarch64."""

    @intrinsic
    def zeros(typingctx, x):
        if x != types.uint64:
            return None

        def codegen(context, builder, signature, args):
            return getattr(builder, count)(args[0], ir.Constant(ir.IntType(1), 0))

        return types.uint64(x), codegen

    zeros.__doc__ = doc
    return zeros


trailing_zeros64 = _zeros64("cttz", "The number of trailing zero bits of a uint64 (64 for 0): ``tzcnt`` (x86).")
leading_zeros64 = _zeros64("ctlz", "The number of leading zero bits of a uint64 (64 for 0): ``lzcnt`` (x86).")


@intrinsic
def nonzero_bytes64(typingctx, arr, start):
    """A uint64 whose bit j says whether ``arr[start + j]`` is non-zero, j = 0 .. 63 (``arr``: a
    C-contiguous 1-d bool or uint8 array holding those 64 items): one compare of 64 bytes and a mask
    move (``vpcmpb``/``vpmovmskb`` on x86, a few NEON instructions on aarch64), not 64 shifts."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"):
        return None
    if arr.dtype not in (types.boolean, types.uint8) or not isinstance(start, types.Integer):
        return None
    vec = ir.VectorType(ir.IntType(8), 64)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        at = builder.gep(data, [args[1]])
        v = builder.load(builder.bitcast(at, vec.as_pointer()), align=1)
        return builder.bitcast(builder.icmp_unsigned("!=", v, ir.Constant(vec, None)), ir.IntType(64))

    return types.uint64(arr, types.intp), codegen


@njit(**NJIT)
def _f16_shifted(row, bits):
    """``bits`` (uint32[U]) = the float16 patterns ``row`` (uint16[U], non-negative) moved into float32
    position: read as float32, the value times 2^-112 (exact, subnormals included); +inf stays +inf."""
    inf = np.uint32(0x7F800000)
    for u in range(row.shape[0]):
        x = np.uint32(row[u])
        bits[u] = (x << np.uint32(13)) if x < np.uint32(F16_INF) else inf


@njit(**NJIT)
def f16_values(row, bits):
    """The float32 values of float16 bit patterns ``row`` (uint16[U], non-negative) into ``bits``
    (uint32[U]); returns them as ``bits.view(np.float32)``. Exact: the shifted pattern is the value
    times 2^-112, and one multiply by a power of two restores it. Vectorised, no table lookups."""
    _f16_shifted(row, bits)
    f = bits.view(np.float32)
    for u in range(row.shape[0]):
        f[u] = f[u] * F16_SCALE
    return f


@njit(**NJIT)
def f16_pattern_at_most(thr):
    """The largest non-negative float16 bit pattern (+inf included) whose value is <= ``thr`` (-1 if
    none): ``value > thr`` is then ``pattern > f16_pattern_at_most(thr)``, an integer compare."""
    return _weighted_bound(thr, 1.0)  # value * 1.0 is exact


@njit(**NJIT)
def _weighted_bound(x, g):
    """The largest float16 pattern p (0..+inf) with float32(value(p) * g) <= x; -1 if none."""
    if not np.float32(LUT[0] * g) <= x:
        return -1
    lo, hi = 0, F16_INF
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.float32(LUT[mid] * g) <= x:
            lo = mid
        else:
            hi = mid - 1
    return lo


@njit(**NJIT)
def _f16_ceil(x):
    """The least float16 pattern (up to +inf) whose value is >= the float32 of bits ``x`` (>= 0), for
    values from 2^-14 (float16's least normal) up; below, some pattern in 0..0x400 that grows with
    the value (see ``_weighted_patterns``). The float16 exponent and mantissa are the float32 ones
    shifted; any dropped bit set rounds up (a carry into the exponent is right). 32-bit operands
    only, so the loops calling it vectorise."""
    x = max(x, np.uint32(112 << 23))
    c = np.uint32(np.uint32(x >> np.uint32(13)) - np.uint32(112 << 10))
    c = np.uint32(c + np.uint32((x & np.uint32(0x1FFF)) != np.uint32(0)))
    return np.uint16(min(c, np.uint32(F16_INF)))
