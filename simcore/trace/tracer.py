"""The PyTorch tracer: run a dense model over text and record, per decoder layer and token, the
magnitudes the replay needs (DESIGN.md, "Trace").

Recording uses forward hooks on the model's own modules, so no model code is re-implemented:

* ``x``    = |input of ``layer.mlp``|            (MLP input after the post-attention norm, width d)
* ``h``    = |input of ``mlp.down_proj``|        (GLU activation ``act(W_g x) * W_u x``, width d_int)
* ``gate`` = |output of the MLP's activation|    (``act(W_g x)``; SiLU, or GELU-tanh for Gemma)
* ``up``   = |output of ``up_proj``|             (``W_u x``; Phi-3: second half of ``gate_up_proj``)

The MLP's parts are found through the one adapter, :class:`simcore.models.mlp.Mlp`.

Only the columns asked for are hooked (``columns``; x and h always). Each hook takes abs and
casts to float16 on the model's device (finite values beyond 65504 saturate there; NaN stays NaN
and the writer refuses it, naming layer, column and token); a window's records are moved to the
CPU once and written through :class:`~simcore.trace.format.TraceWriter`, layer by layer, then
dropped, so memory is bounded by one window. The dense perplexity over the traced windows
comes from the same forward pass's logits.
"""

from __future__ import annotations

import os
import queue
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simcore.errors import ConfigError
from simcore.models import DEFAULT_MODEL, Mlp, ModelShape, StaticParams, decoder_layers, load_model
from simcore.trace.format import VALUE_COLUMNS, TraceMeta, TraceWriter, check_out_dir, parse_columns
from simcore.trace.text import (
    EMBEDDED_SOURCE,
    bos_record,
    bos_token,
    load_text,
    model_inputs,
    split_windows,
    tokenize,
)

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
FP16_MAX = 65504.0


@dataclass
class TraceResult:
    """What a tracing run produced (also stored in the trace's ``extra``)."""

    path: Path
    n_tokens: int
    n_layers: int
    seconds: float
    tokens_per_s: float
    perplexity: float
    bytes: int


# --------------------------------------------------------------------------- model description


def _is_tied(model: Any) -> bool:
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    return out is not None and out.weight is emb.weight


def static_params(model: Any) -> StaticParams:
    """Count the parameters that stay resident in DRAM, from the model's real tensors.

    Attention = everything under ``self_attn``; embedding = the input embedding table; lm_head =
    the output projection (0 when tied to the embedding); norms = every parameter whose name
    contains "norm" outside the MLPs; other = the rest outside the MLPs."""
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    emb_ids = {id(p) for p in emb.parameters()}
    out_ids = {id(p) for p in out.parameters()} if out is not None else set()
    counts = {"attention": 0, "embedding": 0, "lm_head": 0, "norms": 0, "other": 0}
    for name, p in model.named_parameters():  # a tied lm_head.weight appears once, as the embedding
        parts = name.split(".")
        if id(p) in emb_ids:
            key = "embedding"
        elif id(p) in out_ids:
            key = "lm_head"
        elif "mlp" in parts:
            continue
        elif "self_attn" in parts or "attn" in parts:
            key = "attention"
        elif "norm" in name:
            key = "norms"
        else:
            key = "other"
        counts[key] += p.numel()
    return StaticParams(**counts)


def model_shape(model: Any, name: str) -> ModelShape:
    """ModelShape of a loaded causal LM: dimensions from its config and modules, static
    parameter counts from its tensors."""
    cfg = model.config
    layers = decoder_layers(model)
    mlp = Mlp.of(layers[0].mlp)
    d_int, d = mlp.d_int, mlp.d
    n_heads = int(cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or d // n_heads
    family = str(getattr(cfg, "model_type", "llama")).removesuffix("_text")  # Gemma 3's text model: gemma3_text
    if mlp.fused:
        family = "phi3" if family == "llama" else family
    return ModelShape(
        name=name,
        family=family,
        n_layers=len(layers),
        d=d,
        d_int=d_int,
        n_heads=n_heads,
        n_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or n_heads),
        head_dim=int(head_dim),
        vocab=int(model.get_input_embeddings().weight.shape[0]),
        tied=_is_tied(model),
        activation=mlp.activation(cfg),
        static_params=static_params(model),
    )


