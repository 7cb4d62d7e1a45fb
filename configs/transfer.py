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


def config(dataset, splits, arg, vit_recipe=None, **data):
    """The config for `dataset` fine-tuned from model `arg` (see MODELS).

    splits: (train, validation, test) TFDS split strings; validation selects, test reports.
    vit_recipe: big_vision's ViT transfer recipe for this dataset (big_vision
    configs/transfer.py, _set_dataset): dict(steps, warmup, lr, crop) with crop
    "inception_crop" or "resmall_crop".
    """
    arg = arg or "bit-m-r50x1"
    if arg not in MODELS:
        raise ValueError(f"unknown model {arg!r}; use one of {sorted(MODELS)}")
    family, checkpoint = MODELS[arg]
    c = common.base()
    c.model.name = family
    c.model.arch = {}  # taken from the checkpoint
    c.model.init = f"catalog:{checkpoint}"
    c.data.name = dataset
    c.data.train_split, c.data.val_split, c.data.test_split = splits
    c.data.batch_size = 512
    c.data.eval_batch_size = 256
    c.eval_every = 100
    c.checkpoint_every = 100
    c.optim.name = "sgd"
    c.optim.momentum = 0.9
    if family == "bit":
        # BiT-HyperRule (big_transfer bit_hyperrule.py) sets resolution, steps, lr schedule
        # and mixup from the dataset; it has no gradient clipping.
        c.hyperrule = True
        c.data.pp_eval = f"resize({{size}})|{NORM}"  # size and pp_train: from the HyperRule
    else:
        recipe = vit_recipe or {"steps": 500, "warmup": 100, "lr": 0.003, "crop": "inception_crop"}
        c.data.image_size = 384
        crop = ("inception_crop({size})" if recipe["crop"] == "inception_crop"
                else "resize_small(448)|random_crop({size})")
        c.data.pp_train = f"{crop}|flip_lr|{NORM}"
        c.data.pp_eval = f"resize_small(448)|central_crop({{size}})|{NORM}"
        c.total_steps = recipe["steps"]
        c.optim.lr = recipe["lr"]
        c.optim.schedule = "cosine"
        c.optim.warmup_steps = recipe["warmup"]
        c.optim.clip_norm = 1.0  # big_vision transfer.py: grad_clip_norm = 1.0
    for key, value in data.items():
        c.data[key] = value
    return c
