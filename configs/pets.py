"""Oxford-IIIT Pet (3680 train, 3669 test), tfds `oxford_iiit_pet`.

Published target: ViT-B/32 AugReg i21k 93.78 % at 384 px, 500 steps (big_vision).
"""
from configs import transfer


def get_config(arg="bit-m-r50x1"):
    return transfer.config("oxford_iiit_pet", "train", "test", arg)
