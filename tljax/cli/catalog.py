"""The checkpoint catalogue on the command line (tljax/weights/catalog.py holds it):

    python -m tljax.cli.catalog              # list the known checkpoints, downloaded or not,
                                             # and the backbones known by hub name
    python -m tljax.cli.catalog BiT-M-R50x1  # download one into the cache, print its path
"""
import os
import sys

from tljax.cli.common import one_line_errors
from tljax.weights import catalog


def main(argv):
    if len(argv) > 1:
        name = argv[1]
        print(catalog.fetch(name) if name in catalog.CATALOG else catalog.resolve(f"catalog:{name}"))
        return
    for name, entry in sorted(catalog.CATALOG.items()):
        state = "downloaded" if os.path.exists(catalog.local_path(name)) else "not downloaded"
        print(f"{name:<22} {entry['model']:<7} {entry['resolution']}px  {state:<15} {entry['url']}")
    print("\nBy hub name (model.init=NAME; through the Hugging Face cache, see docs/weights.md):")
    for name, (init, published, where) in catalog.HUB.items():
        print(f"{name:<16} {init:<42} {published or '—':<24} {where}")


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv)
