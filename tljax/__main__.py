"""`python -m tljax SUBCOMMAND ...`: the `tljax` command (tljax/cli/commands.py)."""
import sys

from tljax.cli import commands

if __name__ == "__main__":
    sys.exit(commands.main())
