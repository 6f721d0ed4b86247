"""``simcore prune``: the click command around :func:`simcore.prune.api.prune_model`.

torch and transformers are imported only when the command runs.
"""

from __future__ import annotations

import json

import click

from simcore.errors import ConfigError


@click.command("prune")
@click.option(
    "--model",
    default="smollm2-135m",
    show_default=True,
    help="Model to prune: an alias (smollm2-135m is embedded), a Hugging Face id or a local model directory.",
)
@click.option("--model-path", type=click.Path(), default=None, help="Local model directory or .gguf file.")
@click.option(
    "--method",
    default="wanda",
    show_default=True,
    help="wanda or dass (masks from activation-scaled magnitudes), or sparsegpt (masks and updated weights).",
)
@click.option(
    "--sparsity",
    default="0.5",
    show_default=True,
    help="Pattern: a pruned fraction in (0, 1) per comparison group (e.g. 0.5), or N:M (2:4, 4:8).",
)
@click.option("--alpha", type=float, default=0.5, show_default=True, help="DaSS: exponent of the neuron norm.")
@click.option(
    "--blocksize", type=int, default=None, help="SparseGPT: columns per block of lazy updates [default: 128]."
)
@click.option(
    "--damp",
    type=float,
    default=None,
    help="SparseGPT: Hessian dampening, a fraction of its mean diagonal [default: 0.01].",
)
@click.option("--calib-tokens", type=int, default=512, show_default=True, help="Calibration tokens.")
@click.option(
    "--calib-offset",
    type=int,
    default=None,
    help="First calibration token in the text (default 8192: past the tokens trace and evaluation read).",
)
@click.option("--eval-tokens", type=int, default=512, show_default=True, help="Tokens for the perplexity check.")
@click.option("--eval-offset", type=int, default=0, show_default=True, help="First evaluation token in the text.")
@click.option("--seq-len", type=int, default=256, show_default=True, help="Tokens per forward pass.")
@click.option("--weight-bits", type=float, default=16, show_default=True, help="Bits per stored weight (bytes).")
@click.option("--dataset", default=None, help="Text: 'wikitext2' or a local wiki.test.raw (default: embedded).")
@click.option("--text", "text", type=click.Path(), default=None, help="Text: any UTF-8 text file.")
@click.option(
    "--out", type=click.Path(), default=None, help="Output directory (default pruned/<model>-<method>-<pattern>)."
)
@click.option("--allow-download", is_flag=True, default=False, help="Allow downloading a missing model or data set.")
@click.option("--no-progress", is_flag=True, default=False, help="Hide progress output.")
def prune_command(
    model,
    model_path,
    method,
    sparsity,
    alpha,
    blocksize,
    damp,
    calib_tokens,
    calib_offset,
    eval_tokens,
    eval_offset,
    seq_len,
    weight_bits,
    dataset,
    text,
    out,
    allow_download,
    no_progress,
):
    """Statically prune the MLP weights (wanda, dass or sparsegpt; unstructured or N:M) with calibration
    activations; write keep-masks (sparsegpt: and its updated weights) and a manifest, and print dense vs
    pruned perplexity."""
    from simcore.prune.api import MANIFEST_FILE, check_options, method_module
    from simcore.prune.calibrate import DEFAULT_CALIB_OFFSET
    from simcore.prune.patterns import parse_sparsity

    mod = method_module(method)  # bad input fails before torch is imported
    check_options(method, parse_sparsity(sparsity), blocksize, damp)
    alpha_source = click.get_current_context().get_parameter_source("alpha")
    if not mod.NEEDS_ALPHA and alpha_source is click.core.ParameterSource.COMMANDLINE:
        raise ConfigError(f"--alpha is DaSS's neuron-norm exponent; {method} takes none (drop it)")
    try:
        from simcore.prune.api import prune_model
    except ImportError as e:  # pragma: no cover
        raise ConfigError(
            f"simcore prune needs the trace extra ({e.name} is missing); run `pip install 'simcore[trace]'`"
        ) from None
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(
            "simcore prune needs torch; run `pip install torch==2.13.0` then `pip install 'simcore[trace]'`"
        ) from None
    path = prune_model(
        model=model,
        method=method,
        sparsity=sparsity,
        alpha=alpha,
        blocksize=blocksize,
        damp=damp,
        calib_tokens=calib_tokens,
        seq_len=seq_len,
        out=out,
        calib_offset=DEFAULT_CALIB_OFFSET if calib_offset is None else calib_offset,
        eval_tokens=eval_tokens,
        eval_offset=eval_offset,
        weight_bits=weight_bits,
        model_path=model_path,
        text=text,
        dataset=dataset,
        allow_download=allow_download,
        progress=not no_progress,
        log=None if no_progress else click.echo,
    )
    from simcore.report_text import printable

    m = json.loads((path / MANIFEST_FILE).read_text())
    b, p = m["bytes"], m["perplexity"]
    click.echo(
        printable(
            f"Wrote {path}: {m['model']} {m['method']} {m['pattern']}, kept {b['kept_fraction']:.3f} of {b['weights']} MLP weights; "
            f"MLP {b['dense_mlp_bytes'] / 1e6:.2f} MB -> {b['pruned_mlp_bytes'] / 1e6:.2f} MB at {b['weight_bits']:g} bits "
            f"({b['metadata']}); perplexity dense {p['dense']:.2f} -> pruned {p['pruned']:.2f} "
            f"on tokens [{m['evaluation']['tokens'][0]}, {m['evaluation']['tokens'][1]}) "
            f"(calibration [{m['calibration']['tokens'][0]}, {m['calibration']['tokens'][1]}), {m['calibration']['source']})."
        )
    )
