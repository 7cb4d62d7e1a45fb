"""One readable log for every entry point: library chatter filtered, no progress-bar escapes.

Import this module before anything that loads TensorFlow: TF reads its C++ log level
from the environment when it loads. A user's own setting of these variables wins. TF itself
is imported through `import_tensorflow` (tljax/data/__init__.py calls it first).
"""
import logging as py_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF C++ INFO/WARNING (e.g. cache notes)
# TF only reads and preprocesses data here (no TF matmuls or convolutions, the ops oneDNN
# changes), so its oneDNN kernels only add a start-up notice; batches are bit-identical.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# Libraries whose INFO lines say what they do, not what the run does: orbax (every
# file written), TFDS (every dataset constructed), JAX's backend probing (libtpu).
_QUIET_INFO = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge", "/clu/", "/matplotlib/")


def _wanted(record):
    return record.levelno >= py_logging.WARNING or not any(
        part in record.pathname for part in _QUIET_INFO)


_KERAS_EAGER_IMPORT = "keras.src.optimizers"


def import_tensorflow():
    """Imports TensorFlow without the import of Keras' optimizers that tensorflow/__init__.py
    makes at load time (to register them for SavedModels, which tljax never writes; it skips
    it on ImportError): about 1.5 s of TF's 5 s import, in every process that reads data.
    Keras still loads on first use (tf.keras)."""
    if "tensorflow" in sys.modules:
        return
    blocked = _KERAS_EAGER_IMPORT not in sys.modules
    if blocked:
        sys.modules[_KERAS_EAGER_IMPORT] = None  # import_module raises ImportError on None
    try:
        import tensorflow  # noqa: F401
    finally:
        if blocked and sys.modules.get(_KERAS_EAGER_IMPORT, 0) is None:
            del sys.modules[_KERAS_EAGER_IMPORT]


def setup():
    """INFO logging for tljax, warnings only from the libraries above; TFDS progress
    bars only on a terminal (redirected logs get no escape codes)."""
    from absl import logging

    logging.set_verbosity(max(logging.get_verbosity(), logging.INFO))  # --verbosity=1 stays
    handler = logging.get_absl_handler()
    if _wanted not in handler.filters:
        handler.addFilter(_wanted)
    if not sys.stderr.isatty():
        import_tensorflow()
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
