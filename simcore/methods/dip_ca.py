"""dip-ca (Federici et al., cache-aware masking, arXiv 2412.01380): dip whose scores are multiplied by 1
for units in the DRAM cache and by gamma (0 < gamma <= 1) for the others before the top-k, so that
cached units win close calls. gamma = 1 is dip. The variants are the authors' published ones
(``cache_aware_reweighting_current_cache`` and ``cache_aware_reweighting_approximate``):

* ``fixed_top_n``: the top n units by raw score are exempt from re-weighting;
* a warm-up of gamma: linear from 1 over the run's first ``gamma_warmup`` tokens (simcore's), or the
  authors' gamma_t = 1 - (1 - gamma)(1 - gamma^(t/4)), t the token's index in its sequence
  (``gamma_schedule authors``);
* approximate selection (``approx_m``): k units from the top m = approx_m * k, taking the fixed top n,
  then cached units, then uncached top-k units; with ``approx_gamma`` > 0 the ranking scores are first
  blended with the units' normalised cache statistics (their use counts: see ``approx_gamma``).

Masks depend on the cache, so tokens replay strictly in order and Belady is undefined for gamma < 1.
Approximate selection does not re-weight by gamma: --gamma (and its warm-up) with --approx-m is refused,
never ignored."""

from typing import Literal

from pydantic import Field, field_validator, model_validator

from simcore.methods import dip
from simcore.methods.base import Display, Reweight, Selection

DISPLAY = Display(label="dip-ca", color="tab:red", order=70)

AUTHORS_WARMUP = "1 - (1 - gamma)(1 - gamma^(t/4))"


class Options(dip.Options):
    gamma: float = Field(
        default=0.2,
        description="dip-ca: score weight of units not in the cache, 0 < gamma <= 1 (1 = dip)",
        json_schema_extra={"neutral": 1.0},
    )
    fixed_top_n: int = Field(
        default=0,
        ge=0,
        description="dip-ca: this many top units per token are exempt from re-weighting (approximate selection: "
        "taken first)",
        json_schema_extra={"neutral": 0},
    )
    gamma_warmup: int = Field(
        default=0,
        ge=0,
        description="dip-ca: gamma falls linearly from 1 over this many first tokens of the run (0: no warm-up)",
        json_schema_extra={"neutral": 0},
    )
    gamma_schedule: Literal["linear", "authors"] = Field(
        default="linear",
        description="dip-ca: gamma's warm-up: linear (over --gamma-warmup tokens) or authors (Federici et al.: "
        f"gamma_t = {AUTHORS_WARMUP}, t the token's index in its sequence of --seq-len tokens, restarting "
        "with every sequence; no --gamma-warmup)",
        json_schema_extra={"neutral": "linear"},
    )
    approx_m: float = Field(
        default=0.0,
        ge=0,
        description="dip-ca: approximate selection from the top m = approx_m * k units: the fixed top n, then "
        "cached units, then uncached top-k ones (0: off; > 1 to use; then gamma is not used)",
        json_schema_extra={"neutral": 0.0},
    )
    approx_gamma: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="dip-ca with --approx-m: weight w of the units' use counts in the ranking, as Federici et "
        "al.: w * count / max(count) + (1 - w) * score / max(score) (0: off; policies lru, lfu, none)",
        json_schema_extra={"neutral": 0.0},
    )

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("must be in (0, 1]")
        return v

    @model_validator(mode="after")
    def _combinations(self):
        if 0 < self.approx_m <= 1:
            raise ValueError(
                f"--approx-m must be 0 (off) or above 1 (select from the top approx_m * k units), got {self.approx_m:g}"
            )
        if self.approx_m > 1 and "gamma" in self.model_fields_set and self.gamma < 1:
            raise ValueError(
                "--approx-m selects cached units first without re-weighting by gamma, so --gamma would be ignored; "
                "drop --gamma or --approx-m (approximate selection weighs the cache with --approx-gamma)"
            )
        if self.approx_m > 1 and (self.gamma_warmup > 0 or self.gamma_schedule != "linear"):
            raise ValueError(
                "--gamma-warmup and --gamma-schedule warm up gamma, which --approx-m does not use; drop them or --approx-m"
            )
        if self.approx_m <= 1 and self.approx_gamma > 0:
            raise ValueError("--approx-gamma weighs the cache in approximate selection: it needs --approx-m above 1")
        if self.gamma_schedule == "authors" and self.gamma_warmup > 0:
            raise ValueError(
                "--gamma-warmup is the linear warm-up's length and --gamma-schedule authors has none; drop one of them"
            )
        return self

    @property
    def effective_gamma(self) -> float:
        """gamma as the masks use it: approximate selection does not re-weight (1)."""
        return 1.0 if self.approx_m > 1 else self.gamma


def resolve(shape, density: float, options: Options, use=None) -> Selection:
    """dip's kinds (split as dip finds it for ``use``, a ``simcore.calibration.TextUse``), re-weighted."""
    reweight = Reweight(
        options.effective_gamma,
        options.gamma_warmup,
        options.fixed_top_n,
        options.approx_m,
        options.gamma_schedule,
        options.approx_gamma,
    )
    return dip.kinds(shape, density, options, reweight, use)


def describe(config: dict) -> str:
    """dip's description and every re-weighting variant in effect: gamma or approximate selection (with
    its cache-statistics weight), the fixed top n, and gamma's warm-up."""
    text = dip.describe(config)
    if config.get("approx_m", 0) > 1:
        text += f" approx_m={config['approx_m']:g} (cached units first among the top approx_m * k; no gamma)"
        if config.get("approx_gamma", 0) > 0:
            text += f" approx_gamma={config['approx_gamma']:g} (normalised use counts blended into the scores)"
    else:
        text += f" gamma={config['gamma']:g}"
    if config.get("fixed_top_n", 0) > 0:
        text += f" fixed_top_n={config['fixed_top_n']}"
    if config.get("gamma_warmup", 0) > 0:
        text += f" gamma_warmup={config['gamma_warmup']} (linear)"
    if config.get("gamma_schedule", "linear") == "authors":
        text += f" gamma_schedule=authors (gamma_t = {AUTHORS_WARMUP}, t = index in its sequence)"
    return text


def row_label(row: dict) -> str:
    """Lines of dip-ca differ by gamma."""
    return f"dip-ca γ={row['gamma']:g}"
