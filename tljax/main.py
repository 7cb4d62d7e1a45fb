"""`python -m tljax.main --config=... --workdir=...`: the training command (tljax/cli/train.py),
the same as `tljax train`."""
from absl import flags

from tljax.cli import train

flags.adopt_module_key_flags(train)  # --help lists the command's own flags

if __name__ == "__main__":
    train.entry()
