"""The offline text dataset, data.name="tljax_pydoc": paragraphs of the Python language
reference that ships with Python itself (the standard library's `pydoc_data.topics`, the text
`help()` shows), labelled by the topic they come from. Prepared on first use into
paths.cache_root()/data/tljax_pydoc/<Python version>/ with its own WordPiece tokenizer
(trained on every paragraph with HF `tokenizers`), as CSV files read like your own text.

Two tasks on disjoint topics, as digits 0-4 / 5-9 in the image default:
  source_{train,validation,test}  the SOURCE topics (the pretraining task), 80/10/10;
  target                          the TARGET topics: few-shot train, validation and test
                                  are drawn from it by data.few_shot_k / few_shot_val_k.
"""
import os
import random
import re
import sys

from tljax import lock, paths

NAME = "tljax_pydoc"
# The eight topics with the most paragraphs, and the five others with the most paragraphs no
# other topic repeats.
SOURCE = ("compound", "specialnames", "types", "string-methods", "debugger", "typesseq",
          "typesmapping", "formatstrings")
TARGET = ("comparisons", "import", "assignment", "strings", "calls")
MIN_WORDS = 8        # shorter paragraphs (headings, code fragments) are left out
VOCAB_SIZE = 2000
TOKENIZER = "tokenizer.json"


def folder():
    """Where the dataset lives: its topics' text depends on the Python version."""
    version = f"py{sys.version_info.major}{sys.version_info.minor}"
    return os.path.join(paths.cache_root(), "data", NAME, version)


def paragraphs(topic):
    from pydoc_data.topics import topics

    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", topics[topic])
            if len(p.split()) >= MIN_WORDS]


def _rows(topics):
    """(paragraph, topic) of `topics`, each paragraph once: the reference repeats some, within
    a topic and across topics (those are left out: their label is ambiguous), and a repeat
    would put one text in both the train and the test split."""
    topics_of = {}
    for topic in SOURCE + TARGET:
        for text in paragraphs(topic):
            topics_of.setdefault(text, set()).add(topic)
    rows, seen = [], set()
    for topic in topics:
        for text in paragraphs(topic):
            if len(topics_of[text]) == 1 and text not in seen:
                seen.add(text)
                rows.append((text, topic))
    return rows


def prepare():
    """The dataset's folder, written on first use (under a lock: parallel runs write it once)."""
    root = folder()
    if os.path.exists(os.path.join(root, TOKENIZER)):
        return root
    os.makedirs(root, exist_ok=True)
    held = lock.WorkdirLock(root).acquire_waiting(poll_seconds=0.5)
    try:
        if os.path.exists(os.path.join(root, TOKENIZER)):
            return root
        import csv

        source = _rows(SOURCE)
        random.Random(0).shuffle(source)
        cut1, cut2 = int(0.8 * len(source)), int(0.9 * len(source))
        sets = {"source_train": source[:cut1], "source_validation": source[cut1:cut2],
                "source_test": source[cut2:], "target": _rows(TARGET)}
        for split, rows in sets.items():
            with open(os.path.join(root, f"{split}.csv"), "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(("text", "label"))
                writer.writerows(rows)
        _train_tokenizer([t for rows in sets.values() for t, _ in rows],
                         os.path.join(root, TOKENIZER))  # last: its presence marks "prepared"
    finally:
        held.release()
    return root


def _train_tokenizer(corpus, path):
    """BERT-style: lower-cased WordPiece, [CLS] text [SEP] (pair: [CLS] a [SEP] b [SEP])."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE,
                                                                    special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    paths.write_text_atomic(path, tokenizer.to_str())
