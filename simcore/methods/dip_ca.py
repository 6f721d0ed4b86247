"""dip-ca (Federici et al., cache-aware masking): dip whose scores are multiplied by 1 for units in
the DRAM cache and by gamma (0 < gamma <= 1) for the others before the top-k, so that cached units
win close calls. gamma = 1 is dip. Variants (engine options): ``fixed_top_n`` top units exempt from
re-weighting, a gamma warm-up over the first tokens, and approximate selection from the top-m.
Masks depend on the cache, so tokens replay strictly in order and Belady is undefined for gamma < 1."""

from simcore.methods import dip
from simcore.methods.base import Selection


def resolve(shape, density: float, **kw) -> Selection:
    kw["cache_aware"] = True
    return dip.resolve(shape, density, **kw)
