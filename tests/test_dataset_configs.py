"""Every real-dataset config runs end to end (train, eval, checkpoint) on tfds mock data."""
import json
import os

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tljax import config_lib, run_init, runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"block_counts": (1,), "base_width": 4, "gn_groups": 4, "stem": "small"}


def _fake_split(builder, *args, **kwargs):
    """10 decoded random images with the builder's own label space, for any split.

    (tfds's generic mock generator trips over some features, e.g. oxford_iiit_pet's boxes.)
    """
    classes = builder.info.features["label"].num_classes
    images = tf.random.stateless_uniform([10, 24, 20, 3], [0, 1], maxval=256, dtype=tf.int32)
    labels = tf.range(10, dtype=tf.int64) % classes
    return tf.data.Dataset.from_tensor_slices({"image": tf.cast(images, tf.uint8), "label": labels})


def _mock():
    return tfds.testing.mock_data(num_examples=10, as_dataset_fn=_fake_split)


def _tiny(config_name, arg, tmp_path):
    config = config_lib.load(os.path.join(ROOT, "configs", config_name) + (f":{arg}" if arg else ""))
    with config.unlocked():
        config.hyperrule = False
        config.model.name, config.model.arch, config.model.init = "bit", TINY, ""
        config.data.data_dir = str(tmp_path / "tfds")
        config.data.image_size = 16
        config.data.pp_train = config.data.pp_train.replace("init_norm", "value_range(-1,1)")
        config.data.pp_train = config.data.pp_train.replace("resize_small(448)|random_crop({size})",
                                                            "inception_crop({size})")
        config.data.pp_eval = "resize(16)|value_range(-1,1)"
        config.data.batch_size, config.data.eval_batch_size = 4, 6
        config.total_steps, config.checkpoint_every, config.log_every = 2, 2, 1
        config.optim.warmup_steps = 1
    return config


@pytest.mark.parametrize("config_name", ["flowers.py", "pets.py", "cifar10.py", "cifar100.py", "dtd.py"])
def test_dataset_config_runs_on_mock_data(config_name, tmp_path):
    config = _tiny(config_name, "vit-b16", tmp_path)
    assert config.data.pp_train == "inception_crop({size})|flip_lr|value_range(-1,1)"
    with _mock():
        summary = runs.run(config, str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run" / "checkpoints") == ["2"]
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        evals = [r for r in map(json.loads, f) if r["kind"] == "eval"]
    assert {r["split"] for r in evals} == {"validation", "test"}
    assert all(r["count"] == 10 for r in evals)  # every mock example counted once
    assert 0.0 <= summary["test_accuracy"] <= 1.0


@pytest.mark.parametrize("config_name", ["flowers.py", "pets.py", "cifar10.py", "cifar100.py"])
def test_vit_recipes_are_big_vision_transfer_recipes(config_name):
    """big_vision configs/transfer.py (_set_dataset, _set_task): splits, steps, warmup,
    evaluation crop; clipping at 1.0 for ViT, none under BiT-HyperRule."""
    vit = config_lib.load(os.path.join(ROOT, "configs", config_name) + ":vit-b32")
    small = config_name in ("flowers.py", "pets.py")
    assert (vit.data.train_split, vit.data.val_split, vit.data.test_split) == (
        ("train[:90%]", "train[90%:]", "test") if small else ("train[:98%]", "train[98%:]", "test"))
    assert (vit.total_steps, vit.optim.warmup_steps) == ((500, 100) if small else (10_000, 500))
    assert vit.data.pp_eval == "resize_small(448)|central_crop({size})|init_norm"
    assert vit.optim.clip_norm == 1.0
    assert config_lib.load(os.path.join(ROOT, "configs", config_name)).optim.clip_norm == 0.0


def test_hyperrule_reads_size_and_resolution_from_the_dataset(tmp_path):
    config = _tiny("cifar10.py", "bit-m-r50x1", tmp_path)
    with config.unlocked():
        config.hyperrule = True
    with _mock():
        config = run_init.with_hyperrule(config)
    assert config.total_steps == 500 and config.data.image_size == 128  # 10 examples of 32x32 (cifar's spec)
    assert config.data.pp_train == "resize(160)|random_crop(128)|flip_lr|value_range(-1,1)"


def test_every_config_model_argument_builds():
    for name in ("flowers.py", "pets.py", "cifar10.py", "cifar100.py", "dtd.py"):
        for arg in ("bit-m-r50x1", "bit-m-r101x1", "vit-b16", "vit-b32"):
            config = config_lib.load(os.path.join(ROOT, "configs", name) + f":{arg}")
            assert config.model.init.startswith("catalog:")
            assert config.data.pp_eval.endswith("init_norm")  # taken from the checkpoint
