"""Perplexity with the sparsity masks and the DRAM cache in the loop (issue #4).

Every MLP of the real model is run with its method's masks: the masks come from the replay engine's
own kernels (KindSim, one per layer and unit kind, fed float16 magnitudes as the tracer records
them), so ``eval`` and ``replay`` share one implementation of masking and caching. dip ranks its
down channels by |h~|, the GLU activation computed from the pruned input, as the method defines.
For dip-ca the cache state of token t depends only on earlier tokens' masks, so a window is
processed layer by layer with the sequential cache pass in between: no token-by-token forward.
The cache metrics and tokens/s of the run that was scored come out as a ReplayResult.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from simcore.calibration import TextUse, provenance, text_sha256
from simcore.engine.replay import flash_read_specs, summarise_layers
from simcore.engine.result import ReplayResult
from simcore.engine.settings import ReplayConfig, config_of, resolve_setting
from simcore.engine.sim import KindSim
from simcore.errors import ConfigError
from simcore.models import Mlp

FP16_MAX = 65504.0


@dataclass
class EvalResult:
    """Perplexity of the masked model over the evaluation windows, and the exact cache metrics."""

    perplexity: float
    tokens_scored: int
    text: dict
    replay: ReplayResult
    seconds: float
    masks: list | None = None
    """With ``record_masks``: per layer, per kind, the bool (T, U) masks applied (None for kinds that use
    every unit)."""

    def to_dict(self) -> dict:
        return {
            "perplexity": self.perplexity,
            "tokens_scored": self.tokens_scored,
            "text": self.text,
            "seconds": self.seconds,
            **self.replay.to_dict(),
        }


def _f16(t) -> np.ndarray:
    """|t| as float16 numpy (T, width), clamped to the float16 range, as the tracer records it."""
    import torch

    return t.detach().to(torch.float32).abs().clamp_(max=FP16_MAX).to(torch.float16).cpu().numpy()


class MaskedMLP:
    """Replaces one MLP's forward: masks from the layer's KindSims, applied to the real weights.

    The masks are computed from detached magnitudes (not differentiable); the values they keep carry the
    gradient, so ``simcore finetune`` trains adapters through this same forward. Masks go to the
    activations' device."""

    def __init__(self, mlp: Any, sims: list[KindSim], kinds, state: dict, record: list | None, layer: int = 0):
        self.mlp, self.sims, self.kinds, self.state, self.record = Mlp.of(mlp), sims, kinds, state, record
        self.layer = layer  # the decoder layer, for kinds whose scores are computed per layer (KindSpec.scores)

    def __call__(self, x):
        """``x`` (B, P + T_w, d); its first ``state["prefix"]`` positions P (a BOS fed before the window,
        ``simcore.trace.text.model_inputs``) go through the dense MLP, unseen by the masks and the cache."""
        p = self.state.get("prefix", 0)
        if not p:
            return self._masked(x)
        import torch

        g, u = self.mlp.gate_up(x[:, :p])
        return torch.cat([self.mlp.down(self.mlp.act(g) * u), self._masked(x[:, p:])], dim=1)

    def _masked(self, x):
        import torch

        t0 = self.state["t0"]
        xs = x.reshape(-1, x.shape[-1])
        T_w = xs.shape[0]
        names = [k.name for k in self.kinds]
        if "input" in names:  # dip / dip-ca: prune input channels first
            i = names.index("input")
            mask = np.zeros((T_w, self.kinds[i].n_units), np.bool_)
            self.sims[i].feed(_f16(xs), None, t0, masks=mask)
            xs = xs * torch.from_numpy(mask).to(device=xs.device, dtype=xs.dtype)
            if self.record is not None:
                self.record[i].append(mask)
        g, u = self.mlp.gate_up(xs)
        a = self.mlp.act(g)
        h = a * u
        source = {"h": h, "gate": a, "up": u, "x": xs}
        for kind, sim in zip(self.kinds, self.sims):
            if kind.name == "input":
                continue
            if kind.mode == "all":
                sim.feed(np.empty((T_w, 0), np.float16), None, t0)
                continue
            mask = np.zeros((T_w, kind.n_units), np.bool_)
            scores = kind.scores(self.layer, _f16(source[kind.score]))
            sim.feed(scores, _f16(h) if kind.mass else None, t0, masks=mask)
            h = h * torch.from_numpy(mask).to(device=h.device, dtype=h.dtype)
            if self.record is not None:
                self.record[names.index(kind.name)].append(mask)
        return self.mlp.down(h).reshape(*x.shape[:-1], -1)


