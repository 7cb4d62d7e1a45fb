"""The 19 VTAB tasks (Zhai et al. 2019) as google-research/task_adaptation defines them
(task_adaptation/data/*.py; every fact below with its file and line in
docs/dev/vtab1k_facts.md): the TFDS dataset, the train / val / trainval splits and the test
split, the train800 / val200 slices of VTAB-1k (their union is train800val200), the class
count, and how an example's label is derived. VTAB-1k chooses hyper-parameters train800 ->
val200, trains the final model on train800val200 and reports test (REFERENCES.md); VTAB-full,
the full-data protocol, does the same with train -> val, then trainval.

Groups follow the VTAB paper (natural 7, specialized 4, structured 8); the repository itself
does not encode them. Two means are in use and are often mixed up: the flat mean over the 19
tasks and the mean of the three group means; tljax.experiments.suites computes both, labelled.
"""
import dataclasses
from typing import Callable, Optional

import tensorflow as tf

from tljax.errors import UserError

GROUPS = ("natural", "specialized", "structured")
PREFIX = "vtab:"  # data.name="vtab:TASK"
# The protocols' split names, the only ones a task takes: other slices of its TFDS dataset
# could overlap its test set (eurosat's test is train[21600:], CLEVR's is TFDS validation).
# VTAB-1k selects train800 -> val200 and trains the final model on train800val200; VTAB-full
# (the full-data protocol) train -> val, then trainval. Both report test.
SPLITS = ("train800", "val200", "train800val200", "train", "val", "trainval", "test")


@dataclasses.dataclass(frozen=True)
class Task:
    name: str                # tljax's name (data.name="vtab:NAME")
    group: str               # one of GROUPS
    tfds: str                # TFDS name[/config][:version] as task_adaptation loads it
    num_classes: int
    train: str               # task_adaptation's full splits (VTAB-full) ...
    val: str
    trainval: str
    val200: str              # ... and val's first 200, the VTAB-1k validation
    test: str
    train800: str = "train[:800]"
    label: Optional[Callable] = None  # TFDS example -> int64 label; None: its "label" feature
    image: Optional[Callable] = None  # TFDS example -> uint8 RGB image; None: its "image"
    class_names: tuple = ()  # for a derived label; () with `label`: "0", "1", ...

    @property
    def train800val200(self):
        return f"{self.train800}+{self.val200}"

    @property
    def tfds_name(self):
        return self.tfds.split(":")[0]

    def split(self, name):
        """The TFDS split string of a protocol split name; any other name is one line."""
        if name not in SPLITS:
            raise UserError(f"data.name='{PREFIX}{self.name}' takes the VTAB splits "
                            f"{', '.join(SPLITS)}, not {name!r}; for other slices of its data "
                            f"use data.name={self.tfds_name!r} with TFDS split strings")
        return getattr(self, name)


def is_vtab_name(name):
    return str(name).startswith(PREFIX)


def task_of(name):
    """The Task of data.name="vtab:TASK"; an unknown task is one line naming the 19."""
    task = name[len(PREFIX):]
    if task not in TASKS:
        raise UserError(f"data.name={name!r}: unknown VTAB-1k task {task!r}; the tasks: "
                        f"{', '.join(TASKS)}")
    return TASKS[task]


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


def gray_to_rgb(scale):
    """task_adaptation/data/dsprites.py (`tf.tile(image, [1,1,3]) * 255`: dSprites pixels are
    0/1) and smallnorb.py (tiled, scale 1): one channel repeated to three."""
    def image(example):
        return tf.tile(example["image"], [1, 1, 3]) * tf.constant(scale, tf.uint8)
    return image


def _bins(thresholds):
    """Class names of `_below` bins: "(lo, hi]" (the first bin is everything up to its hi)."""
    return tuple(f"<= {hi:g}" if i == 0 else f"({lo:g}, {hi:g}]"
                 for i, (lo, hi) in enumerate(zip(thresholds, thresholds[1:])))


