"""LoRA recovery (the DIP paper's DIP+LoRA and CATS+LoRA): low-rank adapters trained by knowledge
distillation, the dense model teaching the masked one.

Each step takes ``batch`` windows of ``seq_len`` calibration tokens. The teacher is the base model with
no mask and the adapters disabled (no gradient); the student is the same model with the adapters on and
the method's masks in every MLP, applied by eval's own masked MLP (``simcore.eval.evaluate.MaskedMLP``):
the masks come from the replay kernels (non-differentiable), the gradient flows through the values they
keep. The loss is KL(teacher || student) of the next-token distributions, averaged over tokens. For cats,
the per-layer thresholds are calibrated once, on the dense model, on the tokens ``simcore eval``
calibrates them on by default (``--calib-offset`` 8192, 512 tokens), so training sees eval's masks.

The training tokens default to [16384, 49152) of the text: after the 2,048 tokens ``simcore trace`` reads,
eval's evaluation tokens [0, 1024) and eval's cats calibration [8192, 8704), so none of them is trained on.
Windows are visited in a permutation per epoch drawn from ``seed``: the batch of step s is a function of
(seed, s), so a resumed run sees the batches an uninterrupted one would. Checkpoints (adapters, optimizer
state, losses) are written every ``checkpoint_every`` steps and on Ctrl-C, each into a temporary directory
renamed into place.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from simcore.errors import ConfigError
from simcore.finetune.adapters import FORMAT, RECORD, check_method, target_modules

DEFAULT_OFFSET = 16384
"""First training token: beyond trace's [0, 2048), eval's [0, 1024) and eval's cats calibration [8192, 8704)."""
DEFAULT_TOKENS = 32768
"""Training tokens: 128 windows of 256."""
CHECKPOINT_EVERY = 50


def _eval_default(parameter: str) -> int:
    """A default of ``simcore.eval.evaluate.evaluate`` (one place says where eval calibrates cats)."""
    from simcore.eval.evaluate import evaluate

    return int(inspect.signature(evaluate).parameters[parameter].default)


