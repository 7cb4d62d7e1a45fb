"""Oxford Flowers-102 (1020 + 1020 train+val images, 6149 test), tfds `oxford_flowers102`.

    python -m tljax.main --config=configs/flowers.py:bit-m-r50x1 --workdir=/tmp/flowers

Published target: ViT-B/32 AugReg i21k 99.43 % at 384 px, 500 steps (big_vision).
"""
from configs import transfer


def get_config(arg="bit-m-r50x1"):
    return transfer.config("oxford_flowers102", "train+validation", "test", arg)
