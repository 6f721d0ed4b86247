"""LoRA adapter directories: where adapters go in the MLP per method, the record that travels with them
(``simcore_lora.json``), the checks before they are applied, and applying them, merged or not.

A directory written by ``simcore finetune`` holds PEFT's ``adapter_config.json`` and
``adapter_model.safetensors`` and simcore's ``simcore_lora.json`` (written last: its presence says the run
finished): the model and method the adapters were trained for, the density, rank and steps, the losses,
and the provenance (``simcore.calibration.provenance``) of the training tokens and, for cats, of the
tokens its thresholds were calibrated on.

Merged adapters are folded into W_u, W_g, W_d (W + B A): the model has its original shapes, and the
columns a mask selects load as before, so merging adds no byte. Unmerged adapters stay beside the
weights: their A and B matrices are resident in DRAM and read every token, counted at 16 bits per
weight (:data:`ADAPTER_BYTES_PER_WEIGHT`) whatever the base weights' precision, since runtimes keep
LoRA adapters in fp16.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from simcore.errors import ConfigError
from simcore.models.mlp import DOWN, GATE, GATE_UP, UP

FORMAT = "simcore-lora"
RECORD = "simcore_lora.json"
ADAPTER_BYTES_PER_WEIGHT = 2
"""Bytes per weight of an unmerged adapter (fp16), whatever the base weights' bits."""

ROLES = {"dip": (GATE, UP, DOWN), "cats": (UP, DOWN)}
"""The MLP matrices that carry adapters, per method (the DIP paper: up, gate and down for DIP; up and
down for CATS, whose gate decides the mask and stays as it is)."""

FAMILY = {"dip": "dip", "dip-ca": "dip", "cats": "cats"}
"""Which adapters an eval method takes: dip-ca is dip with cache-aware scores (dip at gamma 1), so dip
adapters serve both; any other pairing is refused."""


def check_method(method: str) -> None:
    """A method ``simcore finetune`` trains adapters for: dip or cats."""
    if method not in ROLES:
        raise ConfigError(f"--method {method}: LoRA recovery is for dip or cats (the DIP paper's DIP+LoRA, CATS+LoRA)")


def target_modules(model: Any, method: str) -> list[str]:
    """The names of the modules (``model.named_modules()``) that carry adapters for ``method``: the MLP
    matrices of :data:`ROLES` in every decoder layer. ConfigError when a layout cannot carry them (cats
    on Phi-3's fused gate_up: an up-only adapter is not a module PEFT can adapt)."""
    from simcore.models import Mlp
    from simcore.models.registry import decoder_layers

    check_method(method)
    wanted = set(ROLES[method])
    mlps = {id(layer.mlp) for layer in decoder_layers(model)}
    names = []
    for name, module in model.named_modules():
        if id(module) not in mlps:
            continue
        for m in Mlp.of(module).matrices():
            if m.role == GATE_UP:
                if not {GATE, UP} <= wanted:
                    raise ConfigError(
                        f"{method} adapters go on the up and down matrices only, but this model fuses gate and up "
                        "into one gate_up_proj; use --method dip (adapters on gate_up and down)"
                    )
            elif m.role not in wanted:
                continue
            names.append(f"{name}.{m.name}" if name else m.name)
    return names


def read_lora(path: str | os.PathLike) -> dict:
    """The ``simcore_lora.json`` record of the adapter directory ``path``, checked; ConfigError (one line)
    for a missing directory, a directory no ``simcore finetune`` run finished, or a malformed record."""
    p = Path(path).expanduser()
    if not p.is_dir():
        what = "does not exist" if not p.exists() else "is a file"
        raise ConfigError(f"--lora {p} {what}; give the --out directory of a finished `simcore finetune` run")
    record = p / RECORD
    if not record.is_file():
        why = "an unfinished run (resume it with --resume)" if any(p.glob("checkpoint-*")) else "no simcore adapters"
        raise ConfigError(f"--lora {p} holds {why}: there is no {RECORD} in it")
    try:
        data = json.loads(record.read_text())
        if data.get("format") != FORMAT:
            raise ValueError
        str(data["model"]), str(data["method"]), float(data["density"]), int(data["rank"])
        a, b = data["provenance"]["tokens"]
        int(a), int(b)
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{record} is not a simcore LoRA record; re-create it with `simcore finetune`") from None
    if not (p / "adapter_config.json").is_file():
        raise ConfigError(f"--lora {p}: adapter_config.json is missing; re-create the adapters with `simcore finetune`")
    return data