def _finished(sim: KindSim) -> tuple:
    """A finished KindSim's (used, hits (1, T), kept, tot), as ``summarise_layers`` takes them."""
    used, hits, kept, tot = sim.finish()
    return used, hits[None], kept, tot


def _reads_of(sim: KindSim):
    """A KindSim's Flash requests, bytes read and seconds per token under the curve model, or None."""
    r = sim.reads
    return None if r is None else (r.requests, r.bytes_read, r.seconds)


def cats_thresholds(model, layers, windows, fraction: float, threshold) -> list[float]:
    """Per layer, the method's ``threshold`` (e.g. the |act(W_g x)| value above which ``fraction`` of
    the calibration values lie, ``methods.cats.threshold``) over the calibration windows (their text
    tokens: a BOS fed before a window, ``simcore.trace.text.model_inputs``, is left out)."""
    import torch

    from simcore.trace.text import model_inputs

    values: list[list[np.ndarray]] = [[] for _ in layers]
    handles = []
    prefix = [0]  # the BOS positions before the current window
    for i, layer in enumerate(layers):
        mlp = Mlp.of(layer.mlp)

        def hook(_m, args, _out, i=i, mlp=mlp):
            x = args[0][:, prefix[0] :].reshape(-1, args[0].shape[-1])
            g = mlp.gate_up(x)[0]
            values[i].append(_f16(mlp.act(g)).astype(np.float64).ravel())

        handles.append(mlp.module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for fed, prefix[0] in model_inputs(windows):
                model(input_ids=torch.from_numpy(fed)[None], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [threshold(np.concatenate(v), fraction) for v in values]


def check_counts(tokens: int, seq_len: int, offset: int, calib_tokens: int, calib_offset: int) -> None:
    """The token counts and ranges of an evaluation: enough tokens to score, calibration disjoint."""
    if tokens < 2:
        raise ConfigError(
            f"--tokens {tokens} is too few to score: perplexity needs at least 2 tokens "
            "(the first token of a window is only context)"
        )
    if seq_len < 2:
        raise ConfigError(f"--seq-len {seq_len} is too short: a window needs at least 2 tokens to predict one")
    for flag, v in (("--offset", offset), ("--calib-tokens", calib_tokens), ("--calib-offset", calib_offset)):
        if v < 0:
            raise ConfigError(f"{flag} must not be negative, got {v}")


def check_calibration_overlap(tokens: int, offset: int, calib_tokens: int, calib_offset: int) -> None:
    """A method calibrated on the evaluation text (cats' thresholds) must calibrate on other tokens of it."""
    if offset < calib_offset + calib_tokens and calib_offset < offset + tokens:
        raise ConfigError(
            f"evaluation tokens [{offset}, {offset + tokens}) overlap calibration tokens "
            f"[{calib_offset}, {calib_offset + calib_tokens}); move --offset or --calib-offset"
        )


def _thresholded(selection) -> bool:
    return any(k.mode == "threshold" for k in selection.kinds)


def _check_pruned(pruned: str, use: TextUse) -> None:
    """A ``simcore prune`` output that exists and was not calibrated on the evaluated tokens of this text
    (``use``; an output calibrated on another text, by its recorded hash or else its source name, is fine)."""
    import json
    from pathlib import Path

    from simcore.memory import pruned_cost

    pruned_cost(pruned)  # a readable manifest
    cal = json.loads((Path(pruned) / "manifest.json").read_text()).get("calibration") or {}
    a, b = cal.get("tokens", [0, 0])
    offset, tokens = use.first, use.end - use.first
    sha = cal.get("text_sha256")
    same = sha == use.sha256 if sha is not None else cal.get("source") in (None, use.name)
    if same and a < offset + tokens and offset < b:
        raise ConfigError(
            f"--pruned {pruned} was calibrated on tokens [{a}, {b}), which overlap the evaluation tokens "
            f"[{offset}, {offset + tokens}); move --offset or re-prune with another --calib-offset"
        )


def check_setting(model: str, cfg: ReplayConfig, model_path: str | None = None, use: TextUse | None = None):
    """Resolve ``cfg`` (device, method, density, gamma, policy, DRAM budget, quantization, kind split)
    against the model's shape preset, without loading the model, so that a bad setting fails in
    milliseconds rather than after the model load. A model without a preset (a Hugging Face id, a local
    directory) is checked against a one-unit stand-in shape: everything but the budget's size."""
    from simcore.models import PRESETS, shape_from_dims

    shape = PRESETS.get(model) if model_path is None else None
    if shape is None:
        shape = shape_from_dims(model, "llama", 1, 1, 1, 1, 1, 1, True)
        cfg = cfg.model_copy(update={"pruned": None, "context": 0})
    return resolve_setting(cfg, shape, [cfg.dram], use)


def evaluate(
    model: str | Any = "smollm2-135m",
    config: ReplayConfig | None = None,
    *,
    tokenizer: Any = None,
    name: str | None = None,
    text: str | None = None,
    dataset: str | None = None,
    tokens: int = 1024,
    seq_len: int = 256,
    offset: int = 0,
    calib_tokens: int = 512,
    calib_offset: int = 8192,
    model_path: str | None = None,
    progress: bool = False,
    record_masks: bool = False,
    pruned: str | None = None,
    lora: str | None = None,
    lora_merge: bool = True,
    **settings,
) -> EvalResult:
    """Perplexity of ``model`` with ``config``'s method, policy and device in the loop.

    Args:
        model: an alias / path (loaded offline with simcore.models.load_model) or a loaded
            transformers causal LM (then give ``tokenizer``, and ``name``: the alias that finds its
            calibration).
        config / settings: a ReplayConfig or its fields (method, density, gamma, policy, device, dram, ...).
        text, dataset: the text source (the tracer's); ``tokens`` from ``offset`` are scored in windows
            of ``seq_len``; cats calibrates on ``calib_tokens`` from ``calib_offset`` (must not overlap).
        pruned: a ``simcore prune`` output directory: its static masks (and, for sparsegpt, its updated
            kept weights) are applied to the model's weights (in place) before the dynamic method runs.
        lora, lora_merge: a ``simcore finetune`` output directory: its adapters are loaded onto the model
            (in place), merged into the weights (no extra bytes) or kept beside them (resident in DRAM and
            read every token, counted in the memory plan); ``simcore.finetune.adapters``.
    Returns an EvalResult whose ``replay`` holds the exact cache metrics of the scored run.
    """
    from simcore.trace.text import bos_record, load_text, model_inputs, token_windows

    cfg = config_of(config, settings)
    if pruned is not None:
        cfg = cfg.model_copy(update={"pruned": str(pruned)})
    # every check that needs no weights comes first: a model load takes 10-20 s
    check_counts(tokens, seq_len, offset, calib_tokens, calib_offset)
    source = load_text(text=text, dataset=dataset)
    use = TextUse(source.name, text_sha256(source.text), offset, offset + tokens)
    if lora is not None:
        from simcore.finetune.adapters import check_for_eval

        model_name = model if isinstance(model, str) else name or getattr(model.config, "name_or_path", "") or "model"
        lora_record, lora_warnings = check_for_eval(lora, model_name, cfg.method, cfg.density, use, pruned)
    if pruned is not None:
        _check_pruned(pruned, use)
    if isinstance(model, str) and _thresholded(check_setting(model, cfg, model_path, use).selection):
        check_calibration_overlap(tokens, offset, calib_tokens, calib_offset)
    if isinstance(model, str):
        from simcore.models.registry import resolve as model_source

        model_source(model, model_path)  # an unknown name or a missing --model-path, before anything is read

    import torch
    import torch.nn.functional as F

    from simcore.models.registry import decoder_layers, load_model
    from simcore.trace.tracer import model_shape

    if isinstance(model, str):
        lm = load_model(model, model_path=model_path, progress=progress)  # progress=False: no loader bars either
        net, tok, name = lm.model, lm.tokenizer, lm.name
    else:
        net, tok = model, tokenizer
        name = name or getattr(model.config, "name_or_path", "") or "model"
        if tok is None:
            raise ConfigError("evaluate(model=<loaded model>) needs tokenizer=")
    if pruned is not None:
        from simcore.prune.api import apply_pruned

        apply_pruned(net, pruned)  # masks, and the updated kept weights of methods that change them (sparsegpt)
    lora_weights = 0  # unmerged adapter weights (merged ones add none)
    if lora is not None:
        from simcore.finetune.adapters import apply_lora

        net, lora_weights = apply_lora(net, lora, lora_merge)
    windows = token_windows(tok, source.text, tokens, seq_len, offset)
    T = int(sum(len(w) for w in windows))
    if T < tokens:
        raise ConfigError(f"the text has only {offset + T} tokens; lower --tokens or --offset")
    shape = model_shape(net, name)
    setting = resolve_setting(cfg, shape, [cfg.dram], use)
    if lora_weights:  # unmerged adapters are resident and read every token: the MLP cache gets less
        from simcore.finetune.adapters import plan_with_adapters

        setting.mems = [plan_with_adapters(setting, cfg, shape, lora_weights)]
    selection, mem = setting.selection, setting.mems[0]
    layers = decoder_layers(net)
    thresholds = [0.0] * len(layers)
    if _thresholded(selection):
        check_calibration_overlap(tokens, offset, calib_tokens, calib_offset)
        calib = token_windows(tok, source.text, calib_tokens, seq_len, calib_offset)
        frac = selection.fractions[[k.mode for k in selection.kinds].index("threshold")]
        thresholds = cats_thresholds(net, layers, calib, frac, selection.threshold)
    state = {"t0": 0}
    sims: list[list[KindSim]] = []
    originals = []
    recorded = [[[] for _ in selection.kinds] for _ in layers] if record_masks else None
    reads = flash_read_specs(setting, shape, cfg.flash_bundle) if cfg.flash_model == "curve" else None
    for li, layer in enumerate(layers):
        row = [
            KindSim.for_kind(
                kind,
                kp.capacity,
                frac,
                T,
                setting.policy,
                thresholds[li],
                reads=reads and reads(li, ki),
                seq_len=seq_len,
            )
            for ki, (kind, kp, frac) in enumerate(zip(selection.kinds, mem.kinds, selection.fractions))
        ]
        sims.append(row)
        originals.append(layer.mlp.forward)
        layer.mlp.forward = MaskedMLP(
            layer.mlp, row, selection.kinds, state, recorded[li] if record_masks else None, layer=li
        )
    nll, n_pred = 0.0, 0
    start = time.perf_counter()
    try:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=T, unit="tok", desc=f"eval {cfg.method}", file=sys.stderr, leave=False)
        with torch.inference_mode():
            for fed, state["prefix"] in model_inputs(windows):  # a BOS prefix: dense, unmasked, not cached
                ids_t = torch.from_numpy(fed)
                logits = net(input_ids=ids_t[None], use_cache=False).logits[0]
                if len(ids_t) > 1:  # every text token with context: with a BOS prefix, the window's first too
                    nll += float(F.cross_entropy(logits[:-1].float(), ids_t[1:], reduction="sum"))
                    n_pred += len(ids_t) - 1
                t_w = len(ids_t) - state["prefix"]
                state["t0"] += t_w
                if bar is not None:
                    bar.update(t_w)
            state["prefix"] = 0
        if bar is not None:
            bar.close()
    finally:
        for layer, fwd in zip(layers, originals):
            layer.mlp.forward = fwd
    seconds = time.perf_counter() - start
    per_layer = []
    for row in sims:
        per_layer.append([(*_finished(s), _reads_of(s)) for s in row])
    info = {"trace": f"eval:{name}", "trace_source": source.name, "trace_tokens": T}
    result = summarise_layers(cfg, shape, setting, [cfg.dram], per_layer, T, info)[0]
    if lora is not None:
        result.config["warnings"] = [*result.warnings, *lora_warnings]
    if not n_pred:
        raise ConfigError(f"no token was scored: every window of {seq_len} tokens holds a single token")
    ppl = float(np.exp(nll / n_pred))
    text_info = {
        "source": source.name,
        "text_sha256": use.sha256,
        "eval_tokens": [offset, offset + T],
        "seq_len": seq_len,
        **bos_record(windows),  # BOS fed before each window (not scored, masked or cached), when the tokenizer adds one
        "calibration_tokens": [calib_offset, calib_offset + calib_tokens] if _thresholded(selection) else None,
        "calibration": provenance(shape.name, source.name, use.sha256, calib_offset, calib_offset + calib_tokens)
        if _thresholded(selection)
        else None,
        "disjoint": True,
        "pruned": str(pruned) if pruned else None,
        "lora": None
        if lora is None
        else {
            "path": str(lora),
            "merged": bool(lora_merge),
            "method": lora_record["method"],
            "density": lora_record["density"],
            "rank": lora_record["rank"],
            "steps": lora_record.get("steps_done"),
            "adapter_weights": lora_weights,
            "adapter_bytes": mem.aux_resident - selection.aux_bytes,  # the adapters' share of the aux bytes
            "trained_on": lora_record["provenance"],
        },
    }
    masks = None
    if recorded is not None:
        masks = [[np.concatenate(m) if m else None for m in row] for row in recorded]
    return EvalResult(ppl, n_pred, text_info, result, seconds, masks)


__all__ = ["EvalResult", "evaluate"]
