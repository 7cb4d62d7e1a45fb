"""Describable Textures, VTAB-1k protocol (google-research/task_adaptation, data/dtd.py):
train800 = train[:800] trains, val200 = validation[:200] selects, test reports.

tfds `dtd`. VTAB-1k then retrains the chosen setting on train800val200 and reports test:
    --config.data.train_split="train[:800]+validation[:200]" --config.data.val_split=""
"""
from configs import transfer


def get_config(arg="bit-m-r50x1"):
    return transfer.config("dtd", ("train[:800]", "validation[:200]", "test"), arg)
