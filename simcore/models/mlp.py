"""One adapter over the MLP of a Hugging Face decoder layer, used by the tracer, eval and prune: which
projections it has (separate ``gate_proj`` / ``up_proj``, or Phi-3's fused ``gate_up_proj``; then
``down_proj``), its activation (SiLU for SwiGLU, GELU for GeGLU), and the gate and up outputs of an
input. torch is only touched through the module's own calls."""

from __future__ import annotations

from typing import Any

from simcore.errors import ConfigError

SEPARATE = ("gate_proj", "up_proj", "down_proj")
FUSED = ("gate_up_proj", "down_proj")


def glu_parts(mlp: Any) -> tuple[str, ...] | None:
    """Names of the GLU projections of one MLP module: ``SEPARATE`` or ``FUSED`` (Phi-3); None when the
    MLP is not a GLU."""
    if all(hasattr(mlp, a) for a in SEPARATE):
        return SEPARATE
    if all(hasattr(mlp, a) for a in FUSED):
        return FUSED
    return None


def is_fused(mlp: Any) -> bool:
    """Whether the gate and up projections are one fused ``gate_up_proj`` (Phi-3)."""
    return glu_parts(mlp) == FUSED


def act_fn(mlp: Any) -> Any:
    """The MLP's activation module (``act_fn``, or ``activation_fn`` in Phi-3)."""
    return getattr(mlp, "act_fn", None) or getattr(mlp, "activation_fn", None)


def activation_name(mlp: Any, config: Any) -> str:
    """ "silu" (SwiGLU) or "gelu" (GeGLU), from the activation module or the model config; ConfigError
    for any other."""
    names = [
        type(act_fn(mlp)).__name__.lower(),
        str(getattr(config, "hidden_act", "")).lower(),
        str(getattr(config, "hidden_activation", "") or "").lower(),
    ]
    for n in names:
        if "gelu" in n:
            return "gelu"
        if "silu" in n or "swish" in n:
            return "silu"
    raise ConfigError(
        f"MLP activation {names[0]!r} is neither SiLU nor GELU; simcore models SwiGLU and GeGLU MLPs only"
    )


def gate_up(mlp: Any, x: Any) -> tuple[Any, Any]:
    """The gate projection W_g x (before the activation) and the up projection W_u x of input ``x``."""
    if is_fused(mlp):
        return mlp.gate_up_proj(x).chunk(2, dim=-1)
    return mlp.gate_proj(x), mlp.up_proj(x)


def d_int_of(mlp: Any) -> int:
    """The GLU width (``down_proj``'s input features)."""
    return int(mlp.down_proj.weight.shape[1])
