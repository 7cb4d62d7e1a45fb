"""Shared recipe of the real-dataset configs: a TFDS dataset fine-tuned from a public checkpoint.

Model arguments (the part after ':' of --config=configs/DATASET.py:ARG):
  bit-m-r50x1, bit-m-r101x1  BiT-M (ImageNet-21k) with BiT-HyperRule (config.hyperrule=True)
  vit-b16, vit-b32           AugReg ViT (ImageNet-21k) at 384 px, big_vision-style SGD recipe
"""
from configs import common

MODELS = {
    # arg: (family, catalogue checkpoint)
    "bit-m-r50x1": ("bit", "BiT-M-R50x1"),
    "bit-m-r101x1": ("bit", "BiT-M-R101x1"),
    "vit-b16": ("vit", "augreg-B_16-i21k"),
    "vit-b32": ("vit", "augreg-B_32-i21k"),
}
NORM = "init_norm"  # the normalisation recorded with the checkpoint (value_range(-1,1) for these)


def config(dataset, train_split, test_split, arg, **data):
    """The config for `dataset` fine-tuned from model `arg` (see MODELS)."""
    arg = arg or "bit-m-r50x1"
    if arg not in MODELS:
        raise ValueError(f"unknown model {arg!r}; use one of {sorted(MODELS)}")
    family, checkpoint = MODELS[arg]
    c = common.base()
    c.model.name = family
    c.model.arch = {}  # taken from the checkpoint
    c.model.init = f"catalog:{checkpoint}"
    c.data.name = dataset
    c.data.train_split = train_split
    c.data.test_split = test_split
    c.data.batch_size = 512
    c.data.eval_batch_size = 256
    c.eval_every = 100
    c.checkpoint_every = 100
    c.optim.name = "sgd"
    c.optim.momentum = 0.9
    c.optim.clip_norm = 1.0
    if family == "bit":
        c.hyperrule = True  # sets resolution, steps, lr schedule and mixup from the dataset
        c.data.pp_eval = f"resize(480)|{NORM}"
    else:
        c.data.image_size = 384
        c.data.pp_train = f"inception_crop(384)|flip_lr|{NORM}"
        c.data.pp_eval = f"resize(384)|{NORM}"
        c.total_steps = 500
        c.optim.lr = 0.003
        c.optim.schedule = "cosine"
        c.optim.warmup_steps = 50
    for key, value in data.items():
        c.data[key] = value
    return c
