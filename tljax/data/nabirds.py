"""NABirds (Van Horn et al., CVPR 2015) as a TFDS dataset prepared from its manual download:
TFDS has no builder for it (the download needs a registration at dl.allaboutbirds.org), and
it is one of the five FGVC datasets (tljax/experiments/fgvc.py).

The download unpacks to a folder holding images/ and the CUB-style lists: images.txt
(<image id> <path under images/>), image_class_labels.txt (<image id> <class id>),
train_test_split.txt (<image id> <1 = train>) and classes.txt (<class id> <name>). Images are
labelled with 555 of the class ids (the leaves of the taxonomy); labels here are their
positions in ascending class-id order, as VPT's json_dataset.py remaps them to contiguous ids.
"""
import os

import tensorflow_datasets as tfds

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def _table(folder, name):
    """{first field: rest of the line} of one of NABirds' lists."""
    with open(os.path.join(folder, name)) as f:
        return dict(line.rstrip("\n").split(" ", 1) for line in f if line.strip())


def find_root(manual_dir):
    """The folder holding NABirds' lists: manual_dir itself or its nabirds/ subfolder."""
    for folder in (manual_dir, os.path.join(manual_dir, "nabirds")):
        if all(os.path.exists(os.path.join(folder, name)) for name in FILES):
            return folder
    raise FileNotFoundError(
        f"data.manual_dir={manual_dir!r} holds no NABirds download ({', '.join(FILES)} and "
        f"images/): unpack nabirds.tar.gz from dl.allaboutbirds.org there")


def class_ids(root):
    """The class ids that label images, ascending: label i is class_ids[i]."""
    return sorted(set(_table(root, "image_class_labels.txt").values()), key=int)


class Nabirds(tfds.core.GeneratorBasedBuilder):
    """NABirds' images in its official train / test split (48,562 images of 555 classes)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Official train/test split; labels in ascending class-id order."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Register at https://dl.allaboutbirds.org/nabirds, download "
                                    "nabirds.tar.gz and unpack it into data.manual_dir.")

    def __init__(self, *, manual_dir=None, **kwargs):
        """manual_dir: the unpacked download, read when preparing (a prepared dataset
        restores its class names from its own files and needs no download)."""
        self._manual_dir = os.fspath(manual_dir) if manual_dir else None
        super().__init__(**kwargs)

    @property
    def _root(self):
        return find_root(self._manual_dir) if self._manual_dir else None

    def check_manual_download(self):
        """Raises FileNotFoundError, before anything is written, when there is none."""
        if not self._root:
            raise FileNotFoundError(f"it is prepared from its manual download: "
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")

    def _info(self):
        names = None
        try:
            root = self._root
        except FileNotFoundError:  # a prepared dataset needs no download
            root = None
        if root:
            classes = _table(root, "classes.txt")
            names = [classes[c] for c in class_ids(root)]
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=names),
            }),
            supervised_keys=("image", "label"),
            homepage="https://dl.allaboutbirds.org/nabirds",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # self._root: the manual download this builder was made with
        self.check_manual_download()
        is_train = _table(self._root, "train_test_split.txt")
        return {split: self._generate_examples(is_train, split == "train")
                for split in ("train", "test")}

    def _generate_examples(self, is_train, train):
        root = self._root
        paths = _table(root, "images.txt")
        labels = _table(root, "image_class_labels.txt")
        index = {c: i for i, c in enumerate(class_ids(root))}
        for image_id, path in sorted(paths.items(), key=lambda kv: kv[1]):
            if (is_train[image_id].strip() == "1") == train:
                yield image_id, {"image": os.path.join(root, "images", path),
                                 "label": index[labels[image_id]]}
