"""The evals of a frontier: which configurations share one, the log that makes them resumable, and the
processes that run them.

**Reuse rule.** An eval's perplexity depends only on the masks it applies. Every method's masks depend on
the method, its target density and its options (as the method resolves them: dip's ρ split, and where it
came from, included). When the masks also depend on the cache — ``Setting.cache_dependent``, which the method
declares through its ``Selection`` (dip-ca with γ < 1 or its approximate selection), not a list of names —
they depend in addition on the policy and on each unit kind's cache capacity (which the DRAM size, bits,
context and kind split decide). Device, bandwidths and the Flash model only re-time a run. So each
configuration gets an :func:`eval_key` hashing exactly these, plus the eval's own inputs (model, text
content, token range and windows, calibration range, the model's calibration file, the simcore version);
configurations with one key share one eval, run with the settings of the first of them in grid order.

**Log.** ``<out>/evals.jsonl`` holds one JSON line per finished eval, appended and handed to the OS as soon
as the eval ends, so killing a frontier loses only the evals in flight; a line cut short by a kill is skipped
when read. A resumed frontier runs only the keys the log lacks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simcore import __version__
from simcore.errors import ConfigError

LOG_NAME = "evals.jsonl"

EVAL_DROPS = ("trace", "model", "tokens", "threads", "batch_tokens", "flash_model", "flash_bundle", "layout")
"""Settings of a configuration an eval does not take: where the trace is, how much of it to replay, and how
Flash reads are timed (an eval's timing is not used by the frontier)."""


@dataclass(frozen=True)
class EvalSpec:
    """What every eval of a frontier shares: the model and the text (``simcore eval``'s options)."""

    model: str
    model_path: str | None = None
    text: str | None = None
    dataset: str | None = None
    tokens: int = 1024
    seq_len: int = 256
    offset: int = 0
    calib_tokens: int = 512
    calib_offset: int = 8192

    def evaluate_kwargs(self) -> dict:
        return {
            "text": self.text,
            "dataset": self.dataset,
            "tokens": self.tokens,
            "seq_len": self.seq_len,
            "offset": self.offset,
            "calib_tokens": self.calib_tokens,
            "calib_offset": self.calib_offset,
        }


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def model_identity(spec: EvalSpec, model_obj: Any = None) -> dict:
    """What names the evaluated model's weights: for a name, where it loads from and that file's size and
    modification time (a directory: its config.json's digest); for a loaded model, a fingerprint of its
    parameters (shape and two sums each)."""
    if model_obj is not None:
        import torch

        h = hashlib.sha256()
        with torch.no_grad():
            for n, p in model_obj.named_parameters():
                q = p.detach().to(torch.float64)
                h.update(f"{n}{tuple(p.shape)}{float(q.sum()):.17g}{float(q.abs().sum()):.17g}".encode())
        return {"name": spec.model, "object": h.hexdigest()[:16]}
    from simcore.models.registry import resolve

    src = resolve(spec.model, spec.model_path)  # ConfigError for an unknown name, before any work
    location = Path(src.path) / src.gguf_file if src.gguf_file else Path(src.path)
    ident: dict = {"name": spec.model, "location": str(location)}
    try:
        if location.is_file():
            st = location.stat()
            ident["file"] = [st.st_size, st.st_mtime_ns]
        elif (location / "config.json").is_file():
            ident["config"] = _digest((location / "config.json").read_bytes())
    except OSError:
        pass
    return ident


def eval_identity(spec: EvalSpec, model_ident: dict, text_source) -> dict:
    """The inputs every eval of the frontier shares, as plain data (part of every eval key)."""
    return {
        "model": model_ident,
        "text": {"source": text_source.name, "sha256": _digest(text_source.text.encode("utf-8", "surrogatepass"))},
        "tokens": spec.tokens,
        "seq_len": spec.seq_len,
        "offset": spec.offset,
        "calib_tokens": spec.calib_tokens,
        "calib_offset": spec.calib_offset,
        "simcore": __version__,
    }


def mask_identity(setting, cfg, inputs: dict) -> dict:
    """What a configuration's masks depend on (module docstring): method, density, options and the resolved
    selection; for cache-dependent masks also the policy and each kind's capacity per layer. ``setting`` is
    the configuration resolved (``resolve_setting``), ``inputs`` its input files' identities
    (``simcore.sweep.inputs.inputs_of``: the calibration file, and method or policy files given by path)."""
    sel = setting.selection
    ident = {
        "method": cfg.method,
        "method_file": inputs.get("method"),
        "calibration": inputs.get("calibration"),
        "density": setting.density,
        "options": setting.options.model_dump() if setting.options is not None else None,
        "fractions": list(sel.fractions),
        "kinds": [{f: v for f, v in dataclasses.asdict(k).items() if f != "score_fn"} for k in sel.kinds],
        "detail": sel.detail,
        "cache_dependent": bool(setting.cache_dependent),
        "pruned": inputs.get("pruned"),
    }
    if setting.cache_dependent:
        ident["policy"] = cfg.policy
        ident["policy_file"] = inputs.get("policy")
        ident["capacities"] = {k.name: int(k.capacity) for k in setting.mems[0].kinds}
    return ident


def eval_key(shared: dict, masks: dict) -> str:
    """The key of an eval: a hash of the shared eval inputs and of the masks' identity."""
    text = json.dumps({"eval": shared, "masks": masks}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def eval_settings(settings: dict) -> dict:
    """A configuration's settings as an eval takes them (:data:`EVAL_DROPS` left out)."""
    return {k: v for k, v in settings.items() if k not in EVAL_DROPS}


# ---------------------------------------------------------------------- the log


class EvalLog:
    """``<out>/evals.jsonl``: one JSON object per line, one line per finished eval (see the module
    docstring). ``read`` returns the records by key (a later line of one key wins); ``append`` writes one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def read(self) -> dict[str, dict]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise ConfigError(f"cannot read the eval log {self.path}: {e.strerror}") from None
        out: dict[str, dict] = {}
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the last line of a frontier killed while writing it
            if isinstance(rec, dict) and isinstance(rec.get("key"), str) and rec.get("status") == "ok":
                out[rec["key"]] = rec
        return out

    def append(self, record: dict) -> None:
        """Append one record as one line, handed to the OS at once (a kill afterwards loses nothing)."""
        from simcore.results import strict_json

        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
                size = os.fstat(self._fd).st_size
                if size and _last_byte(self.path) != b"\n":  # a line cut short by a kill: end it first
                    os.write(self._fd, b"\n")
            except OSError as e:
                raise ConfigError(f"cannot write the eval log {self.path}: {e.strerror}") from None
        data = (strict_json(record, sort_keys=True) + "\n").encode()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            raise ConfigError(
                f"cannot append to the eval log {self.path}: {e.strerror}; the evals finished so far are in it, "
                "re-run the frontier to resume"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


# ---------------------------------------------------------------------- running evals


class EvalRunner:
    """Runs the evals of one frontier in one process, loading the model once, on the first eval.

    ``model_obj``/``tokenizer``: an already-loaded transformers model (the Python API); otherwise the
    model named by ``spec.model`` is loaded offline. A job is ``{"key", "config", "settings"}``; the result is
    the record the log keeps: perplexity, tokens scored, the eval's own seconds, the settings it ran with and
    the cache figures of the scored run."""

    def __init__(self, spec: EvalSpec, model_obj: Any = None, tokenizer: Any = None):
        self.spec = spec
        self.given = model_obj
        self.model_obj, self.tokenizer = model_obj, tokenizer
        self.load_s = 0.0

    def _model(self):
        if self.model_obj is None:
            from simcore.models.registry import load_model

            t0 = time.perf_counter()
            lm = load_model(self.spec.model, model_path=self.spec.model_path, progress=False)
            self.model_obj, self.tokenizer = lm.model, lm.tokenizer
            self.load_s += time.perf_counter() - t0
        return self.model_obj, self.tokenizer

    def __call__(self, job: dict) -> dict:
        from simcore.eval.evaluate import evaluate
        from simcore.sweep.grid import replay_config

        load_before = self.load_s
        net, tok = self._model()
        t0 = time.perf_counter()
        r = evaluate(
            net,
            replay_config(job["settings"]),
            tokenizer=tok,
            name=self.spec.model,
            **self.spec.evaluate_kwargs(),
        )
        totals = r.replay.totals
        return {
            "key": job["key"],
            "status": "ok",
            "config": job["config"],
            "settings": job["settings"],
            "perplexity": r.perplexity,
            "tokens_scored": r.tokens_scored,
            "text": r.text,
            "eval_s": r.seconds,
            "wall_s": time.perf_counter() - t0,
            "load_s": self.load_s - load_before,
            "hit_rate_steady": totals.get("hit_rate_steady"),
            "tokens_per_s_steady": totals.get("tokens_per_s_steady"),
            "mlp_density": totals.get("mlp_density"),
            "computed_at": time.time(),
            "simcore": __version__,
        }


_RUNNER: EvalRunner | None = None
"""The runner of a worker process (process pool: set by its initializer; Dask: made on first use)."""
_RUNNER_LOCK = threading.Lock()
"""An eval patches the model's MLPs while it runs: a Dask worker with several threads runs one at a time."""


def _init_worker(parent: int, spec: EvalSpec, model_obj: Any, tokenizer: Any, threads: int) -> None:
    from simcore.sweep.run import _exit_with_parent

    _exit_with_parent(parent)
    global _RUNNER
    _RUNNER = EvalRunner(spec, model_obj, tokenizer)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # the eval itself reports it
        pass


def _run_in_worker(job: dict) -> dict:
    return _RUNNER(job)


def _run_on_dask(spec: EvalSpec, job: dict, model: tuple | None = None) -> dict:
    """A job on a Dask worker: ``model`` is the (model, tokenizer) the client scattered, or None to load
    ``spec.model`` by name; the worker keeps its runner (and so the model) between jobs."""
    global _RUNNER
    obj, tok = model if model is not None else (None, None)
    with _RUNNER_LOCK:
        if _RUNNER is None or _RUNNER.spec != spec or _RUNNER.given is not obj:
            _RUNNER = EvalRunner(spec, obj, tok)
        return _RUNNER(job)


def run_evals(
    jobs: list[dict],
    spec: EvalSpec,
    finished,
    *,
    model_obj: Any = None,
    tokenizer: Any = None,
    workers: int = 1,
    executor: str = "process",
    scheduler: str | None = None,
) -> None:
    """Run ``jobs`` and call ``finished(record)`` for each as it ends (in this process); each record says how
    long its eval took (``wall_s``) and how long loading the model took before it (``load_s``, where it did).

    ``workers`` 1 runs them here; more runs that many local processes, each loading the model once (each
    with an equal share of the cores for torch); ``executor`` "dask" submits them to the Dask scheduler at
    ``scheduler``, whose workers load the model by name once each (a loaded ``model_obj`` is sent to each
    worker once instead). A SimcoreError of an eval stops the others and
    propagates (the finished ones are already logged)."""
    if not jobs:
        return
    if executor == "dask":
        _dask(jobs, spec, scheduler, finished, None if model_obj is None else (model_obj, tokenizer))
    elif workers == 1 or len(jobs) == 1:
        runner = EvalRunner(spec, model_obj, tokenizer)
        for job in jobs:
            finished(runner(job))
    else:
        _processes(jobs, spec, model_obj, tokenizer, min(workers, len(jobs)), finished)


def _processes(jobs, spec, model_obj, tokenizer, n: int, finished) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // n)
    with ProcessPoolExecutor(
        n, initializer=_init_worker, initargs=(os.getpid(), spec, model_obj, tokenizer, threads)
    ) as pool:
        futures = [pool.submit(_run_in_worker, j) for j in jobs]
        try:
            for f in as_completed(futures):
                finished(f.result())
        except BrokenProcessPool:
            raise ConfigError(
                "an eval worker process died (out of memory? killed?); the finished evals are logged: re-run the "
                "same frontier to resume, perhaps with fewer --workers (each loads the model)"
            ) from None
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _dask(jobs, spec, scheduler, finished, model: tuple | None) -> None:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("--executor dask needs the distributed package: pip install 'simcore[dask]'") from None
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler} ({e}); is it running?") from None
    with client:
        shipped = client.scatter([model], broadcast=True)[0] if model is not None else None  # once per worker
        futures = [client.submit(_run_on_dask, spec, j, shipped, pure=False) for j in jobs]
        try:
            for f in dask_completed(futures):
                finished(f.result())
        except BaseException:
            client.cancel(futures)
            raise


__all__ = [
    "EvalLog",
    "EvalRunner",
    "EvalSpec",
    "eval_identity",
    "eval_key",
    "eval_settings",
    "mask_identity",
    "model_identity",
    "run_evals",
]
