"""User-facing errors.

Every error a user can cause (a bad flag, a malformed device file, a truncated trace) is a
:class:`SimcoreError`. The CLI prints its message as one line and exits with status 2; the
Python API lets it propagate. Messages say what is wrong *and* how to fix it.
"""

from __future__ import annotations

from pydantic import ValidationError


class SimcoreError(Exception):
    """An error caused by user input; its message is shown as one line, without a traceback."""


class TraceError(SimcoreError):
    """A trace directory is missing, incomplete, corrupt or does not match the request."""


class ConfigError(SimcoreError):
    """A setting (flag, device file, grid) is malformed or impossible."""


def describe_validation(e: ValidationError) -> str:
    """One line for the first error of a settings model: the option, what is wrong, the value given."""
    err = e.errors()[0]
    loc = err["loc"]
    option = "--" + str(loc[0]).replace("_", "-") if loc else "settings"
    got = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    if err["type"] == "extra_forbidden":
        return f"unknown setting {option}"
    if err["type"] == "value_error":  # a validator's own message: "--gamma must be in (0, 1], got 0.0"
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return f"{option} {msg}{got}" if loc else msg
    return f"{option}: {err['msg']}{got}"
