"""Input pipeline: TFDS datasets (local builders included) to per-process numpy batches."""
from tljax.data.pipeline import eval_batches, get_builder, num_classes, train_batches  # noqa: F401