def lr_at(step: int, steps: int, lr: float) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps``: linear warm-up over the first 5 % (at
    least one step), then a cosine from ``lr`` down to ``lr / 10``. A function of the step alone, so that a
    resumed run follows the schedule of an uninterrupted one."""
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def batch_windows(step: int, n_windows: int, batch: int, seed: int) -> np.ndarray:
    """The indices (``batch``,) of the windows step ``step`` trains on: window after window of a fresh
    permutation of the ``n_windows`` each epoch, permutation e drawn from ``(seed, e)``."""
    pos = step * batch + np.arange(batch)
    epoch, at = pos // n_windows, pos % n_windows
    perms = {int(e): np.random.default_rng([seed, int(e)]).permutation(n_windows) for e in np.unique(epoch)}
    return np.array([perms[int(e)][int(a)] for e, a in zip(epoch, at)], np.int64)


def kd_loss(student: Any, teacher: Any) -> Any:
    """KL(teacher || student) of next-token distributions from logits (..., vocab), averaged over tokens."""
    import torch.nn.functional as F

    s = F.log_softmax(student.float(), dim=-1).flatten(0, -2)
    t = F.log_softmax(teacher.float(), dim=-1).flatten(0, -2)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


class Masks:
    """The method's masks in every MLP of ``net``, one forward pass at a time, through eval's masked MLP.

    ``selection``: a resolved, cache-independent ``Selection`` (dip, cats); ``thresholds``: one per layer
    (cats; 0 otherwise)."""

    def __init__(self, net: Any, selection: Any, thresholds: list[float]):
        from simcore.eval.evaluate import MaskedMLP
        from simcore.models.registry import decoder_layers

        self.net, self.selection, self.thresholds = net, selection, thresholds
        self.layers = decoder_layers(net)
        self.state = {"t0": 0}
        self.wrappers = [MaskedMLP(layer.mlp, [], selection.kinds, self.state, None) for layer in self.layers]

    def _install(self, n_tokens: int, seq_len: int) -> None:
        """Fresh mask simulators (no cache: dip and cats masks do not depend on one) for ``n_tokens``
        tokens in windows of ``seq_len``, in every MLP."""
        from simcore.engine.sim import KindSim

        self.state["t0"] = 0
        for li, (layer, wrapper) in enumerate(zip(self.layers, self.wrappers)):
            wrapper.sims = [
                KindSim.for_kind(kind, 0, frac, n_tokens, "none", self.thresholds[li], seq_len=seq_len)
                for kind, frac in zip(self.selection.kinds, self.selection.fractions)
            ]
            layer.mlp.forward = wrapper

    def _remove(self) -> None:
        for layer in self.layers:
            layer.mlp.__dict__.pop("forward", None)  # the class's own forward again

    def logits(self, ids: Any, prefix: int = 0) -> Any:
        """``net``'s logits (B, S, vocab) for token ids (B, S) with the masks in every MLP (gradient as
        the caller's mode has it). ``prefix``: positions before each window's text (a BOS,
        ``simcore.trace.text.model_inputs``), which go through the dense MLP, unmasked, as in eval."""
        self._install(ids.shape[0] * (ids.shape[-1] - prefix), ids.shape[-1] - prefix)
        self.state["prefix"] = prefix
        try:
            return self.net(input_ids=ids, use_cache=False).logits
        finally:
            self.state["prefix"] = 0
            self._remove()


class LoraTrainer:
    """Adapters on ``net`` (a loaded causal LM, modified in place) and one distillation step at a time.

    ``selection`` (a resolved dip or cats ``Selection``) and ``thresholds`` (one per layer; cats) give the
    masks; ``masked=False`` trains without masks (the baseline a masked step's cost is measured against).
    """

    def __init__(
        self,
        net: Any,
        method: str,
        selection: Any,
        thresholds: list[float],
        *,
        rank: int = 32,
        alpha: float | None = None,
        lr: float = 2e-4,
        steps: int = 1000,
        seed: int = 0,
        masked: bool = True,
        prefix: int = 0,
    ):
        import torch

        with warnings.catch_warnings():  # PEFT calls transformers' deprecated is_gradient_checkpointing
            warnings.simplefilter("ignore", FutureWarning)
            from peft import LoraConfig, get_peft_model

            self.targets = target_modules(net, method)
            torch.manual_seed(seed)  # PEFT draws A from torch's generator (B starts at 0)
            config = LoraConfig(
                r=rank, lora_alpha=alpha or rank, target_modules=self.targets, lora_dropout=0.0, bias="none"
            )
            self.peft = get_peft_model(net, config)
        self.net, self.steps, self.lr, self.prefix = net, steps, lr, prefix
        self.masks = Masks(net, selection, thresholds) if masked else None
        self.params = [p for p in self.peft.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)

    def logits(self, ids: Any) -> Any:
        """The student's logits (B, S - prefix, vocab) at the text positions of token ids (B, S): adapters
        on, masks (unless the trainer is unmasked), gradient on."""
        if self.masks is None:
            return self.net(input_ids=ids, use_cache=False).logits[:, self.prefix :]
        return self.masks.logits(ids, self.prefix)[:, self.prefix :]

    def teacher(self, ids: Any) -> Any:
        """The dense base model's logits (B, S - prefix, vocab) at the text positions: no masks, adapters
        disabled, no gradient."""
        import torch

        with torch.no_grad(), self.peft.disable_adapter():
            return self.net(input_ids=ids, use_cache=False).logits[:, self.prefix :]

    def step(self, ids: Any, step: int) -> float:
        """One optimizer step on token ids (B, S) at schedule position ``step``; returns the loss."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(step, self.steps, self.lr)
        target = self.teacher(ids)
        loss = kd_loss(self.logits(ids), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def adapter_state(self) -> dict:
        """The adapters' tensors (PEFT's state dict: names without the adapter name), on the CPU."""
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(self.peft).items()}

    def load(self, adapters: dict, optimizer: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.peft, adapters)
        self.optimizer.load_state_dict(optimizer)


# --- the run: checks, data, checkpoints, output ------------------------------------------------------------


def _check_numbers(steps, rank, lr, seq_len, batch, checkpoint_every, calib_tokens, calib_offset, alpha) -> None:
    for flag, v, low in (
        ("--steps", steps, 1),
        ("--rank", rank, 1),
        ("--seq-len", seq_len, 2),
        ("--batch", batch, 1),
        ("--checkpoint-every", checkpoint_every, 1),
        ("--calib-tokens", calib_tokens, 1),
        ("--calib-offset", calib_offset, 0),
    ):
        if not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigError(f"{flag} must be an integer >= {low}, got {v}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr must be a positive number, got {lr}")
    if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"--alpha must be a positive number, got {alpha}")
    if calib_tokens < seq_len * batch:
        raise ConfigError(
            f"--calib-tokens {calib_tokens} is fewer than one batch ({batch} windows of {seq_len}); "
            "give more tokens or a smaller --batch / --seq-len"
        )


