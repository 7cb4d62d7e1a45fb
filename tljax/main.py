"""`python -m tljax.main --config=... --workdir=...`: the training command (tljax/cli/train.py)."""
from tljax.cli import train

if __name__ == "__main__":
    train.entry()
