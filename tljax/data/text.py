"""Text datasets as lists of (text, optional text pair, label): TFDS text datasets and your own
text, data.name="text:/path".

Your own text, in one of three layouts (class names: the label values or folder names, sorted;
label i is the i-th name):
  - split files: ROOT/{train,validation,test}.{csv,jsonl} (`val` also names validation);
  - one file: ROOT.csv or ROOT.jsonl, split per class by data.folder_fractions with the fixed
    data.folder_split_seed (as an image folder's one tree);
  - folders of .txt files per class: ROOT/<class>/*.txt, or ROOT/{train,...}/<class>/*.txt.
CSV files have a header with the columns `text`, `label` and optionally `text_pair`
(sentence pairs, MRPC/RTE style); JSONL lines are objects with those keys. A missing column,
an empty text or a label of a split that the train split lacks is one error naming the file
and row. Nothing is written where the text lives.
"""
import csv
import dataclasses
import json
import os
import random
from typing import NamedTuple, Optional

import numpy as np

from tljax.data import pydoc_topics
from tljax.data.sets import SETS
from tljax.errors import UserError

PREFIX = "text:"
SUFFIXES = (".csv", ".jsonl")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
# TFDS text datasets: name (before any ":version") -> (text feature, pair feature or None).
TFDS_FIELDS = {"glue/sst2": ("sentence", None), "glue/cola": ("sentence", None),
               "glue/mrpc": ("sentence1", "sentence2"), "glue/rte": ("sentence1", "sentence2"),
               "glue/qnli": ("question", "sentence"), "glue/qqp": ("question1", "question2"),
               "glue/mnli": ("premise", "hypothesis"), "imdb_reviews": ("text", None),
               "ag_news_subset": ("description", None), "yelp_polarity_reviews": ("text", None)}


class Example(NamedTuple):
    """One labelled text as read, with where it was read (for errors)."""
    text: str
    pair: Optional[str]
    label: Optional[str]
    where: str  # "FILE row N" / "FILE line N" / the .txt file


@dataclasses.dataclass(frozen=True)
class Texts:
    """One split: texts, their pairs (or None) and int labels, in split order."""
    texts: list
    pairs: Optional[list]
    labels: np.ndarray

    def __len__(self):
        return len(self.texts)

    def subset(self, keep):
        index = np.flatnonzero(keep)
        return Texts([self.texts[i] for i in index],
                     None if self.pairs is None else [self.pairs[i] for i in index],
                     self.labels[index])


def is_text(cfg):
    """Whether data.name names text: your own ("text:/path"), the offline dataset that ships
    with Python (pydoc_topics.NAME) or a TFDS text dataset."""
    return (cfg.name.startswith(PREFIX) or cfg.name == pydoc_topics.NAME
            or cfg.name.split(":")[0] in TFDS_FIELDS)


def _is_files(cfg):
    """Whether data.name is text read from CSV/JSONL/.txt files (not a TFDS dataset)."""
    return cfg.name.startswith(PREFIX) or cfg.name == pydoc_topics.NAME


def is_own_file(name):
    """Whether data.name is "text:" one CSV/JSONL file (split by data.folder_fractions)."""
    return name.startswith(PREFIX) and os.path.isfile(os.path.expanduser(name[len(PREFIX):]))


