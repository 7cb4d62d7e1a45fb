"""Oxford Flowers-102, tfds `oxford_flowers102`: train[:90%] trains, train[90%:] selects,
test (6149) reports, as big_vision's transfer config (configs/transfer.py) splits it.

    python -m tljax.main --config=configs/flowers.py:bit-m-r50x1 --workdir=/tmp/flowers

Published target: ViT-B/32 AugReg i21k 99.43 % at 384 px, 500 steps, warmup 100, lr 0.003
(big_vision configs/transfer.py docstring; best lr on minival, mean of 5 runs).
"""
from configs import transfer


def get_config(arg="bit-m-r50x1"):
    return transfer.config("oxford_flowers102", ("train[:90%]", "train[90%:]", "test"), arg,
                           {"steps": 500, "warmup": 100, "lr": 0.003, "crop": "inception_crop"})
