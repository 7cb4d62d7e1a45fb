"""User-facing errors: anything the user can fix by changing input or config."""


class UserError(Exception):
    """A problem with the user's input, config or files, with a hint what to do.

    `tljax.main` prints these as one line (no traceback) and exits non-zero.
    """


def run_main(main):
    """absl's app.run(main) for a command-line tool: a UserError is one line, exit status 1."""
    import sys

    from absl import app

    try:
        app.run(main)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
