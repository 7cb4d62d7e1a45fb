"""Input pipeline: TFDS datasets (local builders, image folders) and text (TFDS text datasets,
your own CSV/JSONL/.txt files) to per-process numpy batches. The functions below are what the
rest of tljax asks of data; each answers for images (pipeline.py) or text (text.py, tokens.py)."""
from tljax import logs

logs.import_tensorflow()  # (before the modules below import it: see there)

from tljax.data import pipeline, text, tokens  # noqa: E402
from tljax.data.pipeline import get_builder  # noqa: F401
from tljax.data.text import is_text  # noqa: F401


def num_classes(cfg):
    return len(text.class_names(cfg)) if is_text(cfg) else pipeline.num_classes(cfg)


def class_names(cfg):
    """The label names, index i naming label i."""
    return text.class_names(cfg) if is_text(cfg) else pipeline.class_names(cfg)


def count(cfg, which, seed):
    """How many examples `which` ("train", "validation", "test") holds."""
    if is_text(cfg):
        return len(tokens.texts_of(cfg, which, seed))
    return pipeline.examples(cfg, which, seed)[1]


def train_batches(cfg, **kwargs):
    """Endless iterator of this process's train batches (see pipeline / tokens.train_batches)."""
    return (tokens if is_text(cfg) else pipeline).train_batches(cfg, **kwargs)


def eval_batches(cfg, **kwargs):
    """(re-iterable padded eval batches with a `mask`, example count) of kwargs["which"]."""
    return (tokens if is_text(cfg) else pipeline).eval_batches(cfg, **kwargs)
