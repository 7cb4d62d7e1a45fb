"""Input pipeline: TFDS datasets (local builders, image folders) to per-process numpy batches."""
from tljax.data.pipeline import (class_names, eval_batches, examples, get_builder,  # noqa: F401
                                 num_classes, train_batches)
