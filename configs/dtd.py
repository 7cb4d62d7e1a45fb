"""Describable Textures, VTAB-1k protocol: train on 800 + 200 images, test on the test split.

tfds `dtd`. For the VTAB 800/200 hyperparameter-selection split use
--config.data.train_split="train[:800]" --config.data.test_split="validation[:200]".
"""
from configs import transfer


def get_config(arg="bit-m-r50x1"):
    return transfer.config("dtd", "train[:800]+validation[:200]", "test", arg)