def check_lora(path: str | os.PathLike, data: dict, model: str, method: str, density: float) -> list[str]:
    """Refuse adapters (``data``, read from ``path``) trained for another model or method family
    (:data:`FAMILY`); return the warnings to show: a density other than the one trained for is allowed
    (the adapters still apply; how well they transfer is what such a run measures) but said."""
    where = str(Path(path).expanduser())
    check_model(path, data, model)
    if FAMILY.get(method) != data["method"]:
        raise ConfigError(
            f"--lora {where} holds {data['method']} adapters, trained under {data['method']}'s masks; "
            f"they do not serve --method {method}: use --method {data['method']} or train {method} adapters"
        )
    if abs(float(data["density"]) - density) > 1e-9:
        return [
            f"--lora {where} was trained at density {float(data['density']):g}, evaluated here at {density:g}: "
            "the adapters apply, but they were not trained for these masks"
        ]
    return []


def check_model(path: str | os.PathLike, data: dict, model: str) -> None:
    """Refuse adapters (``data``, read from ``path``) trained for a model other than ``model``."""
    if data["model"] != model:
        raise ConfigError(
            f"--lora {Path(path).expanduser()} was trained for model {data['model']!r}, not {model!r}; "
            f"train adapters for this model (simcore finetune --model {model})"
        )


def apply_lora(model: Any, path: str | os.PathLike, merge: bool) -> tuple[Any, int]:
    """Load the adapters of ``path`` onto ``model`` (in place). ``merge``: fold them into the weights and
    remove the adapter modules (the model keeps its shapes); otherwise they stay as modules beside the
    weights. Returns (the model to run, the adapters' weight count: 0 when merged)."""
    with warnings.catch_warnings():  # PEFT calls transformers' deprecated is_gradient_checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        from peft import PeftModel

        try:
            peft_model = PeftModel.from_pretrained(model, str(Path(path).expanduser()))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConfigError(f"--lora {path}: the adapters do not load onto this model ({first})") from None
    if merge:
        return peft_model.merge_and_unload(), 0
    n = sum(p.numel() for name, p in peft_model.named_parameters() if "lora_" in name)
    return peft_model.base_model.model, int(n)


def adapter_bytes(n_weights: int) -> float:
    """DRAM bytes of ``n_weights`` unmerged adapter weights (:data:`ADAPTER_BYTES_PER_WEIGHT` each)."""
    return float(n_weights * ADAPTER_BYTES_PER_WEIGHT)


def plan_with_adapters(setting: Any, cfg: Any, shape: Any, n_weights: int) -> Any:
    """``setting``'s memory plan (its first DRAM budget) redone with ``n_weights`` unmerged adapter weights
    resident and read every token (:func:`adapter_bytes`): the MLP cache shrinks by as much."""
    from simcore.memory import plan

    mem = setting.mems[0]
    return plan(
        shape,
        setting.selection,
        setting.budgets[0],
        cfg.quant(),
        cfg.context,
        tuple(cfg.kind_split) if cfg.kind_split else None,
        cache=not getattr(setting.policy, "NO_CACHE", False),
        mlp_bytes_per_weight=mem.mlp_total / (shape.n_layers * shape.mlp_params_per_layer),
        aux_bytes=adapter_bytes(n_weights),
    )


