"""Command-line entry points: train (`python -m tljax.main`), predict, evaluate, report. Each
parses its flags and calls the library; every one reports a UserError as one line (common.py)."""