def _torch_device(name: str) -> str:
    import torch

    if name == "cpu":
        return name
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--torch-device {name}: no CUDA device is available here; use --torch-device cpu")
        return name
    raise ConfigError(f"--torch-device {name}: use cpu or cuda")


def _checkpoints(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("checkpoint-*") if p.is_dir() and p.name[11:].isdigit())


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for the adapters")
    if not resume and out.is_dir() and ((out / RECORD).exists() or _checkpoints(out)):
        raise ConfigError(
            f"--out {out} already holds a finetune run; add --resume to continue it or give another --out"
        )


def _save_checkpoint(out: Path, trainer: LoraTrainer, step: int, losses: list[float], settings: dict) -> None:
    """Write checkpoint ``step`` into a temporary directory, rename it into place, drop older ones."""
    import torch

    old = _checkpoints(out)
    tmp = out / f".checkpoint-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {
        "step": step,
        "losses": list(losses),
        "settings": settings,
        "adapters": trainer.adapter_state(),
        "optimizer": trainer.optimizer.state_dict(),
    }
    torch.save(state, tmp / "state.pt")
    final = out / f"checkpoint-{step:07d}"
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    for p in old:
        if p != final:
            shutil.rmtree(p, ignore_errors=True)


def _load_checkpoint(out: Path, settings: dict) -> dict | None:
    import torch

    found = _checkpoints(out)
    if not found:
        return None
    state = torch.load(found[-1] / "state.pt", map_location="cpu", weights_only=True)
    theirs = state["settings"]
    diff = [k for k in settings if theirs.get(k) != settings[k]]
    if diff:
        k = diff[0]
        raise ConfigError(
            f"--resume: the checkpoint in {out} was made with {k} {theirs.get(k)!r}, not {settings[k]!r}; "
            f"run with the same settings or give another --out"
        )
    return state


def _finish(out: Path, trainer: LoraTrainer, record: dict) -> None:
    """The adapters (PEFT's files) and simcore_lora.json into ``out``, the record last; checkpoints removed."""
    from simcore.results import atomic_write_bytes, strict_json

    tmp = out / f".adapter-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.peft.save_pretrained(str(tmp))
    for f in sorted(tmp.iterdir()):
        os.replace(f, out / f.name)
    shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_bytes(out / RECORD, strict_json(record, indent=2).encode())
    for p in _checkpoints(out):
        shutil.rmtree(p, ignore_errors=True)


