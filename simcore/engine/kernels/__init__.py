"""Numba kernels of the replay engine. They see only plain arrays (STYLE.md #3).

Vocabulary: ``U`` units of one kind in one layer (d input channels or d_int neurons); a token's
*selection* is the set of units its mask uses, the boolean ``used[U]``. Every per-token pass is a
branch-free sweep over such U-long arrays, which the compiler vectorises; the operands of each
pass share one integer width (a wider one halves or stops the vectorisation), and a loop over part
of an array runs over a slice, from 0: from a signed start other than 0, Numba's negative-index
wrap-around stays in the loop, and the code it caches on disk then runs it scalar, up to 17x slower
(measured; the same loop compiled afresh was fast, which hides it). Cache state of one
(layer, kind): ``in_cache[U]`` (bool), ``count[U]``, ``last[U]``, ``next_use[U]`` (int32: uses so
far, last-use token, next-use token) and ``state`` (int64[STATE_SIZE]: occupancy, and two search
hints: the last token's use-count threshold and its score threshold). Order rules, everywhere: top-k
takes the largest scores, ties to the lower unit index; eviction drops the lowest policy priority,
ties to the lower unit index first.

Per token (DESIGN.md, "Caches and eviction"): select; hits = selected units in cache; update the
policy state of the selected units; if the selection fits, evict the lowest-priority cached units
that this token does not use until the misses fit, and insert all misses; if it does not fit,
the cache keeps the ``cap`` selected units of highest priority and the rest streams past it.

Modules, by concern: ``f16`` (float16 bit tricks), ``radix`` (radix selection), ``select`` (one
token's selection), ``score`` (the score-family cache), ``batch`` (batch drivers), ``reads`` (Flash requests of a token's misses), ``lru_stack`` (LRU at
many capacities in one pass). This package re-exports their names, so callers write ``kernels.X``.
"""

from simcore.engine.kernels.batch import (  # noqa: F401
    first_uses,
    mask_bits_batch,
    masks_of_chunk,
    next_use_times,
    replay_batch,
    transpose64,
)
from simcore.engine.kernels.f16 import (  # noqa: F401
    F16_INF,
    F16_SCALE,
    HALF_IN_HARDWARE,
    LUT,
    _f16_ceil,
    _f16_shifted,
    _half_in_hardware,
    _weighted_bound,
    f16_pattern_at_most,
    f16_values,
    float_bits,
    half_to_float,
    trailing_zeros64,
)
from simcore.engine.kernels.lru_stack import (  # noqa: F401
    _chunk_counts,
    _count_equal2,
    _lru_deep,
    _lru_group,
    _max_below,
    lru_multi_batch,
    lru_multi_step,
    lru_stack_hits,
    lru_stack_hits_at,
)
from simcore.engine.kernels.radix import (  # noqa: F401
    BLOCK,
    CHUNK,
    FIRST_DIGIT_BITS,
    HIST_SIZE,
    _bucket,
    _equal_in,
    _gather,
    _nth_equal,
    _positions,
    bit_length,
    kth_key,
    mark_smallest,
)
from simcore.engine.kernels.reads import (  # noqa: F401
    mark_missed,
    mark_unit,
    reads_batch,
    request_seconds,
    token_reads,
)
from simcore.engine.kernels.score import (  # noqa: F401
    NEVER,
    _at_most,
    _drop_smallest,
    _keep_most_used,
    _keep_soonest_used,
    _priority_keys,
    cache_step,
    priority_weights,
    replay_masks,
    replay_masks_at,
)
from simcore.engine.kernels.select import (  # noqa: F401
    MODE_ALL,
    MODE_THRESHOLD,
    MODE_TOPK,
    STATE_SIZE,
    _count_greater,
    _kth_largest,
    _mass,
    _select_weighted,
    _selection_scratch,
    _weighted_patterns,
    select_units,
)
