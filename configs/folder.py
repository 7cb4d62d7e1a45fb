"""Your own images, in one command:

    python -m tljax.main --config=configs/folder.py:/path/to/images --workdir=/tmp/mine
    python -m tljax.main --config=configs/folder.py:/path/to/images,vit-b16 --workdir=/tmp/mine_vit

The layout is detected (tljax/data/folder.py): train/ and test/ (and optionally validation/)
with a folder per class in each, or just a folder per class, split per class 80/10/10 with a
fixed seed (data.folder_fractions). A validation split, when there is one, selects the step.

The model, after a comma: bit-m-r50x1 (the default), bit-m-r101x1, vit-b16, vit-b32 (public
checkpoints, configs/transfer.py: downloaded into ~/.cache/tljax/weights), or `digits`, the
tiny BiT that configs/digits.py pretrains offline (a smoke test, not a model for photos).
"""
import os

from configs import digits, transfer


def get_config(arg=""):
    path, _, model = arg.partition(",")
    if not path:
        raise ValueError("give the image folder: --config=configs/folder.py:/path/to/images[,MODEL]")
    model = model or "bit-m-r50x1"
    path = os.path.abspath(os.path.expanduser(path))
    has_split_folders = os.path.isdir(os.path.join(path, "train"))
    has_validation = not has_split_folders or any(
        os.path.isdir(os.path.join(path, d)) for d in ("validation", "val"))
    splits = ("train", "validation" if has_validation else "", "test")
    name = f"folder:{path}"
    if model == "digits":
        c = digits.get_config()
        c.data.name = name
        c.data.few_shot_k = c.data.few_shot_val_k = 0
        c.data.train_split, c.data.val_split, c.data.test_split = splits
        c.data.cache = False  # a user's folder can be large
        return c
    if model not in transfer.MODELS:
        raise ValueError(f"unknown model {model!r}; use one of {sorted(transfer.MODELS)} or 'digits'")
    return transfer.config(name, splits, model)
