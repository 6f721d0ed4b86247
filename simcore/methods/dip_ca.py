"""dip-ca (Federici et al., cache-aware masking): dip whose scores are multiplied by 1 for units in
the DRAM cache and by gamma (0 < gamma <= 1) for the others before the top-k, so that cached units
win close calls. gamma = 1 is dip. Variants: ``fixed_top_n`` top units exempt from re-weighting, a
gamma warm-up over the first tokens, and approximate selection from the top m = approx_m * k (cached
units first). Masks depend on the cache, so tokens replay strictly in order and Belady is undefined
for gamma < 1. Approximate selection does not combine with gamma < 1 or fixed_top_n (not implemented:
refused, never ignored)."""

from pydantic import Field, field_validator, model_validator

from simcore.methods import dip
from simcore.methods.base import Display, Reweight, Selection

DISPLAY = Display(label="dip-ca", color="tab:red", order=70)


class Options(dip.Options):
    gamma: float = Field(
        default=0.2,
        description="dip-ca: score weight of units not in the cache, 0 < gamma <= 1 (1 = dip)",
        json_schema_extra={"neutral": 1.0},
    )
    fixed_top_n: int = Field(
        default=0,
        ge=0,
        description="dip-ca: this many top units per token are exempt from re-weighting",
        json_schema_extra={"neutral": 0},
    )
    gamma_warmup: int = Field(
        default=0,
        ge=0,
        description="dip-ca: gamma falls linearly from 1 over this many first tokens",
        json_schema_extra={"neutral": 0},
    )
    approx_m: float = Field(
        default=0.0,
        ge=0,
        description="dip-ca: approximate selection from the top m = approx_m * k units, cached first "
        "(0: off; > 1 to use; then gamma is not used)",
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
        if self.approx_m > 1 and self.fixed_top_n > 0:
            raise ValueError("--approx-m does not combine with --fixed-top-n (not implemented); drop one of them")
        if self.approx_m > 1 and "gamma" in self.model_fields_set and self.gamma < 1:
            raise ValueError(
                "--approx-m selects cached units first without re-weighting, so --gamma would be ignored; "
                "drop --gamma or --approx-m"
            )
        return self

    @property
    def effective_gamma(self) -> float:
        """gamma as the masks use it: approximate selection does not re-weight (1)."""
        return 1.0 if self.approx_m > 1 else self.gamma


def resolve(shape, density: float, options: Options) -> Selection:
    reweight = Reweight(options.effective_gamma, options.gamma_warmup, options.fixed_top_n, options.approx_m)
    return dip.kinds(shape, density, options, reweight)


def describe(config: dict) -> str:
    """dip's description and every re-weighting variant in effect: gamma, and the fixed top n, warm-up
    and approximate selection when they are on."""
    text = dip.describe(config)
    if config.get("approx_m", 0) > 1:
        text += f" approx_m={config['approx_m']:g} (cached units first among the top approx_m * k; no gamma)"
    else:
        text += f" gamma={config['gamma']:g}"
    if config.get("fixed_top_n", 0) > 0:
        text += f" fixed_top_n={config['fixed_top_n']}"
    if config.get("gamma_warmup", 0) > 0:
        text += f" gamma_warmup={config['gamma_warmup']} (linear)"
    return text


def row_label(row: dict) -> str:
    """Lines of dip-ca differ by gamma."""
    return f"dip-ca γ={row['gamma']:g}"