# --------------------------------------------------------------------------- hooks


def _magnitude(t: Any) -> Any:
    """|t| as float16 on t's device; values beyond the float16 range saturate at 65504, not inf."""
    import torch

    t = t.detach()
    if t.dtype == torch.float16:
        return t.abs()  # never in place: t is the model's own activation
    m = t.to(torch.float16)  # a new tensor: cast first, so abs and clamp touch half the bytes
    return m.abs_().clamp_(max=FP16_MAX)


class _Recorder:
    """Forward hooks on every decoder layer's MLP; ``take()`` returns one window's records.

    After a forward pass over a window of T tokens, ``take()`` returns, per layer, a dict
    column -> float16 numpy array of shape (T, width) for each of ``columns``, and forgets them.
    ``d_int`` is the GLU width of every layer (checked when the hooks are set)."""

    def __init__(self, layers: list[Any], d_int: int, columns: tuple[str, ...] = VALUE_COLUMNS):
        self.layers = layers
        self.d_int = d_int
        self.columns = tuple(columns)
        self.records: list[dict[str, Any]] = [{} for _ in layers]
        self.handles: list[Any] = []

    def __enter__(self) -> _Recorder:
        mlps = [Mlp.of(la.mlp) for la in self.layers]
        if any(m.d_int != self.d_int for m in mlps):
            raise ValueError(f"d_int {self.d_int} is not the GLU width of every layer ({[m.d_int for m in mlps]})")
        acts = [m.act for m in mlps]
        import torch.nn as nn

        # hook the activation module itself when each layer owns one (no recomputation); else
        # apply the layer's own activation to the gate projection's output
        own_act = all(isinstance(a, nn.Module) for a in acts) and len({id(a) for a in acts}) == len(acts)
        for mlp, rec, act in zip(mlps, self.records, acts):
            self._pre(mlp.module, rec, "x")
            self._pre(mlp.down, rec, "h")
            if "gate" not in self.columns:
                pass
            elif own_act:
                self._post(act, rec, "gate")
            else:
                module, take = mlp.gate_output()
                self._post(module, rec, "gate", act if take is None else lambda o, a=act, t=take: a(t(o)))
            if "up" in self.columns:
                module, take = mlp.up_output()
                self._post(module, rec, "up", take)
        return self

    def _pre(self, module: Any, rec: dict, col: str) -> None:
        def hook(_m: Any, args: tuple, kwargs: dict) -> None:
            rec[col] = _magnitude(args[0] if args else next(iter(kwargs.values())))

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def _post(self, module: Any, rec: dict, col: str, fn: Any = None) -> None:
        def hook(_m: Any, _args: tuple, out: Any) -> None:
            rec[col] = _magnitude(out if fn is None else fn(out))

        self.handles.append(module.register_forward_hook(hook))

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def take(self) -> list[dict[str, np.ndarray]]:
        import torch

        out: list[dict[str, np.ndarray]] = [{} for _ in self.layers]
        for c in self.columns:
            ts = [rec.pop(c, None) for rec in self.records]
            if any(t is None for t in ts):
                raise RuntimeError(f"tracer hook for {c!r} did not fire on every layer; is this a GLU model?")
            if ts[0].device.type != "cpu":
                ts = list(torch.stack(ts).cpu())  # one device->host copy per column and window
            for i, t in enumerate(ts):
                out[i][c] = t.reshape(-1, t.shape[-1]).numpy()
        return out


# --------------------------------------------------------------------------- tracing


