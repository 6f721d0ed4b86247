"""Text sources for tracing and evaluation, and their split into token windows.

Three sources (DESIGN.md, "Models that matter"):

* the embedded default, the standard library's ``pydoc_data.topics`` (the language
  reference's help topics, ~65 k words of English prose and code, on every machine with Python);
* ``--text FILE``: any UTF-8 text file;
* ``--dataset wikitext2``: WikiText-2 (raw, test split) through ``datasets`` from the local
  cache only, or ``--dataset PATH`` to a local copy of it (e.g. ``wiki.test.raw``).

Nothing here downloads: a data set that is not cached is an error that says how to get it.
Token windows are non-overlapping runs of ``seq_len`` tokens (the last may be shorter);
``offset`` skips the first tokens so that calibration and evaluation text stay disjoint.

BOS per window. A tokenizer that prepends a BOS token (Gemma's) puts it only at token 0 of the text,
so every later window, and every window after an offset, would start without it; models trained with
BOS at the start of every sequence (it is Gemma's attention sink) then see text off their training
distribution (Gemma-3-270M: perplexity 50 instead of 25 in windows of 256). :class:`Windows` carries
the tokenizer's BOS id (:func:`bos_token`), and :func:`model_inputs` feeds each window that does not
start with BOS with BOS prepended, as extra context that belongs to no text token: everything that
runs a model over windows (trace, eval, calibrate, prune) goes through it and drops the prefix
position from what it records, masks, caches or scores. Perplexity scores every text token that has
at least one token of context, so a prefixed window's first text token is scored (predicted from
BOS); a window that is fed as it is scores its tokens after the first, as before. A tokenizer
without BOS (SmolLM2's) changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simcore.errors import ConfigError

EMBEDDED_SOURCE = "pydoc_data.topics"
DATASETS = ("wikitext2",)


@dataclass(frozen=True)
class TextSource:
    """A named text: ``name`` goes into the trace metadata as its ``source``."""

    name: str
    text: str


def embedded_text() -> str:
    """The standard library's ``pydoc_data.topics`` values joined in sorted-key order (~465 k chars)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _read_file(path: str | os.PathLike, flag: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{flag} {p}: no such file; pass the path of an existing UTF-8 text file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{flag} {p}: not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{flag} {p}: cannot read it ({e.strerror}); check the path and its permissions") from None


def _wikitext2_from_cache() -> str:
    """WikiText-2 raw test split from the local ``datasets`` cache, joined as published
    perplexity evaluations do (``"\\n\\n".join(rows)``)."""
    how = (
        "pass --dataset PATH to a local copy of wiki.test.raw, or cache it once with "
        "`python -c \"import datasets; datasets.load_dataset('wikitext', 'wikitext-2-raw-v1', split='test')\"`"
    )
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"--dataset wikitext2 needs the `datasets` package (pip install datasets); or {how}"
        ) from None
    for attr in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):  # already imported before we set the environment
        if hasattr(datasets.config, attr):
            setattr(datasets.config, attr, True)
    try:
        ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError ...)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"WikiText-2 is not in the local datasets cache ({msg}); {how}") from None
    return "\n\n".join(ds["text"])


def load_text(text: str | os.PathLike | None = None, dataset: str | os.PathLike | None = None) -> TextSource:
    """Resolve the text source: ``text`` (a file), ``dataset`` ("wikitext2" or a local file),
    or the embedded default when both are None. Raises ConfigError for a missing file, an
    unknown or uncached data set, or both options at once."""
    if text is not None and dataset is not None:
        raise ConfigError("give either --text FILE or --dataset NAME, not both")
    if text is not None:
        return TextSource(name=f"file:{Path(text)}", text=_read_file(text, "--text"))
    if dataset is not None:
        key = str(dataset)
        if key.lower().replace("-", "") in DATASETS:
            return TextSource(name="wikitext2", text=_wikitext2_from_cache())
        if Path(key).exists():
            return TextSource(name=f"wikitext2:{Path(key)}", text=_read_file(key, "--dataset"))
        raise ConfigError(
            f"unknown data set {key!r}: use --dataset wikitext2 (from the local datasets cache), "
            "--dataset PATH to a local wiki.test.raw, or --text FILE for any text"
        )
    return TextSource(name=EMBEDDED_SOURCE, text=embedded_text())


