"""User-facing errors: anything the user can fix by changing input or config."""


class UserError(Exception):
    """A problem with the user's input, config or files, with a hint what to do.

    Every command prints these as one line (no traceback) and exits non-zero (tljax/cli/common.py).
    """


class ConfigArgumentError(UserError, ValueError):
    """A config file's get_config refused its argument (config files raise ValueError):
    one line like every UserError, and still the ValueError the config file raised."""
