"""The ``simcore`` command. Thin (STYLE.md #7): parse, call one library function, print or write.

Every user error is a SimcoreError, printed as one line (``simcore: error: ...``) with exit status 2.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from pathlib import Path

import click
from pydantic import BaseModel

from simcore import __version__
from simcore.errors import SimcoreError


def _options_from(model: type[BaseModel], skip: tuple[str, ...] = ()):
    """Click options for every field of a pydantic settings model (each setting described once)."""

    def decorate(f):
        for name, fld in reversed(list(model.model_fields.items())):
            if name in skip:
                continue
            ann = fld.annotation
            args = (
                typing.get_args(ann)
                if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union
                else ()
            )
            base = next((a for a in args if a is not type(None)), ann) if args else ann
            opt = "--" + name.replace("_", "-")
            default = fld.default
            help_ = fld.description or ""
            if default is not None and not isinstance(default, list):
                help_ += f"  [default: {default}]"
            if base is bool:
                f = click.option(opt + "/--no-" + name.replace("_", "-"), name, default=default, help=help_)(f)
            elif typing.get_origin(base) is list:
                f = click.option(
                    opt,
                    name,
                    default=None,
                    help=help_ + " (comma-separated)",
                    callback=lambda c, p, v, opt=opt: _numbers(opt, v),
                )(f)
            else:
                ctype = {int: int, float: float}.get(base, str)
                f = click.option(opt, name, type=ctype, default=None, show_default=False, help=help_)(f)
        return f

    return decorate


def _numbers(option: str, text: str | None) -> list[float] | None:
    """A comma-separated list of numbers (``1,3``), or a ConfigError naming the option."""
    if not text:
        return None
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise SimcoreError(f"{option} {text!r}: give comma-separated numbers such as 1,3") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="simcore")
def cli():
    """simcore: how fast does an LLM generate tokens on a phone when its MLP weights stream from
    Flash through a small DRAM cache, under which sparsity method, cache policy and device?

    \b
    Typical use:
      simcore trace                      # record SmolLM2-135M's MLP activations (needs the trace extra)
      simcore replay --device a18 --dram 64MB --policy lfu --gamma 0.2
      simcore synth --model mistral7b --tokens 512 --out traces/mistral7b-synth
    """


from simcore.engine.settings import ReplayConfig  # noqa: E402


@cli.command()
@_options_from(ReplayConfig)
@click.option("--json", "as_json", is_flag=True, help="print the full result as JSON instead of the table")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="also write per-layer results to FILE.parquet (or FILE.json); the resolved configuration is stored with them",
)
@click.option(
    "--progress/--no-progress", default=None, help="progress bar on stderr (default: when stderr is a terminal)"
)
def replay(as_json, out, progress, **settings):
    """Replay a trace under a masking method, cache policy and device; print hit rates, bytes per
    token and tokens/s.

    \b
    Examples:
      simcore replay --device a18 --dram 4GB --policy lfu --gamma 0.2
      simcore replay --trace traces/mistral7b --device a18 --dram 4GB --method dip-ca --density 0.5 --json
      simcore replay --model smollm2-135m --method glu --density 0.8 --policy belady --dram 64MB
    """
    from simcore.engine.replay import replay as run
    from simcore.report_text import printable, replay_table
    from simcore.results import atomic_write_bytes, check_output

    if out:
        check_output(out)
    settings = {k: v for k, v in settings.items() if v is not None}
    result = run(progress=sys.stderr.isatty() if progress is None else progress, **settings)
    _warn(result.warnings)
    if out:
        if out.endswith(".json"):
            atomic_write_bytes(out, result.to_json().encode())
        else:
            result.to_parquet(out)
    click.echo(result.to_json() if as_json else printable(replay_table(result)))


def _warn(warnings: list[str]) -> None:
    """Print what a result says the user should know, one line each on stderr."""
    from simcore.report_text import printable

    for w in warnings:
        click.echo(f"simcore: warning: {printable(w, one_line=True)}", err=True)


@cli.command()
@click.option(
    "--model",
    default="smollm2-135m",
    show_default=True,
    help="model shape preset: smollm2-135m, mistral7b, llama3-8b, phi3-mini, phi3-medium",
)
@click.option("--tokens", type=int, default=512, show_default=True, help="tokens to generate")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="trace directory [default: traces/<model>-synth]"
)
@click.option("--seed", type=int, default=0, show_default=True, help="random seed (same seed, same trace)")
@click.option("--seq-len", type=int, default=256, show_default=True, help="tokens per window (recorded as positions)")
@click.option(
    "--phi", type=float, default=0.7, show_default=True, help="token-to-token correlation of each channel (AR(1))"
)
@click.option(
    "--columns",
    default="x,h,gate,up",
    show_default=True,
    help="magnitude columns to write: x and h required; gate for the gate and cats methods, up for up",
)
@click.option("--progress/--no-progress", default=None, help="progress bar on stderr (default: when a terminal)")
def synth(model, tokens, out, seed, seq_len, phi, columns, progress):
    """Write a synthetic trace with realistic structure (heavy tails, persistent channels,
    token-to-token correlation) for a model shape preset."""
    from simcore.trace.synth import synth_trace

    out = out or f"traces/{model}-synth"
    path = synth_trace(
        model,
        tokens,
        out,
        seed=seed,
        seq_len=seq_len,
        phi=phi,
        columns=columns,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    click.echo(f"wrote synthetic {model} trace of {tokens} tokens to {path}")


@cli.command()
@click.option(
    "--grid",
    "grid_file",
    help="YAML grid file (axes under 'grid:', fixed settings beside it); flags below add or replace axes",
)
@click.option("--device", help="device profiles, comma-separated (a18,snapdragon-8s-gen3)")
@click.option("--dram", help="DRAM budgets: 48MB,64MB or a range 32MB:128MB:16MB")
@click.option("--flash-bw", help="Flash bandwidths in GB/s: 1,2 or 0.5:4:0.5")
@click.option("--dram-bw", help="DRAM bandwidths in GB/s: 60,77")
@click.option("--flash-model", help="Flash time models: constant,curve (curve: the device's read curve)")
@click.option("--layout", help="`simcore layout` files (Flash orders of the units), comma-separated; with curve")
@click.option("--method", help="methods: dense,glu,gate,up,cats,dip,dip-ca")
@click.option("--policy", help="policies, comma-separated: names (simcore policies) or paths of policy .py files")
@click.option("--gamma", help="dip-ca gammas: 0.1,0.2 or 0.1:0.5:0.1 (other methods ignore gamma)")
@click.option("--density", help="MLP densities: 0.4,0.5 or 0.3:0.7:0.1")
@click.option("--bits", help="weight bits: 4,8")
@click.option("--trace", help="trace directory [default: traces/<model>]")
@click.option("--model", help="model alias, short for --trace traces/NAME [default: smollm2-135m]")
@click.option("--tokens", type=int, help="replay only the first N tokens of the trace")
@click.option("--context", type=int, help="context length (KV cache) [default: 1024]")
@click.option("--warmup", type=int, help="tokens left out of steady-state figures [default: 100]")
@click.option(
    "--out",
    default="results/sweep.parquet",
    show_default=True,
    help="results table; re-running the same sweep resumes it (failed rows are retried), other grids' rows "
    "in it are kept",
)
@click.option("--workers", type=int, default=0, show_default=True, help="worker processes (0: one per core)")
@click.option(
    "--executor",
    type=click.Choice(["process", "dask"]),
    default="process",
    show_default=True,
    help="run tasks in local processes or on an existing Dask cluster",
)
@click.option("--scheduler", help="Dask scheduler address for --executor dask (tcp://host:8786)")
@click.option("--progress/--no-progress", default=None, help="progress bar on stderr (default: when a terminal)")
def sweep(grid_file, out, workers, executor, scheduler, progress, **flags):
    """Run a grid of replays and collect one Parquet row per configuration.

    Hit counts are computed once per cache behaviour: bandwidths and devices only change the timing,
    and all DRAM sizes of a configuration share one pass over the trace. A configuration that fails
    gets an error row and fails alone; the exit status is 2 when none succeeded. Re-running resumes:
    ok rows whose inputs are unchanged are reused, the rest computed; rows of other grids in --out
    are kept.

    \b
    Examples:
      simcore sweep --dram 48MB:96MB:16MB --flash-bw 1,2 --method dip,dip-ca --out results/dram.parquet
      simcore sweep --grid grids/gamma.yaml --workers 2
      simcore sweep --grid grids/big.yaml --executor dask --scheduler tcp://10.0.0.5:8786
    """
    from simcore.sweep.grid import AXES, Grid, parse_axis
    from simcore.sweep.run import raise_if_nothing_succeeded, run_sweep, summarise, sweep_stats

    axes = {k: parse_axis(k, v) for k, v in flags.items() if k in AXES and v is not None}
    fixed = {k: v for k, v in flags.items() if k not in AXES and v is not None}
    if grid_file:
        grid = Grid.from_yaml(grid_file, overrides=axes)
        grid.fixed.update(fixed)
    else:
        grid = Grid(axes, fixed)
    table = run_sweep(
        grid,
        out,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    click.echo(summarise(table))
    click.echo(f"results: {out} (grid: {sweep_stats(table)['grid_file']})")
    raise_if_nothing_succeeded(table)  # exit status 2 when no configuration of the grid succeeded


@cli.command(name="eval")
@click.option(
    "--model",
    "model_name",
    default="smollm2-135m",
    show_default=True,
    help="model alias, Hugging Face id or local directory (as for simcore trace)",
)
@click.option("--model-path", help="local model directory or .gguf file")
@click.option("--text", type=click.Path(dir_okay=False), help="evaluate on a local text file")
@click.option("--dataset", help="wikitext2 (local datasets cache) or a local wiki.test.raw")
@click.option("--tokens", "eval_tokens", type=int, default=1024, show_default=True, help="tokens scored")
@click.option("--seq-len", type=int, default=256, show_default=True, help="tokens per window")
@click.option("--offset", type=int, default=0, show_default=True, help="first token of the evaluation text")
@click.option("--calib-tokens", type=int, default=512, show_default=True, help="cats: calibration tokens")
@click.option(
    "--calib-offset",
    type=int,
    default=8192,
    show_default=True,
    help="first calibration token (calibration and evaluation text must not overlap)",
)
@click.option("--pruned", type=click.Path(file_okay=False), help="apply a `simcore prune` output's static masks first")
@click.option("--lora", type=click.Path(file_okay=False), help="apply a `simcore finetune` output's LoRA adapters")
@click.option(
    "--lora-merge/--no-lora-merge",
    default=True,
    show_default=True,
    help="merge the adapters into the weights (no extra bytes), or keep them beside the weights (resident in "
    "DRAM and read every token, at 16 bits per weight)",
)
@click.option(
    "--fidelity",
    "fidelity_trace",
    is_flag=False,
    flag_value="",
    default=None,
    help="also replay the dense trace (traces/<model>, or --fidelity=DIR) with the same settings and print "
    "replay's estimate next to eval's exact figures, and the gap",
)
@_options_from(
    ReplayConfig,
    skip=("trace", "model", "tokens", "threads", "batch_tokens", "cats_calib_tokens", "pruned", "layout"),
)
@click.option("--json", "as_json", is_flag=True, help="print everything as JSON (perplexity among the keys)")
@click.option("--out", type=click.Path(dir_okay=False), help="also write the JSON result to FILE")
@click.option("--progress/--no-progress", default=None, help="progress bar on stderr (default: when a terminal)")
def eval_(
    model_name,
    model_path,
    text,
    dataset,
    eval_tokens,
    seq_len,
    offset,
    calib_tokens,
    calib_offset,
    pruned,
    lora,
    lora_merge,
    fidelity_trace,
    as_json,
    out,
    progress,
    **settings,
):
    """Perplexity of a real model with a sparsity method applied inside every MLP and, for dip-ca,
    the DRAM cache simulated token by token in the loop; prints the exact hit rate, bytes and
    tokens/s of the run it scored.

    \b
    Example:
      simcore eval --model smollm2-135m --method dip-ca --density 0.5 --gamma 0.2 --device a18 --dram 64MB --policy lfu
    """
    import json as _json

    from simcore.eval.evaluate import evaluate
    from simcore.report_text import printable, replay_table
    from simcore.results import atomic_write_bytes, check_output, strict_json

    settings = {k: v for k, v in settings.items() if v is not None}
    show = sys.stderr.isatty() if progress is None else progress
    if out:
        check_output(out)
    if fidelity_trace is not None:  # a missing trace is found now, not after the evaluation
        from simcore.engine.settings import resolve_trace_path
        from simcore.trace.format import TraceReader

        TraceReader(resolve_trace_path(fidelity_trace or None, None if fidelity_trace else model_name))
    r = evaluate(
        model_name,
        model_path=model_path,
        text=text,
        dataset=dataset,
        tokens=eval_tokens,
        seq_len=seq_len,
        offset=offset,
        calib_tokens=calib_tokens,
        calib_offset=calib_offset,
        progress=show,
        pruned=pruned,
        lora=lora,
        lora_merge=lora_merge,
        **settings,
    )
    result = r.to_dict()
    if fidelity_trace is not None:
        from simcore.engine.replay import replay as run_replay

        est = run_replay(
            trace=fidelity_trace or None,
            model=None if fidelity_trace else model_name,
            tokens=eval_tokens,
            pruned=pruned,
            **settings,
        )
        result["fidelity"] = {
            key: {
                "replay": est.totals[key],
                "eval": r.replay.totals[key],
                "gap": r.replay.totals[key] - est.totals[key],
            }
            for key in ("hit_rate_steady", "tokens_per_s_steady", "flash_bytes_per_token_steady", "mlp_density")
        }
        result["fidelity"]["trace"] = est.config["trace"]
        _warn(est.warnings)
    _warn(r.replay.warnings)
    data = strict_json(result, indent=2)
    if out:
        atomic_write_bytes(out, data.encode())
    if as_json:
        click.echo(data)
        return
    t = r.text
    notes = []  # every calibration text this number depends on, to show it is disjoint from the scored text
    if t["calibration_tokens"]:
        a, b = t["calibration_tokens"]
        notes.append(f"cats thresholds from tokens {a}-{b}")
    split = (r.replay.config.get("selection") or {}).get("split", "")
    if split.startswith("calibrated"):
        notes.append(f"dip split {split}")
    trained_on = (r.replay.config.get("selection") or {}).get("trained_on")
    if trained_on:  # dejavu's predictors
        notes.append(f"predictors trained on tokens {trained_on['tokens'][0]}-{trained_on['tokens'][1]}")
    if pruned:
        cal = _json.loads((Path(pruned) / "manifest.json").read_text()).get("calibration", {})
        notes.append(f"static masks calibrated on {cal.get('tokens', cal)}")
    if t.get("lora"):
        a, b = t["lora"]["trained_on"]["tokens"]
        notes.append(f"LoRA adapters trained on tokens {a}-{b}")
    click.echo(
        printable(
            f"perplexity {r.perplexity:.3f} over {r.tokens_scored} predicted tokens of {t['source']} "
            f"(tokens {t['eval_tokens'][0]}-{t['eval_tokens'][1]}, windows of {t['seq_len']})"
            + (f"; calibration text disjoint from them: {'; '.join(notes)}" if notes else "; no calibration text used")
        )
    )
    if t.get("lora"):
        from simcore.units import format_bytes

        lo = t["lora"]
        how = (
            "merged into the weights: no extra bytes"
            if lo["merged"]
            else f"unmerged: {format_bytes(lo['adapter_bytes'])} resident in DRAM (fp16) and read every token"
        )
        click.echo(
            printable(
                f"adapter  LoRA {lo['path']} ({lo['method']} rho={lo['density']:g}, rank {lo['rank']}, "
                f"{lo['steps']} steps), {how}"
            )
        )
    click.echo(printable(replay_table(r.replay)))
    if "fidelity" in result:
        f = result["fidelity"]
        click.echo(printable(f"\nfidelity: replay of the dense trace {f['trace']} vs this exact run (eval - replay)"))
        for key, label, scale, unit in (
            ("hit_rate_steady", "steady hit rate", 100, "%"),
            ("tokens_per_s_steady", "steady tokens/s", 1, ""),
            ("flash_bytes_per_token_steady", "Flash per token", 1e-6, " MB"),
            ("mlp_density", "MLP density", 1, ""),
        ):
            v = f[key]
            click.echo(
                f"  {label:<16} replay {v['replay'] * scale:10.3f}{unit}   eval {v['eval'] * scale:10.3f}{unit}"
                f"   gap {v['gap'] * scale:+.3f}{unit}"
            )


@cli.command()
@click.option("--model", "model_name", default="smollm2-135m", show_default=True, help="model alias, id or directory")
@click.option("--model-path", help="local model directory or .gguf file")
@click.option("--densities", default="0.4,0.5,0.6", show_default=True, help="target MLP densities, comma-separated")
@click.option("--text", type=click.Path(dir_okay=False), help="calibration text file (default: the embedded text)")
@click.option("--dataset", help="wikitext2 (local datasets cache) or a local wiki.test.raw")
@click.option("--tokens", type=int, default=512, show_default=True, help="calibration tokens")
@click.option(
    "--offset",
    type=int,
    default=8192,
    show_default=True,
    help="first calibration token; evaluation (simcore eval) reads from 0, so keep them disjoint",
)
@click.option("--candidates", type=int, default=9, show_default=True, help="splits tried per density")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="write the calibration here (default: the calibration of this model and text in the calibration "
    "directory, where replay and eval find it: $SIMCORE_CALIBRATION, else ~/.local/share/simcore/calibration)",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="model loading bars on stderr (default: when stderr is a terminal); --no-progress also hides the "
    "line per split tried",
)
def calibrate(model_name, model_path, densities, text, dataset, tokens, offset, candidates, out, progress):
    """Find, per target density, DIP's split between input and down density (rho_in, rho_d) that
    minimises perplexity on calibration text, and save it with the model, the text's sha256 and the
    token range. Saved in the calibration directory, replay and eval of this model on this text use it by
    default (never on the tokens it was calibrated on); elsewhere, pass it with --calibration FILE."""
    from simcore.eval.calibrate import calibrate as run

    show = sys.stderr.isatty() if progress is None else progress
    try:
        values = tuple(float(v) for v in densities.split(","))
    except ValueError:
        raise click.BadParameter(f"{densities!r}: give numbers such as 0.4,0.5", param_hint="--densities") from None
    r = run(
        model_name,
        values,
        text=text,
        dataset=dataset,
        tokens=tokens,
        offset=offset,
        candidates=candidates,
        model_path=model_path,
        log=None if progress is False else (lambda m: click.echo(m, err=True)),
        progress=show,
        out=out,
    )
    for e in r["splits"]:
        click.echo(
            f"density {e['density']:g}: rho_in {e['rho_in']:.3f}, rho_d {e['rho_d']:.3f} "
            f"(perplexity {e['perplexity']:.3f} on tokens {r['text']['tokens'][0]}-{r['text']['tokens'][1]})"
        )
    click.echo(f"saved {r['path']}")


@cli.command()
def devices():
    """List the bundled device profiles."""
    from simcore.device import available_devices, load_device

    for name in available_devices():
        d = load_device(name)
        click.echo(f"{name:<22} DRAM {d.dram_bw_gbps:>5g} GB/s  Flash {d.flash_bw_gbps:>4g} GB/s  {d.description}")


def _first_line(module, width: int = 88) -> str:
    """A module's docstring's first sentence, cut to ``width`` characters."""
    text = " ".join((module.__doc__ or "").split()).split(". ")[0]
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command(name="policies")
def policies_():
    """List the cache policies (a policy file of one's own is given by path: --policy ./my_policy.py)."""
    from simcore import policies

    for name in policies.available():
        p = policies.load(name)
        flags = [f for f, on in (("needs the future", p.NEEDS_FUTURE), ("stack", p.STACK)) if on]
        family = policies.family(p) + (f", {', '.join(flags)}" if flags else "")
        click.echo(f"{name:<8} [{family}] {_first_line(p)}")


@cli.command(name="methods")
def methods_():
    """List the masking methods and their options (a method file of one's own: --method ./my_method.py)."""
    from simcore import methods

    for name in methods.available():
        m = methods.load(name)
        options = ", ".join("--" + o.replace("_", "-") for o in m.Options.model_fields)
        click.echo(f"{name:<7} {_first_line(m)}" + (f"\n        options: {options}" if options else ""))


@cli.command()
@click.argument("trace", type=click.Path())
@click.option(
    "--verify",
    is_flag=True,
    help="recompute every layer file's checksum and compare it with the one recorded when the trace was "
    "written: one line per file that changed and exit status 2, or 'verified N layer files'",
)
def info(trace, verify):
    """Describe a trace as JSON: model shapes, source, tokens, columns, and the methods its columns
    can serve ("methods"); the checksums stay in its trace.json.

    \b
    Examples:
      simcore info traces/smollm2-135m
      simcore info --verify traces/smollm2-135m
    """
    import json as _json

    from simcore.errors import TraceError
    from simcore.trace.format import NoChecksums, TraceReader

    r = TraceReader(trace)
    if verify:
        n = r.model.n_layers
        try:
            bad = r.verify()
        except NoChecksums as e:
            click.echo(str(e))
            return
        for line in bad:
            click.echo(line, err=True)
        if bad:
            raise TraceError(
                f"{len(bad)} of {n} layer files of {r.path} changed since they were written; re-create the trace"
            )
        click.echo(f"verified {n} layer files of {r.path}: every checksum matches")
        return
    data = r.meta.model_dump(mode="json", exclude={"command", "checksums"})
    data["methods"] = r.methods()
    click.echo(_json.dumps(data, indent=2, allow_nan=False))


from simcore.flash.layout import layout_command  # noqa: E402
from simcore.flash.probe import probe_flash  # noqa: E402
from simcore.frontier.command import frontier_command  # noqa: E402
from simcore.predictor.command import train_predictor_command  # noqa: E402
from simcore.prune.command import prune_command  # noqa: E402
from simcore.report.command import report_command  # noqa: E402

cli.add_command(report_command)
cli.add_command(prune_command)
cli.add_command(probe_flash)
cli.add_command(layout_command)
cli.add_command(frontier_command)
cli.add_command(train_predictor_command)


def _add_optional_commands() -> None:
    try:
        from simcore.trace.command import trace_command
    except ImportError:
        return
    cli.add_command(trace_command)
    from simcore.finetune.command import finetune_command

    cli.add_command(finetune_command)


_add_optional_commands()


def _error(message: object) -> int:
    """Print one line ``simcore: error: ...`` on stderr (printable whatever bytes a path holds); return 2."""
    from simcore.report_text import printable

    click.echo(f"simcore: error: {printable(message, one_line=True)}", err=True)
    return 2


def _sigterm_as_interrupt(run):
    """Make SIGTERM behave like Ctrl-C while ``run`` runs: it raises KeyboardInterrupt in the main
    thread, so writers' cleanup (a trace's temporary directory, a results table) runs as for Ctrl-C.
    The previous handler is restored afterwards; off the main thread nothing is installed. A process
    forked from this one (a sweep worker) that inherits the handler ends as SIGTERM would end it."""
    import functools
    import signal
    import threading

    owner = os.getpid()

    def interrupt(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return run(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            return run(*args, **kwargs)
        finally:
            if previous is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(signal.SIGTERM, previous)

    return wrapper


@_sigterm_as_interrupt
def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simcore`` console script."""
    try:
        cli.main(args=argv, prog_name="simcore", standalone_mode=False)
    except SimcoreError as e:
        return _error(e)
    except click.exceptions.Abort:
        click.echo("simcore: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("simcore: interrupted; nothing half-written was left behind", err=True)
        return 130
    except click.UsageError as e:  # one line, like every other error; the usage is one --help away
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `simcore`: the help is what was asked for
            e.show()
            return e.exit_code
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        return _error(f"{e.format_message()}{hint}")
    except click.ClickException as e:
        return _error(e.format_message())
    except UnicodeEncodeError as e:  # a library that takes paths as UTF-8 text only
        return _error(f"cannot use {e.object!r}: a library simcore uses needs paths that are valid UTF-8; rename it")
    except OSError as e:  # a file the user named that cannot be read or written, found late
        where = f"{os.fsdecode(e.filename)}: " if e.filename else ""
        return _error(f"{where}{os.strerror(e.errno) if e.errno else e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
