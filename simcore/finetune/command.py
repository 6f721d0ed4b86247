"""``simcore finetune``: the click command around :func:`simcore.finetune.train.finetune`.

torch, transformers and peft are imported only when the command runs."""

from __future__ import annotations

import sys

import click

from simcore.finetune.train import CHECKPOINT_EVERY, DEFAULT_OFFSET, DEFAULT_TOKENS


@click.command("finetune")
@click.option("--model", "model_name", default="smollm2-135m", show_default=True, help="model alias, id or directory")
@click.option("--model-path", help="local model directory or .gguf file")
@click.option("--method", required=True, help="the masks to recover from: dip or cats")
@click.option("--density", type=float, required=True, help="target MLP density the masks keep")
@click.option("--rank", type=int, default=32, show_default=True, help="LoRA rank")
@click.option("--alpha", type=float, default=None, help="LoRA alpha [default: the rank, i.e. scale 1]")
@click.option("--steps", type=int, default=1000, show_default=True, help="optimizer steps")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="peak learning rate (AdamW; warm-up, cosine)")
@click.option("--seq-len", type=int, default=256, show_default=True, help="tokens per window")
@click.option("--batch", type=int, default=1, show_default=True, help="windows per step")
@click.option("--calib-tokens", type=int, default=DEFAULT_TOKENS, show_default=True, help="training tokens of the text")
@click.option(
    "--calib-offset",
    type=int,
    default=DEFAULT_OFFSET,
    show_default=True,
    help="first training token: past eval's tokens [0, 1024) and its cats calibration [8192, 8704)",
)
@click.option("--text", type=click.Path(dir_okay=False), help="train on a local text file (default: the embedded text)")
@click.option("--dataset", help="wikitext2 (local datasets cache) or a local wiki.test.raw")
@click.option("--seed", type=int, default=0, show_default=True, help="adapter initialisation and window order")
@click.option(
    "--checkpoint-every", type=int, default=CHECKPOINT_EVERY, show_default=True, help="steps between checkpoints"
)
@click.option("--torch-device", default="cpu", show_default=True, help="cpu or cuda")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="directory for the adapters")
@click.option("--progress/--no-progress", default=None, help="progress bar on stderr (default: when a terminal)")
def finetune_command(model_name, model_path, progress, **kw):
    """Train LoRA adapters that recover the accuracy a sparsity method's masks cost (DIP+LoRA, CATS+LoRA):
    distillation from the dense model to the masked one, the method's masks in every MLP as simcore eval
    applies them. Score them with `simcore eval --lora DIR`.

    \b
    Example:
      simcore finetune --method dip --density 0.5 --steps 200 --out lora/dip-0.5
      simcore eval --method dip --density 0.5 --lora lora/dip-0.5
    """
    from simcore.finetune.train import finetune

    r = finetune(
        model_name,
        kw.pop("method"),
        kw.pop("density"),
        model_path=model_path,
        progress=sys.stderr.isatty() if progress is None else progress,
        **kw,
    )
    click.echo(
        f"trained {r['method']} rho={r['density']:g} adapters (rank {r['rank']}, {r['steps_done']} steps) on tokens "
        f"{r['tokens'][0]}-{r['tokens'][1]} of {r['provenance']['text']}: distillation loss "
        f"{r['loss_first']:.4f} -> {r['loss_final']:.4f} (mean of the last 10 steps); saved {kw['out']}"
    )
