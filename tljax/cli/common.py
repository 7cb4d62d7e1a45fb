"""The one error path of every command: a UserError (or a usage mistake) is one line on
stderr and exit status 1, never a traceback."""
import contextlib
import sys

from tljax.errors import UserError


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


@contextlib.contextmanager
def one_line_errors():
    try:
        yield
    except UserError as e:
        fail(str(e))


def check_directory(path, flag="--workdir"):
    """A directory flag must not name a file (it would fail deep inside a run)."""
    from etils import epath

    if path and epath.Path(path).exists() and not epath.Path(path).is_dir():
        raise UserError(f"{flag}={path} is a file, not a directory; use another {flag}")


def parse_flags(argv):
    """absl flag parsing with a bad flag value (below a flag's bound, not a number, unknown)
    as one line instead of absl's usage dump."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{e}; see --help")


def run_main(main, flags_parser=parse_flags):
    """absl's app.run(main) with UserErrors (raised by main or while parsing flags, e.g.
    loading a config file) and bad flag values turned into one line."""
    from absl import app

    with one_line_errors():
        app.run(main, flags_parser=flags_parser)
