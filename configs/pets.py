"""Oxford-IIIT Pet, tfds `oxford_iiit_pet`: train[:90%] trains, train[90%:] selects, test
(3669) reports, as big_vision's transfer config (configs/transfer.py) splits it.

Published target: ViT-B/32 AugReg i21k 93.78 % at 384 px, 500 steps, warmup 100, lr 0.003
(big_vision configs/transfer.py docstring; best lr on minival, mean of 5 runs).
"""
from configs import transfer


def get_config(arg="bit-m-r50x1"):
    return transfer.config("oxford_iiit_pet", ("train[:90%]", "train[90%:]", "test"), arg,
                           {"steps": 500, "warmup": 100, "lr": 0.003, "crop": "inception_crop"})
