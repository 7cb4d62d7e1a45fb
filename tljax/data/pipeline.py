"""TFDS -> tf.data -> per-process numpy batches for training and evaluation.

Train: one global example stream (seeded shuffle, repeat), numbered; process p
keeps the examples at positions [p*L, (p+1)*L) of every global batch of size
G = L * process_count, so the global batch is the same for any process count.
Random preprocessing is keyed by (seed, example number), so a resume at step s
skips s*G examples and continues exactly where an uninterrupted run would be.

Eval: each process takes a shard of the split; every process yields the same
number of batches, the last ones padded with `mask == 0` examples, so every
example is counted exactly once for any batch size.
"""
import math
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from etils import epath

from tljax.data import digits, folder, k_shot, nabirds, preprocess, vtab
from tljax.errors import UserError

# Datasets prepared here on first use: from data a package ships, or (MANUAL) from a manual
# download in data.manual_dir that TFDS has no builder for.
LOCAL_BUILDERS = {"tljax_digits": digits.TljaxDigits, "nabirds": nabirds.Nabirds}
MANUAL = {"nabirds"}


def _vtab_task(cfg):
    return vtab.task_of(cfg.name) if vtab.is_vtab_name(cfg.name) else None


def get_builder(cfg):
    """The TFDS builder of data.name: an image folder ("folder:/path"), a dataset that ships
    with a package (prepared on first use), a VTAB-1k task ("vtab:TASK": its TFDS dataset,
    tljax/data/vtab.py) or a TFDS dataset in data.data_dir."""
    if folder.is_folder_name(cfg.name):
        return folder.builder(cfg.name, tuple(cfg.folder_fractions), cfg.folder_split_seed)
    kwargs = {"data_dir": cfg.data_dir or None}
    task = _vtab_task(cfg)
    if task is not None:
        return _vtab_builder(cfg, task, kwargs)
    if cfg.name in LOCAL_BUILDERS:
        return _local_builder(cfg, kwargs)
    if epath.Path(cfg.name).expanduser().is_dir():
        raise UserError(f"data.name={cfg.name!r} is a directory; for a folder of images use "
                        f"data.name='folder:{cfg.name}'")
    try:
        return tfds.builder(cfg.name, **kwargs)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UserError(f"unknown TFDS dataset {cfg.name!r} (data.name): {str(e).splitlines()[0]}") from None
    except ValueError as e:
        raise UserError(f"data.name={cfg.name!r} is not a TFDS name like 'oxford_flowers102' or "
                        f"'cifar10:3.0.2', nor 'folder:/path' ({str(e).splitlines()[0]})") from None


def _local_builder(cfg, kwargs):
    """A LOCAL_BUILDERS dataset, prepared in data.data_dir on first use."""
    manual = {"manual_dir": cfg.manual_dir or None} if cfg.name in MANUAL else {}
    try:
        builder = LOCAL_BUILDERS[cfg.name](**kwargs, **manual)
        if not builder.is_prepared():
            if manual:  # before anything is written
                builder.check_manual_download()
            _check_writable_data_dir(cfg)
            builder.download_and_prepare()
    except FileNotFoundError as e:  # a manual download missing or incomplete
        raise UserError(f"dataset {cfg.name!r} is not prepared in data.data_dir="
                        f"{cfg.data_dir or '~/tensorflow_datasets'!r}: {e}") from None
    return builder


def _vtab_builder(cfg, task, kwargs):
    """The TFDS builder at the version task_adaptation pins (its slices are positional): from
    data.data_dir when prepared there, else from the installed tensorflow-datasets' code."""
    try:
        return tfds.builder(task.tfds, **kwargs)
    except AssertionError as e:
        if "cannot be loaded at version" not in str(e):
            raise
        versions = ", ".join(str(v) for v in tfds.builder(task.tfds_name, **kwargs).versions)
        raise UserError(
            f"data.name={cfg.name!r} needs TFDS {task.tfds!r} (task_adaptation pins the version: "
            f"the VTAB-1k slices are positions in it); it is not prepared in data.data_dir="
            f"{cfg.data_dir or '~/tensorflow_datasets'!r} and this tensorflow-datasets builds only "
            f"{versions}: prepare it with a tensorflow-datasets release that has it and set "
            f"data.data_dir") from None


def _check_writable_data_dir(cfg):
    """A local builder prepares its files in data.data_dir only when that is a TFDS data
    directory (missing, empty or holding prepared datasets), never into other folders."""
    if not cfg.data_dir:
        return
    root = epath.Path(cfg.data_dir).expanduser()
    if not root.exists() or not any(root.iterdir()):
        return
    if not (list(root.glob("*/*/dataset_info.json")) or list(root.glob("*/*/*/dataset_info.json"))):
        raise UserError(f"data.data_dir={cfg.data_dir} holds files but no TFDS dataset, so "
                        f"{cfg.name} is not prepared there; for a folder of images use "
                        f"data.name='folder:{cfg.data_dir}' (data.data_dir is where TFDS keeps "
                        f"prepared datasets)")


def _tfds_name(cfg):
    task = _vtab_task(cfg)
    return task.tfds if task else cfg.name


