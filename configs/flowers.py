"""Oxford Flowers-102 fine-tuning from public BiT / ViT checkpoints (needs the TFDS data and
the weights; see `python -m tljax.weights.catalog`).

    python -m tljax.main --config=configs/flowers.py:bit-m-r50x1 --workdir=/tmp/flowers

Arguments: bit-m-r50x1 (default), bit-m-r101x1, vit-b16, vit-b32 (AugReg i21k).
Recipe: BiT-style fine-tuning, SGD momentum 0.9, batch 512, 500 steps, lr 0.003
with warmup and /10 decays (BiT-HyperRule for datasets under 20k images).

Published targets to compare against:
  BiT-M R50x1 (BiT paper, HyperRule, 480px): Flowers-102 99.30 %
  ViT-B/32 AugReg i21k (big_vision, 384px, 500 steps): 99.43 %
"""
from configs import common

MODELS = {
    # arg: (catalogue name, train resolution, eval resize)
    "bit-m-r50x1": ("BiT-M-R50x1", 448, 480),
    "bit-m-r101x1": ("BiT-M-R101x1", 448, 480),
    "vit-b16": ("augreg-B_16-i21k", 384, 384),
    "vit-b32": ("augreg-B_32-i21k", 384, 384),
}


def get_config(arg="bit-m-r50x1"):
    if arg not in MODELS:
        raise ValueError(f"unknown model {arg!r}; use one of {sorted(MODELS)}")
    weights, size, eval_size = MODELS[arg]
    c = common.base()
    c.model.name = "vit" if arg.startswith("vit") else "bit"
    c.model.arch = {}  # taken from the checkpoint
    c.model.init = f"catalog:{weights}"
    c.data.name = "oxford_flowers102"
    c.data.train_split = "train+validation"
    c.data.test_split = "test"
    c.data.image_size = size
    c.data.pp_train = f"inception_crop({size})|flip_lr|value_range(-1,1)"
    c.data.pp_eval = (f"resize({size})|value_range(-1,1)" if arg.startswith("vit")
                      else f"resize({eval_size})|central_crop({size})|value_range(-1,1)")
    c.data.batch_size = 512
    c.data.eval_batch_size = 256
    c.total_steps = 500
    c.eval_every = 100
    c.checkpoint_every = 100
    c.optim.name = "sgd"
    c.optim.lr = 0.003
    c.optim.momentum = 0.9
    c.optim.schedule = "steps"
    c.optim.warmup_steps = 50
    c.optim.decay_boundaries = (150, 300, 450)
    c.optim.clip_norm = 1.0
    return c
