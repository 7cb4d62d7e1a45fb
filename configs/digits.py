"""Offline default: transfer from digits 0-4 to 2-shot digits 5-9 (sklearn digits, 16x16).

    python -m tljax.main --config=configs/digits.py --workdir=/tmp/tljax_digits
    python -m tljax.main --config=configs/digits.py:pretrain --workdir=/tmp/digits_source

Arguments (after ':'): "" = few-shot target fine-tuning from the source model
(pretrained on first use by the `pretrain` recipe), "pretrain" = source task,
"scratch" = target task from random init. A "vit" prefix ("vit", "vit_pretrain",
"vit_scratch") does the same with a tiny ViT, the model the parameter-efficient
methods (LoRA, adapters, VPT, SSF) are compared on.

The source model is a tiny BiT ResNetV2 (GroupNorm + weight standardization) or ViT,
saved as a tljax .safetensors file and loaded through model.init, the same path
real BiT/ViT weights take.
"""
import os

from configs import common
from tljax.recipes import recipe_output

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(HERE, "digits.py") + ":pretrain"
SOURCE_WEIGHTS = recipe_output(RECIPE)  # ~/.cache/tljax/recipes/digits_pretrain/model.safetensors
VIT_RECIPE = os.path.join(HERE, "digits.py") + ":vit_pretrain"
PP = "resize({size})|gray_to_rgb|value_range(-1,1)"
MODELS = {
    "bit": {"block_counts": (1, 1, 1), "base_width": 16, "gn_groups": 8, "stem": "small"},
    # 4x4 patches of the 16x16 image: 16 tokens + the class token; 0.2M parameters.
    "vit": {"size": "Ti", "patch": 4, "width": 64, "depth": 4, "mlp_dim": 128, "heads": 4},
}


def get_config(arg=""):
    family, task = ("vit", arg[3:].lstrip("_")) if arg.startswith("vit") else ("bit", arg)
    c = get_task_config(task)
    c.model.name, c.model.arch = family, MODELS[family]
    if family == "vit" and task == "pretrain":  # Adam trains a transformer from scratch
        c.optim.name, c.optim.lr, c.optim.weight_decay = "adamw", 1e-3, 1e-4
    if c.model.init and family == "vit":
        c.model.init_recipe = VIT_RECIPE
        c.model.init = recipe_output(VIT_RECIPE)
    return c


def get_task_config(arg):
    c = common.base()
    c.data.name = "tljax_digits"
    c.data.image_size = 16
    c.data.pp_train = "resize({size})|gray_to_rgb|random_crop({size}, 1)|value_range(-1,1)"
    c.data.pp_eval = PP
    c.data.cache = True
    c.data.eval_batch_size = 256
    c.log_every = 25
    c.optim.name = "sgd"
    c.optim.momentum = 0.9
    c.optim.schedule = "cosine"

    if arg == "pretrain":
        c.data.train_split, c.data.test_split = "source_train", "source_test"
        c.data.batch_size = 64
        c.total_steps = 600
        c.eval_every = 200
        c.checkpoint_every = 200
        c.optim.lr = 0.05
        c.optim.warmup_steps = 50
        c.export_weights = True
        return c

    c.data.train_split = c.data.val_split = c.data.test_split = "target"
    # At 2 shots per class the source model helps (fine-tuning beats scratch); from
    # about 5 shots on, training from scratch catches up on this tiny task.
    c.data.few_shot_k = 2
    # Selection (best step) on 10 validation examples per class, disjoint from the train
    # shots; test is the rest of the target split, evaluated once at the end.
    c.data.few_shot_val_k = 10
    c.data.batch_size = 10
    c.total_steps = 150
    c.eval_every = 50
    c.checkpoint_every = 50
    c.optim.lr = 0.05
    c.optim.warmup_steps = 10
    if arg == "scratch":
        return c
    if arg:
        raise ValueError(f"unknown digits config argument {arg!r}; use '', 'pretrain' or "
                         f"'scratch', each optionally prefixed by 'vit'")
    c.model.init = SOURCE_WEIGHTS
    c.model.init_recipe = RECIPE
    return c