def finetune(
    model: str | Any = "smollm2-135m",
    method: str = "dip",
    density: float = 0.5,
    *,
    out: str | os.PathLike,
    rank: int = 32,
    alpha: float | None = None,
    steps: int = 1000,
    lr: float = 2e-4,
    seq_len: int = 256,
    batch: int = 1,
    calib_tokens: int = DEFAULT_TOKENS,
    calib_offset: int = DEFAULT_OFFSET,
    text: str | None = None,
    dataset: str | None = None,
    model_path: str | None = None,
    tokenizer: Any = None,
    name: str | None = None,
    torch_device: str = "cpu",
    resume: bool = False,
    checkpoint_every: int = CHECKPOINT_EVERY,
    seed: int = 0,
    method_options: dict | None = None,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
) -> dict:
    """Train LoRA adapters that recover ``method`` (dip or cats) at ``density``; write them to ``out``.

    Args:
        model: an alias / path (loaded offline) or a loaded causal LM (then give ``tokenizer`` and
            ``name``, the model name the adapters are recorded for).
        rank, alpha: LoRA rank and alpha (default alpha = rank: scale 1).
        steps, lr, batch, seq_len: optimizer steps (AdamW, schedule :func:`lr_at`), windows per step and
            tokens per window.
        calib_tokens, calib_offset: the training tokens [calib_offset, calib_offset + calib_tokens) of the
            text (``text`` file, ``dataset``, or the embedded default), split into windows of ``seq_len``.
        resume: continue from the last checkpoint in ``out`` (same settings); without it, ``out`` must not
            hold a run.
        method_options: the method's options (e.g. dip's ``rho_in``), as for eval.
        callback: called after each step with (steps done, loss).
    Returns the record written to ``out/simcore_lora.json``.
    """
    from simcore import __version__, methods
    from simcore.calibration import TextUse, provenance, text_sha256
    from simcore.trace.text import load_text, model_inputs, token_windows

    check_method(method)
    _check_numbers(steps, rank, lr, seq_len, batch, checkpoint_every, calib_tokens, calib_offset, alpha)
    out = Path(out).expanduser()
    _check_out(out, resume)
    options = methods.options(method, method_options or {})
    if isinstance(model, str):
        from simcore.models import PRESETS
        from simcore.models.registry import resolve as model_source

        if model in PRESETS and model_path is None:  # a bad density fails before the model load
            methods.resolve(method, PRESETS[model], density, options)
        model_source(model, model_path)
    device = _torch_device(torch_device)
    source = load_text(text=text, dataset=dataset)
    sha = text_sha256(source.text)
    first, end = calib_offset, calib_offset + calib_tokens

    import torch

    from simcore.eval.evaluate import cats_thresholds
    from simcore.models.registry import decoder_layers, load_model
    from simcore.trace.tracer import model_shape

    if isinstance(model, str):
        lm = load_model(model, model_path=model_path, progress=progress)
        net, tok, name = lm.model, lm.tokenizer, lm.name
    else:
        net, tok = model, tokenizer
        if tok is None or not name:
            raise ConfigError("finetune(model=<loaded model>) needs tokenizer= and name=")
    # full windows as the model is fed them: with the tokenizer's BOS before each (Gemma), as eval does; a
    # window that starts with BOS itself (the text's first) is left out then, so that every row is alike
    fed = [(ids, p) for ids, p in model_inputs(token_windows(tok, source.text, calib_tokens, seq_len, first))]
    fed = [(ids, p) for ids, p in fed if len(ids) - p == seq_len]
    prefix = max((p for _, p in fed), default=0)
    windows = [ids for ids, p in fed if p == prefix]
    if len(windows) < batch:
        raise ConfigError(f"--calib-tokens {calib_tokens} give {len(windows)} full windows, fewer than --batch {batch}")
    shape = model_shape(net, name)
    use = TextUse(source.name, sha, first, end)
    selection = methods.resolve(method, shape, density, options, use)
    layers = decoder_layers(net)
    thresholds = [0.0] * len(layers)
    cats_range = None
    kinds = [k.mode for k in selection.kinds]
    if "threshold" in kinds:  # eval's calibration of the thresholds, on eval's default calibration tokens
        c_off, c_tok = _eval_default("calib_offset"), _eval_default("calib_tokens")
        if c_off < end and first < c_off + c_tok:
            raise ConfigError(
                f"training tokens [{first}, {end}) overlap the tokens eval calibrates cats' thresholds on "
                f"[{c_off}, {c_off + c_tok}); move --calib-offset"
            )
        calib = token_windows(tok, source.text, c_tok, seq_len, c_off)
        frac = selection.fractions[kinds.index("threshold")]
        thresholds = cats_thresholds(net, layers, calib, frac, selection.threshold)
        cats_range = provenance(name, source.name, sha, c_off, c_off + c_tok)
    net.to(device)
    trainer = LoraTrainer(
        net,
        method,
        selection,
        thresholds,
        rank=rank,
        alpha=alpha,
        lr=lr,
        steps=steps,
        seed=seed,
        masked=True,
        prefix=prefix,
    )
    settings = {
        "model": name,
        "method": method,
        "density": float(density),
        "options": options.model_dump(),
        "rank": rank,
        "alpha": float(alpha or rank),
        "steps": steps,
        "lr": float(lr),
        "seq_len": seq_len,
        "batch": batch,
        "seed": seed,
        "text_sha256": sha,
        "tokens": [first, end],
    }
    start, losses = 0, []
    if resume and (out / RECORD).is_file():  # finished already: the same run is not trained twice
        done_record = json.loads((out / RECORD).read_text())
        diff = [k for k in settings if done_record.get(k) != settings[k]]
        if diff:
            raise ConfigError(
                f"--resume: {out} holds a finished run made with {diff[0]} {done_record.get(diff[0])!r}, not "
                f"{settings[diff[0]]!r}; give another --out"
            )
        return done_record
    if resume:
        state = _load_checkpoint(out, settings)
        if state is not None:
            trainer.load(state["adapters"], state["optimizer"])
            start, losses = int(state["step"]), list(state["losses"])
    out.mkdir(parents=True, exist_ok=True)
    tokens = np.stack(windows)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start, unit="step", desc=f"finetune {method} {density:g}", file=sys.stderr)
    t0, done = time.perf_counter(), start
    try:
        for step in range(start, steps):
            ids = torch.from_numpy(tokens[batch_windows(step, len(windows), batch, seed)]).to(device)
            loss = trainer.step(ids, step)
            if not math.isfinite(loss):
                raise ConfigError(f"the distillation loss became {loss} at step {step + 1}; lower --lr")
            losses.append(loss)
            done = step + 1
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", mean10=f"{np.mean(losses[-10:]):.4f}", refresh=False)
                bar.update(1)
            if done % checkpoint_every == 0 and done < steps:
                _save_checkpoint(out, trainer, done, losses, settings)
            if callback is not None:
                callback(done, loss)
    except KeyboardInterrupt:
        if done > start and not (_checkpoints(out) and _checkpoints(out)[-1].name == f"checkpoint-{done:07d}"):
            _save_checkpoint(out, trainer, done, losses, settings)
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    record = {
        "format": FORMAT,
        **settings,
        "steps_done": done,
        "loss_first": losses[0],
        "loss_final": float(np.mean(losses[-10:])),
        "losses": losses,
        "targets": sorted({t.rsplit(".", 1)[-1] for t in trainer.targets}),
        "bos_per_window": bool(prefix),  # a BOS fed before each window, unmasked and not in the loss
        "selection": selection.detail,
        "provenance": provenance(name, source.name, sha, first, end),
        "cats_thresholds": cats_range,
        "torch_device": device,
        "seconds_this_run": seconds,
        "steps_per_s_this_run": (done - start) / seconds if seconds > 0 and done > start else None,
        "simcore_version": __version__,
    }
    _finish(out, trainer, record)
    return record