def check_for_eval(
    path: str | os.PathLike, model: str, method: str, density: float, use: Any, pruned: str | None
) -> tuple[dict, list[str]]:
    """Everything eval checks before it loads a model with adapters ``path``: a finished run's record, for
    this model and method family, trained on tokens other than the evaluated ones ``use`` (a
    ``simcore.calibration.TextUse``; cats: nor were its thresholds), and not combined with static pruning.
    Returns (the record, warnings to show)."""
    from simcore.calibration import check_disjoint

    if pruned is not None:
        raise ConfigError(
            "--lora and --pruned do not combine: the adapters were trained on the unpruned model, and merging "
            "them would fill the pruned weights; drop one of them"
        )
    data = read_lora(path)
    warns = check_lora(path, data, model, method, density)
    where = f"--lora {Path(path).expanduser()}"
    check_disjoint(data["provenance"], where, use.sha256, use.first, use.end)
    if data.get("cats_thresholds"):
        check_disjoint(data["cats_thresholds"], f"{where} (its cats thresholds)", use.sha256, use.first, use.end)
    return data, warns


def check_for_trace(path: str | os.PathLike, use: Any) -> dict:
    """What ``simcore trace --lora`` checks before it loads a model: a finished run's record whose training
    tokens (and, for cats, threshold tokens) are not the traced ones ``use`` (a
    ``simcore.calibration.TextUse``). The model is checked once loaded (:func:`check_model`)."""
    from simcore.calibration import check_disjoint

    data = read_lora(path)
    where = f"--lora {Path(path).expanduser()}"
    check_disjoint(data["provenance"], where, use.sha256, use.first, use.end)
    if data.get("cats_thresholds"):
        check_disjoint(data["cats_thresholds"], f"{where} (its cats thresholds)", use.sha256, use.first, use.end)
    return data


def trace_record(path: str | os.PathLike, data: dict, merged: bool, n_weights: int) -> dict:
    """What a trace made with adapters records of them (``extra.lora``), and replay reads back: where they
    came from, what they were trained for, whether they were merged, and their resident bytes (0 merged)."""
    return {
        "path": str(Path(path).expanduser()),
        "merged": bool(merged),
        "method": data["method"],
        "density": float(data["density"]),
        "rank": int(data["rank"]),
        "steps": data.get("steps_done"),
        "adapter_weights": int(n_weights),
        "adapter_bytes": adapter_bytes(n_weights),
        "trained_on": data["provenance"],
    }


def check_replay(info: dict, trace: str, method: str, density: float, pruned: str | None) -> list[str]:
    """Refuse replaying a trace made with adapters (``info``: its ``extra.lora``) under a method the
    adapters were not trained for, or with static pruning (as eval refuses); return the warnings to show
    (another density)."""
    if pruned is not None:
        raise ConfigError(
            f"trace {trace} was made with LoRA adapters, and --pruned does not combine with them: they were "
            "trained on the unpruned model; replay a trace made without --lora"
        )
    if FAMILY.get(method) != info["method"]:
        raise ConfigError(
            f"trace {trace} was made with {info['method']} LoRA adapters (simcore trace --lora), trained under "
            f"{info['method']}'s masks; they do not serve --method {method}: use --method {info['method']} or "
            "a trace made without --lora"
        )
    if abs(float(info["density"]) - density) > 1e-9:
        return [
            f"trace {trace} was made with LoRA adapters trained at density {float(info['density']):g}, replayed "
            f"here at {density:g}: the adapters apply, but they were not trained for these masks"
        ]
    return []


def resident_bytes(info: dict | None) -> float:
    """DRAM bytes that adapters (a trace's ``extra.lora``, or None) add to the memory plan: 0 merged."""
    return 0.0 if not info or info["merged"] else float(info["adapter_bytes"])


def describe(info: dict) -> str:
    """One line on adapters (a trace's or an eval's record of them) for a printed setting."""
    from simcore.units import format_bytes

    how = (
        "merged into the weights: no extra bytes"
        if info["merged"]
        else f"unmerged: {format_bytes(info['adapter_bytes'])} resident in DRAM (fp16) and read every token"
    )
    return (
        f"LoRA {info['path']} ({info['method']} rho={float(info['density']):g}, rank {info['rank']}, "
        f"{info['steps']} steps), {how}"
    )


def label(info: dict | None) -> str | None:
    """A short name for adapters in a results table (``adapter`` column), None without adapters."""
    if not info:
        return None
    return f"lora-{info['method']}-{float(info['density']):g}-r{info['rank']}-{info['steps']}" + (
        "" if info["merged"] else "-unmerged"
    )
