"""The 19 VTAB-1k tasks (Zhai et al. 2019) as google-research/task_adaptation defines them
(task_adaptation/data/*.py; every fact below with its file and line in
docs/dev/vtab1k_facts.md): the TFDS dataset, the train800 / val200 slices (their union is
train800val200) and the test split, the class count, and how an example's label is derived.
Hyper-parameters are chosen train800 -> val200; the final model trains on train800val200 and
is reported on test (the VTAB-1k protocol, REFERENCES.md).

Groups follow the VTAB paper (natural 7, specialized 4, structured 8); the repository itself
does not encode them. Two means are in use and are often mixed up: the flat mean over the 19
tasks and the mean of the three group means; `suite_means` computes both, labelled.
"""
import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

GROUPS = ("natural", "specialized", "structured")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str                # tljax's name (data.name="vtab:NAME")
    group: str               # one of GROUPS
    tfds: str                # TFDS name[/config][:version] as task_adaptation loads it
    num_classes: int
    train800: str
    val200: str
    test: str
    label: Optional[Callable] = None  # TFDS example -> int64 label; None: its "label" feature

    @property
    def train800val200(self):
        return f"{self.train800}+{self.val200}"


def _below(thresholds, value):
    """The largest i with thresholds[i] < value (strictly), as task_adaptation's
    `tf.reduce_max(tf.where((thrs - dist) < 0))` (thresholds ascending)."""
    return tf.reduce_sum(tf.cast(tf.constant(thresholds, tf.float32) < value, tf.int64)) - 1


# task_adaptation/data/clevr.py: count_all, closest_object_distance
CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
# task_adaptation/data/kitti.py: closest_vehicle_distance (1000: no vehicle)
KITTI_DISTANCE_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)


def clevr_count(example):
    return tf.cast(tf.size(example["objects"]["size"]) - 3, tf.int64)


def clevr_distance(example):
    return _below(CLEVR_DISTANCE_THRESHOLDS,
                  tf.reduce_min(tf.cast(example["objects"]["pixel_coords"][:, 2], tf.float32)))


def kitti_distance(example):
    """The depth of the closest car, van or truck (types 0-2), 1000 when there is none."""
    objects = example["objects"]
    vehicles = tf.boolean_mask(tf.cast(objects["location"][:, 2], tf.float32), objects["type"] < 3)
    return _below(KITTI_DISTANCE_THRESHOLDS, tf.reduce_min(tf.concat([vehicles, [1000.0]], 0)))


def dsprites(attribute, original_classes, classes=16):
    """task_adaptation/data/dsprites.py: the attribute's value floor-divided by
    original/classes (x position 32 -> 16: 2.0; orientation 40 -> 16: 2.5)."""
    factor = float(original_classes) / classes

    def label(example):
        return tf.cast(tf.math.floordiv(tf.cast(example[attribute], tf.float32), factor), tf.int64)
    return label


def feature(name):
    return lambda example: tf.cast(example[name], tf.int64)


def _carved(train_count):
    """val200 taken from TFDS train after its first `train_count` examples."""
    return f"train[{train_count}:{train_count + 200}]"


TRAIN800 = "train[:800]"
TASKS = {t.name: t for t in [
    Task("caltech101", "natural", "caltech101:3.*.*", 102, TRAIN800, _carved(2754), "test"),
    Task("cifar100", "natural", "cifar100:3.*.*", 100, TRAIN800, _carved(45000), "test"),
    Task("dtd", "natural", "dtd:3.*.*", 47, TRAIN800, "validation[:200]", "test"),
    Task("flowers102", "natural", "oxford_flowers102:2.*.*", 102, TRAIN800, "validation[:200]", "test"),
    Task("pets", "natural", "oxford_iiit_pet:3.*.*", 37, TRAIN800, _carved(2944), "test"),
    Task("sun397", "natural", "sun397/tfds:4.*.*", 397, TRAIN800, "validation[:200]", "test"),
    Task("svhn", "natural", "svhn_cropped:3.*.*", 10, TRAIN800, _carved(65931), "test"),
    Task("camelyon", "specialized", "patch_camelyon:2.*.*", 2, TRAIN800, "validation[:200]", "test"),
    Task("eurosat", "specialized", "eurosat/rgb:2.*.*", 10, TRAIN800, _carved(16200), "train[21600:]"),
    Task("resisc45", "specialized", "resisc45:3.*.*", 45, TRAIN800, _carved(18900), "train[25200:]"),
    Task("retinopathy", "specialized", "diabetic_retinopathy_detection/btgraham-300:3.*.*", 5,
         TRAIN800, "validation[:200]", "test"),
    # CLEVR's test split is TFDS validation: its TFDS test has no scene annotations.
    Task("clevr_count", "structured", "clevr:3.*.*", 8, TRAIN800, _carved(63000), "validation",
         clevr_count),
    Task("clevr_distance", "structured", "clevr:3.*.*", 6, TRAIN800, _carved(63000), "validation",
         clevr_distance),
    Task("dmlab", "structured", "dmlab:2.0.1", 6, TRAIN800, "validation[:200]", "test"),
    Task("kitti_distance", "structured", "kitti:3.1.0", 4, TRAIN800, "validation[:200]", "test",
         kitti_distance),
    Task("dsprites_location", "structured", "dsprites:2.*.*", 16, TRAIN800, _carved(589824),
         "train[663552:]", dsprites("label_x_position", 32)),
    Task("dsprites_orientation", "structured", "dsprites:2.*.*", 16, TRAIN800, _carved(589824),
         "train[663552:]", dsprites("label_orientation", 40)),
    # smallNORB's val200 comes from the official test set's first half; test is its second half.
    Task("smallnorb_azimuth", "structured", "smallnorb:2.*.*", 18, TRAIN800, "test[:200]",
         "test[50%:]", feature("label_azimuth")),
    Task("smallnorb_elevation", "structured", "smallnorb:2.*.*", 9, TRAIN800, "test[:200]",
         "test[50%:]", feature("label_elevation")),
]}


def suite_means(accuracy):
    """{task: accuracy or None} -> the flat mean over the 19 tasks, each group's mean and the
    mean of the three group means, each labelled. A suite with a task missing or failed
    (None, or absent) has no overall mean: `complete` is False and the means it would need
    are None, never computed over fewer tasks."""
    unknown = set(accuracy) - set(TASKS)
    if unknown:
        raise ValueError(f"not VTAB-1k tasks: {sorted(unknown)}")
    done = {t: a for t, a in accuracy.items() if a is not None}
    groups = {}
    for group in GROUPS:
        members = [t.name for t in TASKS.values() if t.group == group]
        groups[group] = (float(np.mean([done[m] for m in members]))
                         if all(m in done for m in members) else None)
    complete = len(done) == len(TASKS)
    return {"flat_mean_19": float(np.mean(list(done.values()))) if complete else None,
            "group_means": groups,
            "mean_of_group_means": float(np.mean(list(groups.values()))) if complete else None,
            "complete": complete, "missing": sorted(set(TASKS) - set(done))}
