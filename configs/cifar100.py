"""CIFAR-100, tfds `cifar100`: train[:98%] trains, train[98%:] selects, test (10k) reports, as
big_vision's transfer config (configs/transfer.py) splits it. BiT: HyperRule (128 px, 10k
steps, mixup 0.1).

Published targets: BiT-M R50x1 86.4 % (BiT paper); ViT-B/32 AugReg i21k 91.35 % at 384 px,
10k steps, warmup 500, lr 0.01, resize_small + random crop (big_vision configs/transfer.py).
"""
from configs import transfer


def get_config(arg="bit-m-r50x1"):
    return transfer.config("cifar100", ("train[:98%]", "train[98%:]", "test"), arg,
                           {"steps": 10_000, "warmup": 500, "lr": 0.01, "crop": "resmall_crop"})
