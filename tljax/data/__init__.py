"""Input pipeline: TFDS datasets (local builders included) to per-process numpy batches."""
from tljax.data.pipeline import (eval_batches, examples, get_builder, num_classes,  # noqa: F401
                                 train_batches)
