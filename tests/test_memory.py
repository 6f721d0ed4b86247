"""The memory plan (simcore/memory.py) on a small shape worked by hand: resident bytes, bytes read per
token, the MLP cache and its split over layers and unit kinds."""

from __future__ import annotations

import pytest

from simcore import methods
from simcore.errors import ConfigError
from simcore.memory import Quant, plan
from simcore.models import shape_from_dims

# 2 layers, d 8, d_int 16, 2 heads of 4 (1 kv head), vocab 32, untied
SHAPE = shape_from_dims("hand", "llama", 2, 8, 16, 2, 1, 32, tied=False)
Q8 = Quant(bits=8, group_size=0, scale_bits=0, kv_bits=16)  # 1 byte per weight, no scales


def test_quantization_bytes_per_weight():
    assert Quant().bytes_per_weight == pytest.approx((4 + 16 / 128) / 8)
    assert Q8.bytes_per_weight == 1.0


def test_resident_part_and_bytes_read_per_token_by_hand():
    sp = SHAPE.static_params
    assert sp.attention == 2 * (2 * 8 * 8 + 2 * 8 * 4)  # q, o: d x d; k, v: d x (kv heads * head dim)
    kv = 2 * 2 * 1 * 4 * 10 * 2  # K and V, 2 layers, 1 kv head of 4, 10 tokens, 2 bytes
    resident = (sp.attention + sp.embedding + sp.lm_head) * 1.0 + sp.norms * 2 + kv
    sel = methods.resolve("dense", SHAPE, 1.0)
    mem = plan(SHAPE, sel, int(resident) + 2 * 16 * 3 * 8 // 2, Q8, context=10)
    assert mem.kv_cache == kv and mem.static_resident == resident
    # per token: attention, the LM head, one embedding row, norms and the whole KV cache
    assert mem.static_read_per_token == (sp.attention + sp.lm_head + 8) + sp.norms * 2 + kv
    assert mem.mlp_total == 2 * 3 * 8 * 16
    assert mem.kinds[0].unit_bytes == 3 * 8 and mem.kinds[0].capacity == 8  # half the MLP fits: 8 of 16 neurons


def test_the_cache_is_split_between_kinds_by_weight_bytes_or_as_asked():
    sel = methods.resolve("dip", SHAPE, 0.5, {"rho_in": 0.5})  # input units: 2 * 16 weights, down: 8
    budget = int(plan(SHAPE, sel, 10**9, Q8, 0).static_resident) + 2 * 192  # 192 bytes per layer for the cache
    mem = plan(SHAPE, sel, budget, Q8, 0)
    by_bytes = {k.name: k.capacity for k in mem.kinds}
    assert by_bytes == {"input": 192 * 256 // 384 // 32, "down": 192 * 128 // 384 // 8}  # 4 and 8
    even = {k.name: k.capacity for k in plan(SHAPE, sel, budget, Q8, 0, kind_shares=(1, 1)).kinds}
    assert even == {"input": 96 // 32, "down": 96 // 8}
    assert [k.capacity for k in plan(SHAPE, sel, budget, Q8, 0, cache=False).kinds] == [0, 0]


def test_a_budget_below_the_resident_part_and_a_wrong_kind_split_are_clear_errors():
    sel = methods.resolve("dip", SHAPE, 0.5)
    with pytest.raises(ConfigError, match="smaller than the model's resident part"):
        plan(SHAPE, sel, 100, Q8, 0)
    with pytest.raises(ConfigError, match="this method caches 2 unit kinds per layer"):
        plan(SHAPE, sel, 10**9, Q8, 0, kind_shares=(1.0,))


def test_the_cache_never_exceeds_the_mlp():
    mem = plan(SHAPE, methods.resolve("dense", SHAPE, 1.0), 10**9, Q8, 0)
    assert mem.kinds[0].capacity == 16 and mem.mlp_cache > mem.mlp_total