def _rows(path):
    """[(row number, {column: value})] of a CSV (header first) or JSONL file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            if path.endswith(".csv"):
                return [(number, row) for number, row in enumerate(csv.DictReader(f), start=2)]
            rows = []
            for number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append((number, json.loads(line)))
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path} line {number}: not a JSON object ({e.msg})") from None
            return rows
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None


def read_file(path, labelled=True):
    """[Example] of a CSV/JSONL file, every row checked (the label column only when
    `labelled`)."""
    rows = _rows(path)
    if not rows:
        raise UserError(f"{path} holds no rows")
    examples = []
    for number, row in rows:
        where = f"{path} {'row' if path.endswith('.csv') else 'line'} {number}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: not an object with text and label")
        for column in ("text", "label") if labelled else ("text",):
            if row.get(column) is None:
                raise UserError(f"{where}: no {column!r} column (columns: text, label, optional "
                                f"text_pair)")
        text, pair = str(row["text"]), row.get("text_pair")
        if not text.strip():
            raise UserError(f"{where}: empty text")
        if pair is not None and not str(pair).strip() and "text_pair" in row:
            raise UserError(f"{where}: empty text_pair")
        label = str(row["label"]) if labelled else None
        examples.append(Example(text, None if pair is None else str(pair), label, where))
    return examples


def _read_txt_classes(directory):
    """[Example] of ROOT/<class>/*.txt, labelled by their folder's name."""
    examples = []
    for class_dir in sorted((p for p in os.scandir(directory) if p.is_dir()), key=lambda p: p.name):
        for entry in sorted(os.scandir(class_dir.path), key=lambda e: e.name):
            if entry.name.endswith(".txt"):
                with open(entry.path, encoding="utf-8", errors="replace") as f:
                    text = f.read().strip()
                if not text:
                    raise UserError(f"{entry.path}: empty text")
                examples.append(Example(text, None, class_dir.name, entry.path))
    return examples


def _split_files(root):
    """{split: examples} of ROOT/{train,validation,test}.{csv,jsonl} or split folders of .txt."""
    found = {}
    for entry in sorted(os.listdir(root)):
        stem, suffix = os.path.splitext(entry)
        path = os.path.join(root, entry)
        if stem in _SPLIT_ALIASES and (suffix in SUFFIXES or os.path.isdir(path)):
            split = _SPLIT_ALIASES[stem]
            if split in found:
                raise UserError(f"text folder {root} has two {split} sets ({entry}); keep one")
            found[split] = read_file(path) if suffix in SUFFIXES else _read_txt_classes(path)
    return found


def _cut(examples, fractions, seed):
    """Each class's examples shuffled with `seed` and cut by `fractions` (train, val, test)."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"data.folder_fractions={tuple(fractions)} must be three non-negative "
                        f"fractions (train, validation, test) summing to 1")
    by_class = {}
    for example in examples:
        by_class.setdefault(example.label, []).append(example)
    splits = {split: [] for split, fraction in zip(SETS, fractions) if fraction > 0}
    for name in sorted(by_class):
        items = list(by_class[name])
        random.Random(f"{seed}/{name}").shuffle(items)
        cut1 = round(len(items) * fractions[0])
        cut2 = cut1 + round(len(items) * fractions[1])
        for split, part in zip(SETS, (items[:cut1], items[cut1:cut2], items[cut2:])):
            if split in splits:
                splits[split].extend(part)
    return splits


def _root(cfg):
    if cfg.name == pydoc_topics.NAME:
        return pydoc_topics.prepare()
    return os.path.expanduser(cfg.name[len(PREFIX):])


def _own(cfg):
    """{split: examples} of data.name="text:/path" (or the pydoc dataset: every CSV a split)."""
    root = _root(cfg)
    if cfg.name == pydoc_topics.NAME:
        return {name[:-len(".csv")]: read_file(os.path.join(root, name))
                for name in sorted(os.listdir(root)) if name.endswith(".csv")}
    if not os.path.exists(root):
        raise UserError(f"data.name={cfg.name!r}: {root} does not exist")
    if os.path.isfile(root):
        if not root.endswith(SUFFIXES):
            raise UserError(f"data.name={cfg.name!r}: a text file must be .csv or .jsonl")
        splits = _cut(read_file(root), tuple(cfg.folder_fractions), cfg.folder_split_seed)
    else:
        splits = _split_files(root)
        if not splits:
            classes = _read_txt_classes(root)
            if not classes:
                raise UserError(f"{root} is not a text dataset: expected train.csv / train.jsonl "
                                f"(and validation, test), or folders of .txt files per class")
            splits = _cut(classes, tuple(cfg.folder_fractions), cfg.folder_split_seed)
    return splits


def _names(cfg, splits):
    """Class names: the labels of the train split, sorted (a dataset read only for evaluation,
    without one: all its labels); a label of another split the train split lacks is refused."""
    train = splits.get(cfg.train_split)
    names = sorted({e.label for e in train or sum(splits.values(), [])})
    for split in (cfg.val_split, cfg.test_split):
        unknown = [e for e in splits.get(split, []) if e.label not in names]
        if unknown:
            raise UserError(f"{unknown[0].where}: label {unknown[0].label!r} is not one of the "
                            f"train set's ({', '.join(names[:10])}); {split} has "
                            f"{len(unknown)} such example{'s' * (len(unknown) > 1)}")
    return names


_OWN = {}  # (data.name, fractions, seed, file times) -> read dataset: a run reads it once


def _own_cached(cfg):
    key = (cfg.name, tuple(cfg.folder_fractions), cfg.folder_split_seed, _mtimes(_root(cfg)))
    if key not in _OWN:
        _OWN[key] = _own(cfg)
    splits = _OWN[key]
    return splits, _names(cfg, splits)


def _mtimes(root):
    if os.path.isfile(root):
        return os.path.getmtime(root)
    return tuple(sorted((dirpath, max([os.path.getmtime(os.path.join(dirpath, f)) for f in files],
                                      default=0)) for dirpath, _, files in os.walk(root)))


def _as_texts(examples, names):
    index = {name: i for i, name in enumerate(names)}
    has_pairs = any(e.pair is not None for e in examples)
    return Texts([e.text for e in examples], [e.pair or "" for e in examples] if has_pairs else None,
                 np.array([index[e.label] for e in examples], np.int64))


def class_names(cfg):
    if _is_files(cfg):
        return _own_cached(cfg)[1]
    from tljax.data import pipeline

    return list(pipeline.get_builder(cfg).info.features["label"].names)


def read_split(cfg, split):
    """The Texts of TFDS split string `split` (own text: "train", "validation" or "test")."""
    if _is_files(cfg):
        splits, names = _own_cached(cfg)
        if split not in splits:
            raise UserError(f"{cfg.name} has no {split} set; its sets: {', '.join(sorted(splits))}")
        return _as_texts(splits[split], names)
    return _read_tfds(cfg, split)


_TFDS = {}  # (data.name, data_dir, split) -> Texts: a run asks for a split several times


def _read_tfds(cfg, split):
    key = (cfg.name, cfg.data_dir, split)
    if key not in _TFDS:
        _TFDS[key] = _read_tfds_split(cfg, split)
    return _TFDS[key]


def _read_tfds_split(cfg, split):
    import tensorflow_datasets as tfds

    from tljax.data import pipeline

    text_key, pair_key = TFDS_FIELDS[cfg.name.split(":")[0]]
    ds = pipeline.as_dataset(cfg, pipeline.get_builder(cfg), split)
    texts, pairs, labels = [], [], []
    for example in tfds.as_numpy(ds):
        texts.append(example[text_key].decode("utf-8"))
        if pair_key:
            pairs.append(example[pair_key].decode("utf-8"))
        labels.append(int(example["label"]))
    if labels and min(labels) < 0:
        raise UserError(f"{cfg.name} split {split!r} has no labels (GLUE hides its test labels): "
                        f"report on the validation split (data.test_split) and select on a slice "
                        f"of train (data.val_split)")
    return Texts(texts, pairs if pair_key else None, np.array(labels, np.int64))