def tokenize(tokenizer: Any, text: str, n_tokens: int, offset: int = 0) -> np.ndarray:
    """Token ids ``offset .. offset + n_tokens - 1`` of ``text`` under ``tokenizer``.

    Only a prefix of the text long enough for the request is tokenized (a long data set is
    not tokenized whole); the prefix is grown until its tokenization is longer than needed,
    so the tokens returned are those of the full text.

    Args:
        tokenizer: a Hugging Face tokenizer (called as ``tokenizer(text)["input_ids"]``; the
            tokenizer's own special tokens, e.g. a leading BOS, are kept).
        n_tokens: tokens wanted, > 0.
        offset: tokens to skip first, >= 0.

    Returns:
        int64 array of shape (n_tokens,). Raises ConfigError when the text is too short.
    """
    if n_tokens <= 0:
        raise ConfigError(f"--tokens must be a positive number of tokens, got {n_tokens}")
    if offset < 0:
        raise ConfigError(f"token offset must be >= 0, got {offset}")
    need = offset + n_tokens
    margin = 16  # tokens at the cut may merge differently than in the full text: keep them out
    chars = 8 * (need + margin) + 256
    while True:
        whole = chars >= len(text)
        ids = tokenizer(text if whole else text[:chars])["input_ids"]
        if whole or len(ids) >= need + margin:
            break
        chars *= 2
    if len(ids) < need:
        raise ConfigError(
            f"the text has only {len(ids)} tokens, fewer than the {need} asked for "
            f"({offset} skipped + {n_tokens}); ask for fewer --tokens or give a longer text"
        )
    return np.asarray(ids[offset:need], dtype=np.int64)


class Windows(list):
    """Token windows of a text: a list of int64 arrays (T_w,) of its tokens, as :func:`split_windows`
    cuts them, and ``bos``, the BOS id fed before each window that does not start with it (None: the
    tokenizer prepends no BOS, windows are fed as they are). Feed them through :func:`model_inputs`.

    A plain list (slice, comprehension) drops ``bos``: it is then fed without a prefix, as before."""

    def __init__(self, windows: Iterable[np.ndarray] = (), bos: int | None = None):
        super().__init__(windows)
        self.bos = None if bos is None else int(bos)


def bos_token(tokenizer: Any) -> int | None:
    """The id of the BOS token ``tokenizer`` puts before a text, or None when it puts none.

    Decided from the tokenizer itself: its ``bos_token_id`` is that BOS when tokenizing a short text
    gives ids starting with it (SmolLM2 has a ``bos_token_id`` but does not add it; a tokenizer with no
    ``bos_token_id``, e.g. a test's toy callable, adds none)."""
    bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
    if bos is None:
        return None
    ids = tokenizer("Hello")["input_ids"]
    return int(bos) if len(ids) and int(ids[0]) == int(bos) else None


def prefix_len(window: np.ndarray, bos: int | None) -> int:
    """Tokens fed before ``window`` (shape (T_w,)): 1 (the BOS ``bos``) when it does not start with it, else 0."""
    return int(bos is not None and len(window) > 0 and int(window[0]) != bos)


def model_inputs(windows: Iterable[np.ndarray]) -> list[tuple[np.ndarray, int]]:
    """What each window is fed to the model as: (ids int64 (P + T_w,), P), P prefix tokens (0 or 1, the
    BOS of a :class:`Windows`' ``bos``) before the window's T_w text tokens. Row P + k of the model's
    activations and logits is text token k. A plain list of windows (no ``bos``) is fed as it is (P = 0)."""
    bos = getattr(windows, "bos", None)
    out = []
    for w in windows:
        w = np.asarray(w, dtype=np.int64)
        p = prefix_len(w, bos)
        out.append((np.concatenate([np.array([bos], np.int64), w]) if p else w, p))
    return out


def bos_record(windows: Iterable[np.ndarray]) -> dict[str, Any]:
    """What a trace's ``extra`` and eval's text info say about BOS: ``bos_per_window`` (every window is
    fed starting with BOS), ``bos_token_id`` and ``bos_prefixed_windows`` (how many had it prepended);
    empty without a BOS (as before)."""
    bos = getattr(windows, "bos", None)
    if bos is None:
        return {}
    n = sum(prefix_len(w, bos) for w in windows)
    return {"bos_per_window": True, "bos_token_id": bos, "bos_prefixed_windows": n}


def split_windows(token_ids: np.ndarray, seq_len: int, bos: int | None = None) -> Windows:
    """Split ``token_ids`` (shape (N,)) into consecutive windows of ``seq_len`` tokens; the
    last window holds the remainder and may be shorter. ``bos``: the tokenizer's BOS id
    (:func:`bos_token`), fed before each window that does not start with it (:func:`model_inputs`)."""
    if seq_len <= 0:
        raise ConfigError(f"--seq-len must be a positive number of tokens, got {seq_len}")
    return Windows((token_ids[i : i + seq_len] for i in range(0, len(token_ids), seq_len)), bos)


def token_windows(tokenizer: Any, text: str, n_tokens: int, seq_len: int, offset: int = 0) -> Windows:
    """Tokenize ``text``, skip ``offset`` tokens, take ``n_tokens`` and split them into windows
    of ``seq_len`` (int64 arrays; the last one may be shorter), carrying the tokenizer's BOS
    (:func:`bos_token`; feed them through :func:`model_inputs`)."""
    if seq_len <= 0:
        raise ConfigError(f"--seq-len must be a positive number of tokens, got {seq_len}")
    return split_windows(tokenize(tokenizer, text, n_tokens, offset), seq_len, bos_token(tokenizer))
