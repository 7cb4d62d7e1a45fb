"""The checkpoint catalogue on the command line (tljax/weights/catalog.py holds it):

    tljax catalog              # list the known checkpoints, downloaded or not,
                               # and the backbones known by hub name
    tljax catalog BiT-M-R50x1  # download one into the cache, print its path
"""
import os
import sys

from tljax.cli.common import one_line_errors
from tljax.weights import catalog


def main(argv):
    if len(argv) > 1 and argv[1] in ("-h", "--help", "--helpfull"):
        print(__doc__.strip())
        return
    if len(argv) > 1:
        name = argv[1]
        print(catalog.fetch(name) if name in catalog.CATALOG else catalog.resolve(f"catalog:{name}"))
        return
    for name, entry in sorted(catalog.CATALOG.items()):
        state = "downloaded" if os.path.exists(catalog.local_path(name)) else "not downloaded"
        print(f"{name:<22} {entry['model']:<7} {entry['resolution']}px  {state:<15} {entry['url']}")
    print("\nBackbones by short name (configs/DATASET.py:NAME; hf:/timm: through the Hugging Face "
          "cache, keras: through the Keras cache; docs/weights.md):")
    for name, b in catalog.BACKBONES.items():
        print(f"{name:<16} {b.family:<13} {b.init:<42} {b.published or '—':<24} {b.source}")
    print(f"\nkeras.applications files (model.init=keras:NAME; in {catalog.keras_cache_dir()}):")
    for name, file in catalog.KERAS.items():
        state = "downloaded" if os.path.exists(os.path.join(catalog.keras_cache_dir(),
                                                            os.path.basename(file))) else "not downloaded"
        print(f"keras:{name:<20} {state:<15} {os.path.basename(file)}")


if __name__ == "__main__":
    with one_line_errors():
        main(sys.argv)
