"""Command-line entry points only: one module per `tljax` subcommand (commands.py dispatches);
each parses its flags and calls the library, and reports a UserError as one line (common.py)."""
