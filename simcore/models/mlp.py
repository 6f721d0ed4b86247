"""One adapter over the GLU MLP of a Hugging Face decoder layer, used by the tracer, eval and prune:
``Mlp.of(layer.mlp)`` reads the module through the layout its family declares (``MlpLayout``:
separate ``gate_proj`` / ``up_proj`` or Phi-3's fused ``gate_up_proj``, then ``down_proj``) and gives

* the parts: ``act`` (SiLU for SwiGLU, GELU-tanh for GeGLU: the module's own), ``down`` (whose input
  is the GLU activation h), widths ``d`` and ``d_int``;
* compute: ``gate_up(x)`` = (W_g x, W_u x) before the activation;
* hook points: ``gate_output()`` / ``up_output()`` = the module whose forward output holds W_g x / W_u x
  and how to take it out (a fused output's first or second half);
* weights: ``weights()`` = (W_g, W_u, W_d), views; ``matrices()`` = the stored matrices by role, for
  static pruning.

Roles are spelled as Llama's attribute names: ``gate_proj``, ``up_proj``, ``gate_up_proj`` (fused,
rows [0, d_int) gate, [d_int, 2 d_int) up) and ``down_proj``. torch is only touched through the
module's own tensors and calls, so importing this does not import torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from simcore.errors import ConfigError
from simcore.models.base import MlpLayout
from simcore.models.families import layouts

GATE, UP, GATE_UP, DOWN = "gate_proj", "up_proj", "gate_up_proj", "down_proj"
"""The roles of the MLP matrices (Llama's attribute names)."""


class Matrix(NamedTuple):
    """One stored MLP matrix: ``name`` its attribute on the MLP module, ``role`` (GATE, UP, GATE_UP or
    DOWN), ``weight`` the Parameter of shape (out_features, in_features)."""

    name: str
    role: str
    weight: Any


def layout_of(module: Any) -> MlpLayout | None:
    """The family layout that ``module`` (a decoder layer's ``mlp``) matches, None when it is no GLU MLP
    any family declares."""
    for layout in layouts():
        if all(hasattr(module, p) for p in layout.parts) and any(hasattr(module, a) for a in layout.act):
            return layout
    return None


@dataclass(frozen=True)
class Mlp:
    """A decoder layer's GLU MLP ``module`` seen through its family's ``layout``."""

    module: Any
    layout: MlpLayout

    @classmethod
    def of(cls, module: Any) -> Mlp:
        """The adapter of ``module``; ConfigError when it is not a GLU MLP of a known layout."""
        layout = layout_of(module)
        if layout is None:
            raise ConfigError(
                f"{type(module).__name__} is not a GLU MLP simcore knows (gate/up projections, then down); "
                "a new layout is declared by its family file in simcore/models/"
            )
        return cls(module, layout)

    @property
    def fused(self) -> bool:
        """Whether gate and up are one fused projection (Phi-3)."""
        return self.layout.fused

    @property
    def act(self) -> Callable[[Any], Any]:
        """The module's own activation (SiLU or GELU-tanh), applied to W_g x."""
        return next(getattr(self.module, a) for a in self.layout.act if hasattr(self.module, a))

    @property
    def down(self) -> Any:
        """The down projection module W_d; its input is the GLU activation h = act(W_g x) * W_u x."""
        return getattr(self.module, self.layout.down)

    @property
    def d_int(self) -> int:
        """The GLU width (the down projection's input features)."""
        return int(self.down.weight.shape[1])

    @property
    def d(self) -> int:
        """The hidden size (the MLP's input and output width)."""
        return int(self.down.weight.shape[0])

    def gate_up(self, x: Any) -> tuple[Any, Any]:
        """(W_g x, W_u x) of input ``x`` (..., d), each (..., d_int), the gate before the activation."""
        if self.layout.gate_up is not None:
            return getattr(self.module, self.layout.gate_up)(x).chunk(2, dim=-1)
        return getattr(self.module, str(self.layout.gate))(x), getattr(self.module, str(self.layout.up))(x)

    def gate_output(self) -> tuple[Any, Callable[[Any], Any] | None]:
        """(module, take): the submodule whose forward output holds W_g x, and the function that takes
        W_g x out of that output (None: the output is W_g x)."""
        if self.layout.gate_up is not None:
            n = self.d_int
            return getattr(self.module, self.layout.gate_up), lambda o: o[..., :n]
        return getattr(self.module, str(self.layout.gate)), None

    def up_output(self) -> tuple[Any, Callable[[Any], Any] | None]:
        """(module, take) as ``gate_output``, for W_u x."""
        if self.layout.gate_up is not None:
            n = self.d_int
            return getattr(self.module, self.layout.gate_up), lambda o: o[..., n:]
        return getattr(self.module, str(self.layout.up)), None

    def weights(self) -> tuple[Any, Any, Any]:
        """(W_g, W_u, W_d): W_g and W_u (d_int, d), W_d (d, d_int); views of the stored weights (a fused
        matrix's halves)."""
        if self.layout.gate_up is not None:
            w = getattr(self.module, self.layout.gate_up).weight
            return w[: self.d_int], w[self.d_int :], self.down.weight
        m = self.module
        return getattr(m, str(self.layout.gate)).weight, getattr(m, str(self.layout.up)).weight, self.down.weight

    def matrices(self) -> list[Matrix]:
        """The stored matrices in layout order: gate, up, down; or the fused gate_up, down."""
        lay = self.layout
        roles = (GATE_UP, DOWN) if lay.fused else (GATE, UP, DOWN)
        return [Matrix(name, role, getattr(self.module, name).weight) for name, role in zip(lay.parts, roles)]

    def activation(self, config: Any = None) -> str:
        """ "silu" (SwiGLU) or "gelu" (GeGLU), from the activation module or the model ``config``;
        ConfigError for any other."""
        names = [
            type(self.act).__name__.lower(),
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
