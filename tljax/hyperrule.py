"""BiT-HyperRule (Kolesnikov et al. 2020): fine-tuning hyperparameters from dataset size and
image resolution, as in the official big_transfer code.

- resolution: images under 96x96 px -> resize 160, crop 128; otherwise resize 512, crop 480;
- schedule by train-set size: < 20k examples: warmup 100, /10 at 200, 300, 400, 500 steps;
  < 500k: warmup 500, /10 at 3k, 6k, 9k, 10k steps; else warmup 500, /10 at 6k, 12k, 18k, 20k;
- mixup alpha 0.1 from 20k examples on; SGD momentum 0.9, lr 0.003 at batch 512 (scaled linearly).
"""
from tljax.data import preprocess


def schedule(train_examples):
    """(warmup, decay boundaries, total steps)."""
    if train_examples < 20_000:
        return 100, (200, 300, 400), 500
    if train_examples < 500_000:
        return 500, (3_000, 6_000, 9_000), 10_000
    return 500, (6_000, 12_000, 18_000), 20_000


def resolution(image_area):
    """(resize, crop); an unknown area (variable-size images) counts as large."""
    return (160, 128) if image_area is not None and image_area < 96 * 96 else (512, 480)


def apply(config, train_examples, image_area):
    """Overrides `config` (unlocked by the caller) with the BiT-HyperRule choices."""
    warmup, boundaries, total = schedule(train_examples)
    resize, crop = resolution(image_area)
    norm = preprocess.normalization_op(config.data.pp_eval) or "value_range(-1,1)"
    config.total_steps = total
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    config.optim.lr = 0.003 * config.data.batch_size / 512
    config.optim.schedule = "steps"
    config.optim.warmup_steps = warmup
    config.optim.decay_boundaries = boundaries
    config.data.mixup_alpha = 0.1 if train_examples >= 20_000 else 0.0
    config.data.image_size = crop
    config.data.pp_train = f"resize({resize})|random_crop({crop})|flip_lr|{norm}"
    config.data.pp_eval = f"resize({crop})|{norm}"
    return config
