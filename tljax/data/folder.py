"""A folder of the user's images as a TFDS dataset: data.name="folder:/path/to/images".

Two layouts (class names are folder names, sorted; label i is the i-th name):
  - split folders: ROOT/{train,validation,test}/<class>/*.png (`val` also names validation);
  - one tree: ROOT/<class>/*.png, split per class into train / validation / test by
    data.folder_fractions with the fixed data.folder_split_seed (the same split for every
    run seed, so seeds are compared on the same test images).

Built on tfds.folder_dataset.ImageFolder, which reads the files as they are: nothing is
ever written into the folder.
"""
import os
import random

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import splits as split_lib
from tensorflow_datasets.core.folder_dataset import image_folder

from tljax.data.sets import SETS
from tljax.errors import UserError

PREFIX = "folder:"
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def is_folder_name(name):
    return name.startswith(PREFIX)


def _images(directory):
    return sorted(str(p) for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(directory):
    return sorted((p for p in directory.iterdir() if p.is_dir()), key=lambda p: p.name)


def _from_split_folders(root, split_dirs):
    examples = {}
    for split_dir in split_dirs:
        split = _SPLIT_ALIASES[split_dir.name]
        if split in examples:
            raise UserError(f"image folder {root} has both 'val' and 'validation'; keep one")
        examples[split] = [image_folder._Example(image_path=path, label=class_dir.name)
                           for class_dir in _class_dirs(split_dir) for path in _images(class_dir)]
    return examples


def _from_one_tree(root, fractions, seed):
    """Each class's images shuffled with `seed` and cut by `fractions` (train, val, test)."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"data.folder_fractions={tuple(fractions)} must be three non-negative "
                        f"fractions (train, validation, test) summing to 1")
    examples = {split: [] for split, fraction in zip(SETS, fractions) if fraction > 0}  # e.g.
    #                                           (0, 0, 1): every image is test (to evaluate on)
    for class_dir in _class_dirs(root):
        paths = _images(class_dir)
        random.Random(f"{seed}/{class_dir.name}").shuffle(paths)
        start = 0
        for split, count in zip(SETS, _class_counts(len(paths), fractions, root, class_dir.name)):
            if split in examples:
                examples[split] += [image_folder._Example(image_path=p, label=class_dir.name)
                                    for p in paths[start:start + count]]
            start += count
    return examples


def _class_counts(n, fractions, root, name):
    """A class's (train, validation, test) image counts: its fractions rounded (the rest to
    test), every image in a split with a fraction > 0, and at least one image in each of
    those (taken from the largest), so a small folder never leaves a split empty."""
    cut_train = min(n, round(fractions[0] * n))
    cut_val = min(n, cut_train + round(fractions[1] * n))
    counts = [cut_train, cut_val - cut_train, n - cut_val]
    wanted = [f > 0 for f in fractions]
    for i, want in enumerate(wanted):  # a rounding remainder in a split that is not asked for
        if not want and counts[i]:
            counts[fractions.index(max(fractions))] += counts[i]
            counts[i] = 0
    if n and n < sum(wanted):
        raise _not_a_dataset(root, f"class {name!r} has {n} image{'s' * (n > 1)}, but "
                             f"data.folder_fractions={tuple(fractions)} split each class into "
                             f"{sum(wanted)} sets: give every class at least {sum(wanted)} images, "
                             f"or split the folder yourself into train/ and test/")
    for i, want in enumerate(wanted):
        if n and want and counts[i] == 0:
            counts[counts.index(max(counts))] -= 1
            counts[i] = 1
    return counts


def _not_a_dataset(root, why):
    return UserError(f"data.name={PREFIX}{root}: {why}. Expected {root}/<class>/*.png, or "
                     f"{root}/train/<class>/*.png with test/ (and optionally validation/) beside it")


def _root(name):
    root = epath.Path(name[len(PREFIX):]).expanduser()
    if not root.is_dir():
        raise _not_a_dataset(root, "no such directory")
    return root


def is_one_tree(name):
    """True for ROOT/<class>/*.png (no split folders)."""
    return not any(d.name in _SPLIT_ALIASES for d in _class_dirs(_root(name)))


def builder(name, fractions=(0.8, 0.1, 0.1), seed=0):
    """The ImageFolderSplits of data.name "folder:/path"."""
    root = _root(name)
    subdirs = _class_dirs(root)
    split_dirs = [d for d in subdirs if d.name in _SPLIT_ALIASES]
    if split_dirs:
        others = [d.name for d in subdirs if d.name not in _SPLIT_ALIASES]
        if others:
            raise _not_a_dataset(root, f"it mixes split folders ({', '.join(d.name for d in split_dirs)})"
                                       f" with other folders ({', '.join(others[:3])})")
        examples = _from_split_folders(root, split_dirs)
    else:
        examples = _from_one_tree(root, fractions, seed)
    examples = _without_unreadable(root, examples)
    classes = sorted({e.label for split in examples.values() for e in split})
    if not classes:
        raise _not_a_dataset(root, "it holds no images in class folders")
    if "train" in examples and len(classes) < 2:  # (A folder to evaluate on may have one.)
        raise _not_a_dataset(root, f"it holds {len(classes)} class ({classes[0]}); a classifier "
                                   f"needs at least 2 class folders")
    if "train" in examples:  # (A folder to evaluate on may have no train split.)
        missing = sorted(set(classes) - {e.label for e in examples["train"]})
        if missing:
            raise _not_a_dataset(root, f"classes {missing[:3]} have no training image")
    return ImageFolderSplits(str(root), examples, classes)


_VERDICTS = {}  # "path|size|mtime" -> "" (readable) or why not: each file decoded once
_WARNED = set()  # roots whose skipped files this process has named


def _without_unreadable(root, examples):
    """`examples` without the files decode_image cannot read (a truncated download, a file
    that only has an image suffix), each named in a warning: one bad file among thousands is
    normal in a user's folder, and TensorFlow would stop the run mid-way on it. Every file is
    decoded once (in parallel); the verdicts are kept per process and cached by (path, size,
    mtime) under paths.cache_root() (written by process 0), so a folder is checked once and
    a repaired file is read again."""
    import concurrent.futures
    import hashlib

    import jax
    from absl import logging

    from tljax import paths

    cache_file = epath.Path(paths.cache_root()) / "folders" / (
        hashlib.sha1(str(root).encode()).hexdigest()[:16] + ".json")
    keys = {}
    for split in examples.values():
        for example in split:
            stat = epath.Path(example.image_path).stat()
            keys[example.image_path] = f"{example.image_path}|{stat.length}|{stat.mtime}"
    if any(key not in _VERDICTS for key in keys.values()):
        try:
            _VERDICTS.update(paths.read_json(cache_file) if cache_file.exists() else {})
        except (OSError, ValueError):
            pass
        todo = [path for path, key in keys.items() if key not in _VERDICTS]
        if todo:
            with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                for path, why in zip(todo, pool.map(_decode_error, todo)):
                    _VERDICTS[keys[path]] = why
            if jax.process_index() == 0:
                try:
                    cache_file.parent.mkdir(parents=True, exist_ok=True)
                    paths.write_json(cache_file, {k: _VERDICTS[k] for k in keys.values()})
                except OSError:
                    pass  # a read-only cache only costs the check next time
    bad = [(path, _VERDICTS[key]) for path, key in keys.items() if _VERDICTS[key]]
    if not bad:
        return examples
    if str(root) not in _WARNED:
        _WARNED.add(str(root))
        for path, why in bad[:20]:
            logging.warning("skipping unreadable image %s (%s)", path, why)
        logging.warning("image folder %s: %d unreadable image%s skipped%s", root, len(bad),
                        "s" * (len(bad) > 1), " (the first 20 named above)" if len(bad) > 20 else "")
    skipped = {path for path, _ in bad}
    return {split: [e for e in items if e.image_path not in skipped]
            for split, items in examples.items()}


def _decode_error(path):
    """'' when decode_image reads the file, else the reason in one line."""
    import tensorflow as tf

    try:
        decode_image(tf.io.read_file(path))
        return ""
    except (tf.errors.InvalidArgumentError, tf.errors.OpError) as e:
        return (e.message or type(e).__name__).splitlines()[0][:120]


def decode_image(data):
    """An image file's bytes as an RGB uint8 [H, W, 3] tensor, for every suffix in
    IMAGE_SUFFIXES: gray and RGBA converted, a GIF's first frame (animated or not). Training,
    evaluation and prediction all decode through this one function."""
    import tensorflow as tf

    return tf.io.decode_image(data, channels=3, expand_animations=False)


@tfds.decode.make_decoder()
def _first_frame(serialized, feature):
    del feature
    return decode_image(serialized)


class ImageFolderSplits(image_folder.ImageFolder):
    """tfds ImageFolder over given (split -> image files) lists instead of its own scan."""

    def _as_dataset(self, split, shuffle_files=False, decoders=None, read_config=None):
        # TFDS's own Image decoding keeps a GIF's frame axis ([1, H, W, 3]), which no
        # preprocessing op takes: images are decoded by decode_image unless a caller (the
        # label reader) skips decoding.
        return super()._as_dataset(split, shuffle_files, decoders or {"image": _first_frame()},
                                   read_config)

    def __init__(self, root, split_examples, classes):  # pylint: disable=super-init-not-called
        self._image_shape, self._image_dtype = None, None  # any size; decoded as RGB
        tfds.core.DatasetBuilder.__init__(self, data_dir=root)
        self._data_dir = root
        self._split_examples = split_examples
        self.info.features["label"].names = classes
        self.info.set_splits(split_lib.SplitDict([
            split_lib.SplitInfo(name=split, shard_lengths=[len(items)], num_bytes=0)
            for split, items in split_examples.items()]))