def _not_prepared(cfg, builder):
    root = str(builder.data_dir_root)
    manual = f", manual_dir='{cfg.manual_dir}'" if cfg.manual_dir else ""
    what = f"{cfg.name!r} (TFDS {_tfds_name(cfg)!r})" if _vtab_task(cfg) else repr(cfg.name)
    return UserError(
        f"dataset {what} is not prepared in {root!r}. On a machine with internet run: "
        f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{_tfds_name(cfg)}', "
        f"data_dir='{root}').download_and_prepare(download_config=tfds.download.DownloadConfig("
        f"manual_dir='{cfg.manual_dir or 'MANUAL_DIR'}'))\" (manual_dir only for datasets whose "
        f"files must be downloaded by hand{manual}), then copy the data_dir here or set data.data_dir")


def as_dataset(cfg, builder, split, **kwargs):
    """builder.as_dataset, with "not prepared" turned into a UserError that says what to do."""
    if folder.is_folder_name(cfg.name) and ("[" in split or "+" in split):
        raise UserError(f"data split {split!r}: an image folder's splits are whole folders "
                        f"(train, validation, test); split one tree with data.folder_fractions")
    known = list(builder.info.splits.keys())
    if known and any(part.split("[")[0].strip() not in known for part in split.split("+")):
        raise UserError(f"{cfg.name} has no split {split!r}; its splits: {', '.join(sorted(known))}")
    try:
        return builder.as_dataset(split=split, shuffle_files=False, **kwargs)
    except AssertionError as e:
        if "could not find data" in str(e):
            raise _not_prepared(cfg, builder) from None
        raise


def num_classes(cfg):
    task = _vtab_task(cfg)
    return task.num_classes if task else get_builder(cfg).info.features["label"].num_classes


def class_names(cfg):
    """The label names of the dataset, index i naming label i."""
    task = _vtab_task(cfg)
    if task and task.label:
        return list(task.class_names or map(str, range(task.num_classes)))
    return list(get_builder(cfg).info.features["label"].names)


def _label(cfg):
    """TFDS example -> its label: the "label" feature, or a VTAB task's label function."""
    task = _vtab_task(cfg)
    return (task and task.label) or (lambda ex: ex["label"])


def _pair(cfg):
    """TFDS example -> (image, int32 label)."""
    task = _vtab_task(cfg)
    image, label = (task and task.image) or (lambda ex: ex["image"]), _label(cfg)
    return _no_autograph(lambda ex: (image(ex), tf.cast(label(ex), tf.int32)))


def split_of(cfg, which):
    """The TFDS split string of `which` ("train", "validation", "test"): data.*_split, with a
    VTAB task's protocol names (train800, val200, train800val200, test) resolved."""
    split = cfg[SPLIT_KEYS[which]]
    task = _vtab_task(cfg)
    return task.split(split) if task and split else split


_LABELS = {}  # (TFDS name, data_dir, split) -> labels: a run asks for them once per set


def _split_labels(cfg, builder, split):
    """The labels of `split` in order (read in batches, images undecoded); a prepared TFDS
    split's are read once per process (a folder's are read afresh: its files may change)."""
    key = None if folder.is_folder_name(cfg.name) else (cfg.name, cfg.data_dir, split)
    if key in _LABELS:
        return _LABELS[key]
    ds = as_dataset(cfg, builder, split, decoders={"image": tfds.decode.SkipDecoding()})
    batches = tfds.as_numpy(ds.map(_no_autograph(_label(cfg))).batch(4096))
    labels = np.concatenate([np.zeros([0], np.int64), *batches]).astype(np.int64)
    labels.setflags(write=False)
    if key is not None:
        _LABELS[key] = labels
    return labels


def _select(cfg, builder, split, keep):
    """The examples of `split` whose index has keep[index] True, in split order."""
    keep_t = tf.constant(keep)
    ds = as_dataset(cfg, builder, split).enumerate()
    return ds.filter(_no_autograph(lambda i, ex: tf.gather(keep_t, i))).map(_drop_index)


SPLIT_KEYS = {"train": "train_split", "validation": "val_split", "test": "test_split"}


def few_shot_masks(cfg, labels, seed):
    """{which: mask over data.train_split}: k-shot train, disjoint k-shot validation (when
    data.val_split is the train split) and the rest (the test set when data.test_split is
    the train split). Chosen by data.few_shot_seed, or the run seed when it is negative."""
    shot_seed = cfg.few_shot_seed if cfg.few_shot_seed >= 0 else seed
    masks = {"train": np.zeros(len(labels), bool)}
    masks["train"][k_shot.few_shot_indices(labels, cfg.few_shot_k, shot_seed)] = True
    rest = np.flatnonzero(~masks["train"])
    masks["validation"] = np.zeros(len(labels), bool)
    if split_of(cfg, "validation") == split_of(cfg, "train"):
        if cfg.few_shot_val_k <= 0:
            raise UserError("data.val_split is the few-shot train split: set data.few_shot_val_k "
                            "(validation examples per class, disjoint from the train shots)")
        chosen = k_shot.few_shot_indices(labels[rest], cfg.few_shot_val_k, shot_seed + 1)
        masks["validation"][rest[chosen]] = True
    masks["test"] = ~(masks["train"] | masks["validation"])
    return masks


