"""Device profiles: one YAML file per device in ``simcore/devices/`` (package data, so an installed wheel has
them; ``devices/`` at the repository root links there) (STYLE.md #5).

A profile is loaded into :class:`Device` (pydantic, unknown keys forbidden, units in field
names) and may then be overridden field by field from the command line. Errors name the file
and the field.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simcore.errors import ConfigError

DEVICES_DIR = Path(__file__).resolve().parent / "devices"


class Device(BaseModel):
    """A phone's memory system as the throughput model sees it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(description="short name, usually the file name")
    description: str = Field(default="", description="SoC, memory and storage parts")
    dram_bw_gbps: float = Field(gt=0, description="DRAM read bandwidth the model achieves, GB/s")
    flash_bw_gbps: float = Field(gt=0, description="effective Flash read bandwidth for weight streaming, GB/s")
    dram_capacity_gb: float | None = Field(default=None, gt=0, description="physical DRAM of the device, GB")
    dram_budget_gb: float | None = Field(
        default=None, gt=0, description="default DRAM available to the model, GB (--dram overrides)"
    )
    flash_peak_gbps: float | None = Field(default=None, gt=0, description="Flash interface peak, GB/s (information)")
    compute_tops: float | None = Field(
        default=None, gt=0, description="sustained compute, 10^12 ops/s; enables the compute term"
    )
    flash_page_bytes: int | None = Field(
        default=None, gt=0, description="Flash page, bytes: reads are whole pages (needed with flash_curve)"
    )
    flash_queue_depth: int | None = Field(
        default=None, ge=1, description="requests in flight when flash_curve was measured (information)"
    )
    flash_curve: list[tuple[float, float]] | None = Field(
        default=None,
        description="random-read throughput by request size: [[request bytes, GB/s], ...], sizes increasing "
        "(--flash-model curve; interpolated in log size)",
    )
    dram_pj_per_byte: float | None = Field(default=None, gt=0, description="energy of a DRAM read, pJ per byte")
    flash_pj_per_byte: float | None = Field(default=None, gt=0, description="energy of a Flash read, pJ per byte")
    sources: list[str] = Field(default_factory=list, description="where the figures come from")

    @model_validator(mode="after")
    def _cross_checks(self) -> Device:
        if self.flash_peak_gbps is not None and self.flash_bw_gbps > self.flash_peak_gbps:
            raise ValueError(f"flash_bw_gbps ({self.flash_bw_gbps}) exceeds flash_peak_gbps ({self.flash_peak_gbps})")
        if self.flash_bw_gbps > self.dram_bw_gbps:
            raise ValueError(
                f"flash_bw_gbps ({self.flash_bw_gbps}) exceeds dram_bw_gbps ({self.dram_bw_gbps}); "
                "Flash faster than DRAM is not a phone"
            )
        if self.flash_curve is not None:
            _check_curve(self.flash_curve, self.flash_peak_gbps, self.dram_bw_gbps)
            if self.flash_page_bytes is None:
                raise ValueError(
                    "flash_curve needs flash_page_bytes (the Flash page, e.g. 4096): reads are whole pages"
                )
        if self.dram_capacity_gb and self.dram_budget_gb and self.dram_budget_gb > self.dram_capacity_gb:
            raise ValueError(
                f"dram_budget_gb ({self.dram_budget_gb}) exceeds dram_capacity_gb ({self.dram_capacity_gb})"
            )
        return self


def _check_curve(curve: list, peak: float | None, dram_bw: float) -> None:
    """A throughput-versus-request-size curve must have points, positive sizes in increasing order and
    positive bandwidths no faster than the interface (or DRAM)."""
    if not curve:
        raise ValueError("flash_curve is empty; give [[request bytes, GB/s], ...] (e.g. [[4096, 0.45], [524288, 3.5]])")
    for i, (size, bw) in enumerate(curve):
        if size <= 0 or bw <= 0:
            raise ValueError(f"flash_curve point {i + 1} [{size:g}, {bw:g}]: request bytes and GB/s must be positive")
        if i and size <= curve[i - 1][0]:
            raise ValueError(
                f"flash_curve point {i + 1}: request size {size:g} is not larger than the point before "
                f"({curve[i - 1][0]:g}); list the points by increasing request size"
            )
        limit, what = (peak, "flash_peak_gbps") if peak is not None else (dram_bw, "dram_bw_gbps")
        if bw > limit:
            raise ValueError(f"flash_curve point {i + 1}: {bw:g} GB/s exceeds {what} ({limit:g})")


def available_devices() -> list[str]:
    """Names of the bundled device profiles."""
    return sorted(p.stem for p in DEVICES_DIR.glob("*.yaml"))


def _describe(e: ValidationError) -> str:
    """The most telling error first: an unknown key (usually a typo) explains a missing one."""
    errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
    err = errors[0]
    field = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "value_error":  # a cross-field check: its message names the fields
        return msg.removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(field, list(Device.model_fields), n=1)
        msg = f"unknown key ({'did you mean ' + repr(close[0]) + '? ' if close else ''}known keys: {', '.join(Device.model_fields)})"
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f", got {err['input']!r}"
    return f"field {field!r}: {msg}"


def load_device(name_or_path: str | Path) -> Device:
    """Load a device profile by bundled name (``a18``) or by path to a YAML file."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") or p.exists()):
        p = DEVICES_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            raise ConfigError(
                f"unknown device {str(name_or_path)!r}: choose one of {', '.join(available_devices())} "
                "or give the path of a YAML profile"
            )
    if p.is_dir():
        raise ConfigError(f"--device {p} is a directory, not a YAML device file; give a name or a .yaml file")
    if not p.exists():
        raise ConfigError(f"device file {p} does not exist; give a bundled name or the path of a YAML profile")
    if not p.is_file():
        raise ConfigError(f"--device {p} is not a regular file; give a bundled name or the path of a YAML profile")
    try:
        st = p.stat()
    except OSError as e:
        raise ConfigError(f"cannot read device file {p}: {e.strerror}") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _LOADED:  # a sweep asks for the same profile once per configuration
        _LOADED[key] = _parse_device(p)
    return _LOADED[key].model_copy()


_LOADED: dict[tuple, Device] = {}


def _parse_device(p: Path) -> Device:
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read device file {p}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"device file {p} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"device file {p} is not valid YAML{line}: fix its syntax") from None
    if not isinstance(data, dict):
        got = "is empty" if data is None else f"holds a {type(data).__name__}"
        raise ConfigError(f"device file {p} {got}; it must be a mapping of fields to values (dram_bw_gbps: 60, ...)")
    data.setdefault("name", p.stem)
    try:
        return Device.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"device file {p}: {_describe(e)}") from None


def override(device: Device, **fields) -> Device:
    """A copy of ``device`` with the given fields replaced (None values are ignored), re-validated."""
    data = device.model_dump()
    data.update({k: v for k, v in fields.items() if v is not None})
    try:
        return Device.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"device {device.name} with overrides: {_describe(e)}") from None
