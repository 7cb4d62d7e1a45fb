"""Shared recipe of the real-dataset configs: a TFDS dataset fine-tuned from a public checkpoint.

Model arguments (the part after ':' of --config=configs/DATASET.py:ARG):
  bit-m-r50x1, bit-m-r101x1  BiT-M (ImageNet-21k) with BiT-HyperRule (config.hyperrule=True)
  vit-b16, vit-b32           AugReg ViT (ImageNet-21k) at 384 px, big_vision-style SGD recipe
  vit-b16-i21k               the original ImageNet-21k ViT-B/16 (VPT's and V-PETL Bench's), 224 px
  dinov2-*, clip-*, siglip*, the backbones of tljax.weights.catalog.BACKBONES (`python -m
  convnext-*, vgg16, vgg19,  tljax.cli.catalog`) at 224 px (inception_v3: 299) with the same
  mobilenet_v2, inception_v3 big_vision recipe: none of them publishes a fine-tuning recipe
                             for these datasets
"""
from configs import common
from tljax.weights import catalog

MODELS = {
    # arg: (family, model.init, resolution, short side before the eval centre crop)
    "bit-m-r50x1": ("bit", "catalog:BiT-M-R50x1", None, None),
    "bit-m-r101x1": ("bit", "catalog:BiT-M-R101x1", None, None),
    "vit-b16": ("vit", "catalog:augreg-B_16-i21k", 384, 448),
    "vit-b32": ("vit", "catalog:augreg-B_32-i21k", 384, 448),
    # The original ImageNet-21k ViT-B/16 (vit_jax imagenet21k/ViT-B_16.npz) that VPT's and
    # V-PETL Bench's tables use, at their 224 px.
    "vit-b16-i21k": ("vit", "catalog:ViT-B_16", 224, 256),
    # 224 px, the resolution their published numbers use; 256 → 224 as DINOv2's eval crop.
    **{name: (b.family, b.init, 224, 256) for name, b in catalog.BACKBONES.items()},
    "inception_v3": ("inception_v3", "keras:InceptionV3", 299, 342),  # Keras' 299 px
}
NORM = "init_norm"  # the normalisation recorded with the checkpoint (BiT/ViT [-1, 1], DINOv2 ImageNet
#                    mean/std, CLIP its own, Keras VGG caffe, ...)


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
    family, init, resolution, eval_resize = MODELS[arg]
    c = common.base()
    c.model.name = family
    c.model.arch = {}  # taken from the checkpoint
    c.model.init = init
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
        c.data.image_size = resolution
        crop = ("inception_crop({size})" if recipe["crop"] == "inception_crop"
                else f"resize_small({eval_resize})|random_crop({{size}})")
        c.data.pp_train = f"{crop}|flip_lr|{NORM}"
        c.data.pp_eval = f"resize_small({eval_resize})|central_crop({{size}})|{NORM}"
        c.total_steps = recipe["steps"]
        c.optim.lr = recipe["lr"]
        c.optim.schedule = "cosine"
        c.optim.warmup_steps = recipe["warmup"]
        c.optim.clip_norm = 1.0  # big_vision transfer.py: grad_clip_norm = 1.0
    for key, value in data.items():
        c.data[key] = value
    return c