class _Appender:
    """Writes windows through a TraceWriter on a background thread, so that encoding Parquet
    overlaps the next window's forward pass (pyarrow releases the GIL while it writes).

    At most one window waits in the queue while one is being written, so memory stays bounded
    by a few windows. An error in the thread is raised in the caller at the next ``put`` or at
    ``flush``; when the caller fails (Ctrl-C included), pending windows are dropped and the
    thread is joined before the TraceWriter removes its temporary directory."""

    def __init__(self, writer: TraceWriter):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="simcore-trace-writer", daemon=True)

    def __enter__(self) -> _Appender:
        self.thread.start()
        return self

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # failed: drain until the sentinel
            ids, positions, layers = item
            try:
                for i, values in enumerate(layers):
                    self.writer.append(i, values, ids, positions)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = e

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, ids: np.ndarray, positions: np.ndarray, layers: list[dict[str, np.ndarray]]) -> None:
        """Queue one window: token ids (T,), positions (T,), per layer column -> (T, width) arrays."""
        self._check()
        self.queue.put((ids, positions, layers))

    def flush(self) -> None:
        """Wait until every queued window is written; raise the thread's error if there was one."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        self._check()

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.thread.is_alive():
            while True:  # drop what has not been started; the current append finishes
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
            self.queue.put(None)
            self.thread.join()
        if exc_type is None:
            self._check()


def _torch_dtype(dtype: str) -> Any:
    import torch

    key = DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if key is None:
        raise ConfigError(f"--dtype {dtype!r} is not supported; choose float32, bfloat16 or float16")
    return getattr(torch, key)


def _check_device(torch_device: str) -> str:
    import torch

    if torch_device == "cpu":
        return torch_device
    if torch_device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--torch-device cuda: no CUDA device is available to torch; use --torch-device cpu")
        return torch_device
    raise ConfigError(f"--torch-device {torch_device!r} is not supported; choose cpu or cuda")


def default_out(name: str) -> Path:
    """``traces/<alias>`` under the current directory (a path's stem, or owner--name for an HF id)."""
    p = Path(name)
    stem = p.stem if (p.exists() or p.suffix == ".gguf") else name.replace("/", "--")
    return Path("traces") / stem


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def trace_windows(
    model: Any,
    windows: list[np.ndarray],
    out: str | os.PathLike,
    *,
    name: str,
    source: str,
    seq_len: int,
    tokenizer_name: str | None = None,
    progress: bool = True,
    extra: dict | None = None,
    columns: tuple[str, ...] = VALUE_COLUMNS,
) -> TraceResult:
    """Trace ``model`` over token windows and write the trace to ``out`` (atomically).

    Args:
        model: a ``transformers`` causal LM with GLU MLPs (``model.model.layers[i].mlp``).
        windows: int token-id arrays, each of shape (T_w,) with T_w <= seq_len; each is one
            forward pass (positions restart at 0). A :class:`~simcore.trace.text.Windows` with a
            ``bos`` feeds BOS before each window that does not start with it; that position is not
            recorded (one row per text token) and its successor is scored
            (:func:`~simcore.trace.text.model_inputs`); ``extra`` then says so (``bos_per_window``).
        out: trace directory (replaced if it exists, only once the new trace is complete).
        name, source, seq_len, tokenizer_name: metadata.
        progress: show a tqdm bar with tokens/s.
        extra: more producer details for ``TraceMeta.extra``.
        columns: magnitude columns to record (x and h required; gate, up for those methods).

    Returns the TraceResult; dense perplexity, tokens/s, dtype and versions are also stored in
    the trace's ``extra``. Interrupting (Ctrl-C) leaves ``out`` as it was.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    columns = parse_columns(columns)
    layers = decoder_layers(model)
    shape = model_shape(model, name)
    n_tokens = int(sum(len(w) for w in windows))
    if n_tokens <= 0:
        raise ConfigError("nothing to trace: no tokens; pass --tokens N with N > 0")
    device = next(model.parameters()).device
    meta = TraceMeta(
        model=shape,
        tokenizer=tokenizer_name,
        source=source,
        seq_len=seq_len,
        columns=list(columns),
        command=shlex.join(sys.argv),
        extra={
            "model_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "torch_version": torch.__version__,
            "torch_device": str(device),
            **bos_record(windows),
            **(extra or {}),
        },
    )
    out = Path(out)
    nll, n_pred = 0.0, 0
    start = time.perf_counter()
    with (
        TraceWriter(out, meta) as writer,
        _Recorder(layers, shape.d_int, columns) as rec,
        _Appender(writer) as appender,
        torch.inference_mode(),
        tqdm(
            total=n_tokens, unit="tok", unit_scale=True, disable=not progress, desc=f"trace {name}", leave=False
        ) as bar,
    ):
        for fed, p in model_inputs(windows):  # p: the BOS fed before the window (0 or 1 position)
            ids_t = torch.from_numpy(fed).to(device)
            logits = model(input_ids=ids_t[None], use_cache=False).logits[0]
            if len(fed) > 1:
                nll += float(F.cross_entropy(logits[:-1].float(), ids_t[1:], reduction="sum"))
                n_pred += len(fed) - 1
            del logits
            layer_values = rec.take()
            if p:
                layer_values = [{c: v[p:] for c, v in lv.items()} for lv in layer_values]
            ids_np = fed[p:]
            appender.put(ids_np, np.arange(len(ids_np), dtype=np.int32), layer_values)
            bar.update(len(ids_np))
        appender.flush()
        seconds = time.perf_counter() - start
        ppl = float(np.exp(nll / n_pred)) if n_pred else float("nan")
        writer.meta.extra.update(
            perplexity=ppl if np.isfinite(ppl) else None,  # trace.json is strict JSON: no NaN
            perplexity_tokens=n_pred,
            seconds=round(seconds, 3),
            tokens_per_s=round(n_tokens / seconds, 2),
        )
    return TraceResult(
        path=out,
        n_tokens=n_tokens,
        n_layers=len(layers),
        seconds=seconds,
        tokens_per_s=n_tokens / seconds,
        perplexity=ppl,
        bytes=_dir_bytes(out),
    )


def trace_model(
    model: str | Any = DEFAULT_MODEL,
    model_path: str | os.PathLike | None = None,
    text: str | os.PathLike | None = None,
    dataset: str | None = None,
    tokens: int = 2048,
    seq_len: int = 256,
    out: str | os.PathLike | None = None,
    torch_device: str = "cpu",
    dtype: str = "float32",
    allow_download: bool = False,
    progress: bool = True,
    columns: str | tuple[str, ...] = VALUE_COLUMNS,
    *,
    tokenizer: Any = None,
    token_ids: np.ndarray | None = None,
    offset: int = 0,
    lora: str | os.PathLike | None = None,
    lora_merge: bool = True,
) -> Path:
    """Trace a model over text and write the trace directory; returns its path.

    Args:
        model: alias (``smollm2-135m``, ``mistral7b``, ``llama3-8b``, ``phi3-mini``,
            ``phi3-medium``, ``gemma3-270m``), Hugging Face id, local path, or an already-loaded
            ``transformers`` causal LM (then give ``tokenizer`` or ``token_ids``; it is traced where it is).
        model_path: local model directory or ``.gguf`` file (overrides where ``model`` is looked for);
            the trace then names the model after that file (``registry.path_model_name``), and its
            default directory is ``traces/<file stem>``.
        text: a UTF-8 text file; dataset: "wikitext2" or a local copy of it. Neither: the
            embedded ``pydoc_data.topics`` text.
        tokens: tokens to trace (> 0); seq_len: tokens per forward pass (window).
        out: trace directory; default ``traces/<alias>`` (``traces/<file stem>`` with ``model_path``).
        torch_device: "cpu" or "cuda"; dtype: "float32", "bfloat16" or "float16" weights.
        allow_download: allow fetching a model or data set that is not on the local disk.
        progress: show progress bars (tracing, and loading the model: transformers' and the GGUF
            loader's).
        columns: magnitude columns to record, e.g. "x,h" (x and h required; gate for the gate and
            cats methods, up for up); default all four.
        tokenizer: tokenizer for a model object.
        token_ids: int array (N,), traced instead of text (its first ``tokens`` ids).
        offset: tokens of the text to skip first (keeps calibration and evaluation text disjoint).
        lora, lora_merge: a ``simcore finetune`` output directory whose adapters are applied before
            tracing (the DIP paper's DIP+LoRA, CATS+LoRA), merged into the weights or beside them; the
            trace records them (``extra.lora``), and replay refuses other methods' masks on it and counts
            unmerged adapters as resident (``simcore.finetune.adapters``). Their training tokens must not
            be the traced ones.

    Raises ConfigError (a SimcoreError) for anything the user can fix; every setting is checked
    before the model loads.
    """
    if tokens is None or tokens <= 0:
        raise ConfigError(f"--tokens must be a positive number of tokens, got {tokens}")
    if seq_len is None or seq_len <= 0:
        raise ConfigError(f"--seq-len must be a positive number of tokens, got {seq_len}")
    if offset < 0:
        raise ConfigError(f"the text offset must be >= 0 tokens, got {offset}")
    from simcore.calibration import text_sha256

    columns = parse_columns(columns)
    if out is None and isinstance(model, str):
        out = default_out(str(model_path) if model_path is not None else model)  # not the --model default's
    if out is not None:
        check_out_dir(out)
    extra: dict[str, Any] = {"offset": offset}
    src = load_text(text, dataset) if token_ids is None else None  # a bad text fails before the model loads
    lora_data = None
    if lora is not None:
        from simcore.calibration import TextUse
        from simcore.finetune.adapters import check_for_trace

        sha = text_sha256(src.text) if src is not None else None
        use = TextUse(src.name if src is not None else "token ids", sha, offset, offset + tokens)
        lora_data = check_for_trace(lora, use)  # before the model loads; the model is checked once loaded
    if isinstance(model, str):
        torch_device = _check_device(torch_device)
        torch_dtype = _torch_dtype(dtype)
        loaded = load_model(model, model_path, torch_device, torch_dtype, allow_download, progress)
        lm, tok, name, tok_name = loaded.model, loaded.tokenizer, loaded.name, loaded.tokenizer_name
        extra["model_location"] = loaded.location
        if loaded.location.endswith(".gguf"):
            extra["weights"] = "GGUF dequantized to float by transformers"
    else:
        lm, tok = model, tokenizer
        name = str(getattr(model.config, "name_or_path", "") or model.config.model_type)
        tok_name = getattr(tok, "name_or_path", None) if tok is not None else None
        decoder_layers(lm)
    if lora_data is not None:
        from simcore.finetune.adapters import apply_lora, check_model, trace_record

        check_model(lora, lora_data, name)
        lm, n_weights = apply_lora(lm, lora, lora_merge)
        extra["lora"] = trace_record(lora, lora_data, lora_merge, n_weights)
    if src is None:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)[offset : offset + tokens]
        if len(ids) < tokens:
            raise ConfigError(f"only {len(ids)} token ids given after offset {offset}, fewer than --tokens {tokens}")
        source = "token ids"
    else:
        if tok is None:
            raise ConfigError("a model object needs a tokenizer (or token_ids) to trace text")
        ids = tokenize(tok, src.text, tokens, offset)
        source = src.name
        extra["text_sha256"] = text_sha256(src.text)  # calibrations of this text find its traces (simcore.calibration)
    if source == EMBEDDED_SOURCE:
        extra["text"] = "Python standard library pydoc_data.topics, values joined in sorted-key order"
    try:
        import transformers

        extra["transformers_version"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    out = Path(out) if out is not None else default_out(name)
    result = trace_windows(
        lm,
        split_windows(ids, seq_len, bos_token(tok)),  # BOS before every window, when the tokenizer adds one
        out,
        name=name,
        source=source,
        seq_len=seq_len,
        tokenizer_name=tok_name,
        progress=progress,
        extra=extra,
        columns=columns,
    )
    return result.path