def split_for(cfg, which):
    """(the split string of `which`, the train split's), checked: configured, and not the
    train split unless few-shot selection makes them disjoint."""
    split, train_split = split_of(cfg, which), split_of(cfg, "train")
    if not split:
        raise UserError(f"no {which} split configured (data.{SPLIT_KEYS[which]})")
    if which != "train" and split == train_split and cfg.few_shot_k <= 0:
        raise UserError(f"data.{SPLIT_KEYS[which]}={cfg[SPLIT_KEYS[which]]!r} is also the train "
                        f"split; use disjoint slices such as train[:90%] / train[90%:]")
    return split, train_split


def examples(cfg, which, seed):
    """(dataset of raw examples, count) for `which` in {"train", "validation", "test"}.

    With data.few_shot_k > 0 the train set is k examples per class of data.train_split;
    validation and test sets drawn from the same split are disjoint from it and from each
    other (see few_shot_masks). A split other than the train split is used whole.
    """
    split, train_split = split_for(cfg, which)
    builder = get_builder(cfg)
    if cfg.few_shot_k <= 0 or split != train_split:
        ds = as_dataset(cfg, builder, split)
        try:
            count = builder.info.splits[split].num_examples
        except KeyError:  # Split metadata missing (e.g. under tfds.testing.mock_data): count.
            count = len(_split_labels(cfg, builder, split))
        return ds, count
    keep = few_shot_masks(cfg, _split_labels(cfg, builder, train_split), seed)[which]
    return _select(cfg, builder, train_split, keep), int(keep.sum())


def _no_autograph(fn):
    return tf.autograph.experimental.do_not_convert(fn)


def _drop_index(i, ex):
    return ex


def train_batches(cfg, *, seed, global_batch, process_index=0, process_count=1, start_step=0):
    """Endless iterator of this process's numpy train batches, starting at `start_step`."""
    if global_batch % process_count:
        raise UserError(f"data.batch_size={global_batch} is not divisible by the "
                        f"{process_count} processes")
    local_batch = global_batch // process_count
    ds, count = examples(cfg, "train", seed)
    ds = ds.map(_pair(cfg))
    if cfg.cache:
        ds = ds.cache()
    ds = ds.shuffle(min(count, cfg.shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().enumerate().skip(start_step * global_batch)
    ds = ds.filter(_no_autograph(lambda i, pair: (i % global_batch) // local_batch == process_index))
    pp = preprocess.build(cfg.pp_train)

    def prepare(i, pair):
        image, label = pair
        key = tf.stack([tf.constant(seed, tf.int64), i])
        return {"image": pp(image, key), "label": label}

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local_batch, drop_remainder=True)  # mixup runs in the train step (global batch)
    return tfds.as_numpy(ds.prefetch(2).with_options(_train_options()))


def _train_options():
    """Autotuning off where it cannot help. The endless train stream is abandoned mid-stream
    when a run ends, and deleting a tf.data iterator waits for its autotuner thread, which
    sleeps longer and longer between rounds: a run ended 3-22 s late (the default digits run:
    14.6 s after pretraining, 9 s after fine-tuning; an iterator of 600 batches: 0.0, 0.0,
    2.9, 2.8 s to delete; untuned: 0.01 s each, the same throughput). Untuned, AUTOTUNE
    parallelism is min(16, schedulable cores) (tf.data's dataset_utils.cc), which is all the
    cores up to 16; on a larger host (decoding for several GPUs) the tuner may use more, so
    it stays on there."""
    options = tf.data.Options()
    if len(os.sched_getaffinity(0)) <= 16:
        options.autotune.enabled = False
    return options


def eval_batches(cfg, *, seed, global_batch, process_index=0, process_count=1, which="test"):
    """(list-like iterable of this process's padded numpy eval batches, total example count)
    of the `which` split ("validation" or "test").

    Every batch has a float `mask`; padded examples have mask 0.
    """
    if global_batch % process_count:
        raise UserError(f"data.eval_batch_size={global_batch} is not divisible by the "
                        f"{process_count} processes")
    local_batch = global_batch // process_count
    ds, count = examples(cfg, which, seed)
    num_batches = math.ceil(math.ceil(count / process_count) / local_batch)
    pp = preprocess.build(cfg.pp_eval)

    def prepare(image, label):
        return {"image": pp(image, tf.zeros([2], tf.int64)), "label": label,
                "mask": tf.constant(1.0, tf.float32)}

    ds = ds.map(_pair(cfg)).shard(process_count, process_index).map(prepare)
    padding = tf.data.Dataset.from_tensors(
        tf.nest.map_structure(tf.zeros_like, next(iter(ds.take(1))))).repeat()
    ds = ds.concatenate(padding).take(num_batches * local_batch).batch(local_batch)
    if cfg.cache:
        ds = ds.cache()
    return tfds.as_numpy(ds.prefetch(2)), count
