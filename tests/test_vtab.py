"""VTAB-1k task definitions (tljax/data/vtab.py) against values computed here from
task_adaptation's own formulas and test cases (docs/dev/vtab1k_facts.md cites each file)."""
import re

import numpy as np
import pytest
import tensorflow as tf

from tljax.data import vtab
from tljax.errors import UserError
from tljax.experiments import suites


def test_nineteen_tasks_in_three_groups_with_1k_examples_each():
    assert len(vtab.TASKS) == 19
    counts = {g: sum(t.group == g for t in vtab.TASKS.values()) for g in vtab.GROUPS}
    assert counts == {"natural": 7, "specialized": 4, "structured": 8}
    for task in vtab.TASKS.values():
        assert task.train800 == "train[:800]"
        m = re.fullmatch(r"(\w+)\[(\d*):(\d+)\]", task.val200)
        assert m and int(m[3]) - int(m[2] or 0) == 200, task.val200
        assert task.train800val200 == f"train[:800]+{task.val200}"
        if task.val200.startswith("train"):  # carved from TFDS train after the train part
            assert int(m[2]) >= 800 and not task.test.startswith("train[:")


@pytest.mark.parametrize("name,percent,train_size", [
    # (task_adaptation/data/<task>.py: TRAIN_SPLIT_PERCENT of the TFDS train split's size)
    ("caltech101", 90, 3060), ("cifar100", 90, 50000), ("pets", 80, 3680), ("svhn", 90, 73257),
    ("clevr_count", 90, 70000), ("eurosat", 60, 27000), ("resisc45", 60, 31500),
    ("dsprites_location", 80, 737280)])
def test_val200_starts_where_task_adaptation_ends_its_train_part(name, percent, train_size):
    start = percent * train_size // 100
    assert vtab.TASKS[name].val200 == f"train[{start}:{start + 200}]"


@pytest.mark.parametrize("name,train,val,test", [
    # task_adaptation/data/*_test.py full counts (train/val/test; docs/dev/vtab1k_facts.md §2)
    ("caltech101", 2754, 306, None), ("eurosat", 16200, 5400, 5400),
    ("dsprites_location", 589824, 73728, 73728)])
def test_vtab_full_splits_are_task_adaptations(name, train, val, test):
    """VTAB-full's train / val / trainval, carved from TFDS train as task_adaptation does, with
    the counts its own tests assert; trainval = train + val, and test unchanged (VTAB-1k's)."""
    task = vtab.TASKS[name]
    assert (task.train, task.val) == (f"train[:{train}]",
                                      f"train[{train}:{train + val if test else ''}]")
    assert task.trainval == (f"train[:{train + val}]" if test else "train")
    assert task.val200 == f"train[{train}:{train + 200}]"  # VTAB-1k's val200 starts val
    for split in ("train", "val", "trainval", "test", "train800"):
        assert task.split(split) == getattr(task, split)
    assert vtab.TASKS["dtd"].split("trainval") == "train+validation"
    assert vtab.TASKS["smallnorb_azimuth"].split("val") == "test[:50%]"  # test is test[50%:]
    with pytest.raises(UserError, match="takes the VTAB splits .* not 'validation'"):
        task.split("validation")
    full = suites.SUITES["vtab_full"].tasks[name]
    assert full.overrides("select")[1:3] == ["data.train_split=train", "data.val_split=val"]
    assert full.overrides("final")[1:] == ["data.train_split=trainval", "data.val_split=",
                                           "data.test_split=test"]


def _label(task, example):
    return int(vtab.TASKS[task].label(tf.nest.map_structure(tf.constant, example)).numpy())


def test_dsprites_bins():
    # x position: 32 -> 16 classes (factor 2); orientation: 40 -> 16 (factor 2.5, bins of 3, 2, 3, ...)
    assert [_label("dsprites_location", {"label_x_position": np.int64(x)}) for x in (0, 1, 2, 31)] == [0, 0, 1, 15]
    orientations = [_label("dsprites_orientation", {"label_orientation": np.int64(o)}) for o in range(40)]
    assert orientations == [int(np.floor(o / 2.5)) for o in range(40)]
    assert orientations[:8] == [0, 0, 0, 1, 1, 2, 2, 2] and max(orientations) == 15


def test_kitti_closest_vehicle_distance_matches_task_adaptations_own_cases():
    """kitti_test.py: z=1 -> 0, z=10 -> 1, z=30 -> 2, only a non-vehicle (type 4) -> 3."""
    def example(types, zs):
        return {"objects": {"type": np.array(types, np.int64),
                            "location": np.array([[0.0, 0.0, z] for z in zs], np.float32)}}
    assert _label("kitti_distance", example([0], [1.0])) == 0
    assert _label("kitti_distance", example([1], [10.0])) == 1
    assert _label("kitti_distance", example([2], [30.0])) == 2
    assert _label("kitti_distance", example([4], [5.0])) == 3
    assert _label("kitti_distance", example([4, 0, 3], [1.0, 15.0, 2.0])) == 1  # closest *vehicle*
    assert _label("kitti_distance", example([0], [8.0])) == 0  # thresholds are strict


def test_clevr_count_and_distance():
    def example(n, depths=None):
        depths = depths if depths is not None else [9.0] * n
        return {"objects": {"size": np.zeros(n, np.int64),
                            "pixel_coords": np.array([[0.0, 0.0, d] for d in depths], np.float32)}}
    assert [_label("clevr_count", example(n)) for n in (3, 5, 10)] == [0, 2, 7]
    distances = [8.0, 8.2, 8.5, 8.7, 9.7, 10.0, 12.0]
    assert [_label("clevr_distance", example(2, [d, 50.0])) for d in distances] == [0, 1, 1, 2, 4, 4, 5]


def test_suite_means_label_both_conventions_and_refuse_an_incomplete_suite():
    suite = suites.SUITES["vtab1k"]
    accuracy = {name: 0.5 for name in vtab.TASKS}
    for name, task in vtab.TASKS.items():
        if task.group == "natural":
            accuracy[name] = 0.9
    means = suite.means(accuracy)
    assert means["group_means"] == {"natural": pytest.approx(0.9), "specialized": 0.5, "structured": 0.5}
    assert means["flat_mean"] == pytest.approx((7 * 0.9 + 12 * 0.5) / 19)  # 0.647
    assert means["mean_of_group_means"] == pytest.approx((0.9 + 0.5 + 0.5) / 3)  # 0.633
    accuracy["dmlab"] = None  # a failed task
    partial = suite.means(accuracy)
    assert not partial["complete"] and partial["missing"] == ["dmlab"]
    assert partial["flat_mean"] is None and partial["mean_of_group_means"] is None
    assert partial["group_means"]["structured"] is None and partial["group_means"]["natural"] == pytest.approx(0.9)
    assert partial["partial"]["tasks"] == 18  # what did finish, labelled partial
    assert partial["partial"]["group_means"]["structured"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="not vtab1k tasks"):
        suite.means({"imagenet": 0.8})
