"""User-facing errors.

Every error a user can cause (a bad flag, a malformed device file, a truncated trace) is a
:class:`SimcoreError`. The CLI prints its message as one line and exits with status 2; the
Python API lets it propagate. Messages say what is wrong *and* how to fix it.
"""


class SimcoreError(Exception):
    """An error caused by user input; its message is shown as one line, without a traceback."""


class TraceError(SimcoreError):
    """A trace directory is missing, incomplete, corrupt or does not match the request."""


class ConfigError(SimcoreError):
    """A setting (flag, device file, grid) is malformed or impossible."""
