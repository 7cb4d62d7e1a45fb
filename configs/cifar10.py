"""CIFAR-10 (50k train, 10k test), tfds `cifar10`. HyperRule: 128 px, 10k steps, mixup 0.1.

Published target: BiT-M R50x1 97.3 % (BiT paper).
"""
from configs import transfer


def get_config(arg="bit-m-r50x1"):
    return transfer.config("cifar10", "train", "test", arg)