def _carved(train_count, test_start=None):
    """The splits task_adaptation carves from TFDS train: train its first `train_count`
    examples, val the rest up to `test_start` (where a test carved from train begins), val200
    val's first 200."""
    end = "" if test_start is None else test_start
    return dict(train=f"train[:{train_count}]", val=f"train[{train_count}:{end}]",
                trainval="train" if test_start is None else f"train[:{test_start}]",
                val200=f"train[{train_count}:{train_count + 200}]")


# TFDS's own train and validation splits (val200: validation's first 200).
OFFICIAL = dict(train="train", val="validation", trainval="train+validation",
                val200="validation[:200]")
# smallNORB: val is the first half of the official test set, test its second half.
SMALLNORB = dict(train="train", val="test[:50%]", trainval="train+test[:50%]",
                 val200="test[:200]")
TASKS = {t.name: t for t in [
    Task("caltech101", "natural", "caltech101:3.*.*", 102, test="test", **_carved(2754)),
    Task("cifar100", "natural", "cifar100:3.*.*", 100, test="test", **_carved(45000)),
    Task("dtd", "natural", "dtd:3.*.*", 47, test="test", **OFFICIAL),
    Task("flowers102", "natural", "oxford_flowers102:2.*.*", 102, test="test", **OFFICIAL),
    Task("pets", "natural", "oxford_iiit_pet:3.*.*", 37, test="test", **_carved(2944)),
    Task("sun397", "natural", "sun397/tfds:4.*.*", 397, test="test", **OFFICIAL),
    Task("svhn", "natural", "svhn_cropped:3.*.*", 10, test="test", **_carved(65931)),
    Task("camelyon", "specialized", "patch_camelyon:2.*.*", 2, test="test", **OFFICIAL),
    Task("eurosat", "specialized", "eurosat/rgb:2.*.*", 10, test="train[21600:]",
         **_carved(16200, 21600)),
    Task("resisc45", "specialized", "resisc45:3.*.*", 45, test="train[25200:]",
         **_carved(18900, 25200)),
    Task("retinopathy", "specialized", "diabetic_retinopathy_detection/btgraham-300:3.*.*", 5,
         test="test", **OFFICIAL),
    # CLEVR's test split is TFDS validation: its TFDS test has no scene annotations.
    Task("clevr_count", "structured", "clevr:3.*.*", 8, test="validation", **_carved(63000),
         label=clevr_count, class_names=tuple(f"{n} objects" for n in range(3, 11))),
    Task("clevr_distance", "structured", "clevr:3.*.*", 6, test="validation", **_carved(63000),
         label=clevr_distance, class_names=_bins(CLEVR_DISTANCE_THRESHOLDS)),
    Task("dmlab", "structured", "dmlab:2.0.1", 6, test="test", **OFFICIAL),
    Task("kitti_distance", "structured", "kitti:3.1.0", 4, test="test", **OFFICIAL,
         label=kitti_distance, class_names=(*_bins(KITTI_DISTANCE_THRESHOLDS), "no vehicle")),
    Task("dsprites_location", "structured", "dsprites:2.*.*", 16, test="train[663552:]",
         **_carved(589824, 663552), label=dsprites("label_x_position", 32),
         image=gray_to_rgb(255)),
    Task("dsprites_orientation", "structured", "dsprites:2.*.*", 16, test="train[663552:]",
         **_carved(589824, 663552), label=dsprites("label_orientation", 40),
         image=gray_to_rgb(255)),
    Task("smallnorb_azimuth", "structured", "smallnorb:2.*.*", 18, test="test[50%:]",
         **SMALLNORB, label=feature("label_azimuth"), image=gray_to_rgb(1)),
    Task("smallnorb_elevation", "structured", "smallnorb:2.*.*", 9, test="test[50%:]",
         **SMALLNORB, label=feature("label_elevation"), image=gray_to_rgb(1)),
]}

