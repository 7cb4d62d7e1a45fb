"""Text -> token batches: the checkpoint's own tokenizer (its tokenizer.json, read by HF
`tokenizers`, the fast Rust one), run once per dataset split and tokenizer and cached, then
length-bucketed batches so short texts do not pay for long ones.

The cache: paths.cache_root()/tokens/<hash>.npz, the hash over the tokenizer file, the
maximum length and the texts themselves, so a changed tokenizer or a changed dataset is
tokenised anew and nothing stale is read.

Train batches follow the image pipeline's guarantees (data/pipeline.py): one global stream
(a seeded permutation per epoch), every process taking its rows of each global batch, so the
global batch is the same for any process count and a resume at step s continues exactly.
Within each chunk of up to BUCKET_CHUNK global batches the examples are sorted by length,
cut into batches, and the batches' order is shuffled (seeded): similar lengths share a batch.
A batch is padded to the smallest bucket length (BUCKETS, capped at data.max_length) that
holds its longest text, so a run compiles one step per bucket, not one per length.
"""
import hashlib
import json
import math
import os

import numpy as np
from absl import logging

from tljax import paths
from tljax.data import pipeline, text
from tljax.errors import UserError

BUCKET_CHUNK = 16   # global batches sorted by length together
MIN_BUCKET = 16     # the shortest padded length; buckets double from it up to data.max_length
TOKENIZER_FILE = "tokenizer.json"


def tokenizer_path(source):
    """The tokenizer.json of `source`: the file, or the one in a folder (an HF model folder)."""
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        path = os.path.join(path, TOKENIZER_FILE)
    if not os.path.isfile(path):
        raise UserError(f"no tokenizer at {source!r} (data.tokenizer): expected a tokenizer.json "
                        f"or a folder holding one (a Hugging Face model folder)")
    return path


def load_tokenizer(source, max_length):
    """The `tokenizers.Tokenizer` of `source`, truncating to `max_length` tokens, no padding
    (batches are padded to their bucket)."""
    from tokenizers import Tokenizer

    path = tokenizer_path(source)
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as e:  # the Rust library raises its own exception types
        raise UserError(f"{path} is not a readable tokenizer.json ({str(e).splitlines()[0][:200]})") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def pad_id(tokenizer, default=0):
    """The tokenizer's padding id: its padding setting, else a [PAD] / <pad> token, else
    `default` (GPT-2 has none: the attention mask hides padding whatever its id)."""
    for token in ("[PAD]", "<pad>", "<|padding|>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return default


class Tokens:
    """A tokenised split: ragged ids (and token types) of each text, labels, and whether the
    texts were pairs (their batches then carry token types)."""

    def __init__(self, ids, offsets, types, labels, pairs):
        self.ids, self.offsets, self.types, self.labels = ids, offsets, types, labels
        self.pairs = bool(pairs)
        self.lengths = np.diff(offsets)

    def __len__(self):
        return len(self.labels)

    def rows(self, index, length, pad):
        """(ids, types, attention mask) of examples `index` right-padded to `length`."""
        ids = np.full((len(index), length), pad, np.int32)
        types = np.zeros((len(index), length), np.int32)
        mask = np.zeros((len(index), length), np.int32)
        for row, i in enumerate(index):
            start, end = self.offsets[i], self.offsets[i + 1]
            ids[row, :end - start] = self.ids[start:end]
            types[row, :end - start] = self.types[start:end]
            mask[row, :end - start] = 1
        return ids, types, mask


CACHE_FORMAT = b"tljax-tokens-2"  # bumped when the cached arrays change


def _digest(tokenizer_file, max_length, texts):
    h = hashlib.sha256(CACHE_FORMAT)
    with open(tokenizer_file, "rb") as f:
        h.update(f.read())
    h.update(json.dumps([max_length, texts.pairs is not None]).encode())
    for i, t in enumerate(texts.texts):
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00" + (texts.pairs[i].encode() if texts.pairs is not None else b"") + b"\x01")
    h.update(np.asarray(texts.labels, np.int64).tobytes())
    return h.hexdigest()[:24]


def tokenize(texts, tokenizer_source, max_length):
    """The Tokens of `texts` (a text.Texts), from the cache when this tokenizer, max length
    and these texts were tokenised before."""
    tokenizer_file = tokenizer_path(tokenizer_source)
    folder = os.path.join(paths.cache_root(), "tokens")
    cache = os.path.join(folder, f"{_digest(tokenizer_file, max_length, texts)}.npz")
    if os.path.exists(cache):
        with np.load(cache) as stored:
            return Tokens(stored["ids"], stored["offsets"], stored["types"], stored["labels"],
                          stored["pairs"])
    encoded = encode(tokenizer_source, max_length, texts.texts, texts.pairs, texts.labels)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{cache}.{os.getpid()}.tmp.npz"
    np.savez(tmp, ids=encoded.ids, offsets=encoded.offsets, types=encoded.types,
             labels=encoded.labels, pairs=encoded.pairs)
    os.replace(tmp, cache)  # a reader never sees half a file
    return encoded


def encode(tokenizer_source, max_length, texts, pairs=None, labels=None):
    """The Tokens of `texts` (and their `pairs`), tokenised now: truncated to `max_length`
    tokens, with a count in the log."""
    tokenizer = load_tokenizer(tokenizer_source, max_length)
    encodings = tokenizer.encode_batch(texts if pairs is None else list(zip(texts, pairs)))
    truncated = sum(bool(e.overflowing) for e in encodings)
    if truncated:
        logging.info("%d of %d texts are longer than data.max_length=%d tokens: truncated",
                     truncated, len(encodings), max_length)
    lengths = np.array([len(e.ids) for e in encodings], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.fromiter((t for e in encodings for t in e.ids), np.int32, int(offsets[-1]))
    types = np.fromiter((t for e in encodings for t in e.type_ids), np.int8, int(offsets[-1]))
    labels = np.zeros(len(texts), np.int32) if labels is None else np.asarray(labels, np.int32)
    return Tokens(ids, offsets, types, labels, pairs is not None)


def texts_of(cfg, which, seed):
    """The text.Texts of `which` ("train", "validation", "test"), with the few-shot selection
    and split rules of the image pipeline (pipeline.split_for, pipeline.few_shot_masks)."""
    split, train_split = pipeline.split_for(cfg, which)
    if cfg.few_shot_k <= 0 or split != train_split:
        return text.read_split(cfg, split)
    train = text.read_split(cfg, train_split)
    return train.subset(pipeline.few_shot_masks(cfg, train.labels, seed)[which])


def tokens_of(cfg, which, seed):
    return tokenize(texts_of(cfg, which, seed), cfg.tokenizer, cfg.max_length)


def bucket_length(longest, max_length):
    """The smallest of MIN_BUCKET, 2·MIN_BUCKET, ... (capped at max_length) >= `longest`."""
    length = MIN_BUCKET
    while length < longest:
        length *= 2
    return min(length, max_length)


def _batch(tokens, index, length, pad):
    """The examples `index` right-padded to `length`: ids, attention mask, labels, and token
    types for sentence pairs."""
    ids, types, mask = tokens.rows(index, length, pad)
    batch = {"input_ids": ids, "attention_mask": mask, "label": tokens.labels[index].astype(np.int32)}
    if tokens.pairs:
        batch["token_type_ids"] = types
    return batch


def padded_batch(tokens, index, max_length, pad):
    """The examples `index` padded to the bucket of the longest of them."""
    length = bucket_length(int(tokens.lengths[index].max(initial=1)), max_length)
    return _batch(tokens, index, length, pad)


def _stream(n, seed, start, stop):
    """Positions [start, stop) of the endless example stream: epoch e is a permutation of
    range(n) seeded by (seed, e)."""
    out, k = [], start
    while k < stop:
        epoch, within = divmod(k, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(n - within, stop - k)
        out.append(perm[within:within + take])
        k += take
    return np.concatenate(out) if out else np.zeros([0], np.int64)


def train_batches(cfg, *, seed, global_batch, process_index=0, process_count=1, start_step=0):
    """Endless iterator of this process's train batches from `start_step` (see the module doc)."""
    if global_batch % process_count:
        raise UserError(f"data.batch_size={global_batch} is not divisible by the "
                        f"{process_count} processes")
    tokens = tokens_of(cfg, "train", seed)
    local = global_batch // process_count
    rows = slice(process_index * local, (process_index + 1) * local)
    chunk = max(1, min(BUCKET_CHUNK, len(tokens) // global_batch))

    def chunk_batches(c):
        index = _stream(len(tokens), seed, c * chunk * global_batch, (c + 1) * chunk * global_batch)
        index = index[np.argsort(tokens.lengths[index], kind="stable")].reshape(chunk, global_batch)
        return index[np.random.default_rng([seed, c, 1]).permutation(chunk)]

    _log_padding(tokens, [b for c in range(max(1, math.ceil(len(tokens) / (chunk * global_batch))))
                          for b in chunk_batches(c)], cfg.max_length)
    step = start_step
    while True:
        batches = chunk_batches(step // chunk)
        for index in batches[step % chunk:]:  # padded to the global batch's bucket
            length = bucket_length(int(tokens.lengths[index].max()), cfg.max_length)
            yield _batch(tokens, index[rows], length, cfg.pad_id)
            step += 1


def _log_padding(tokens, batches, max_length):
    real = sum(int(tokens.lengths[b].sum()) for b in batches)
    padded = sum(len(b) * bucket_length(int(tokens.lengths[b].max()), max_length) for b in batches)
    logging.info("text batches over an epoch: %.1f%% padding with length buckets (%.1f%% "
                 "padded to data.max_length=%d)", 100 * (1 - real / padded),
                 100 * (1 - real / (sum(len(b) for b in batches) * max_length)), max_length)


def eval_batches(cfg, *, seed, global_batch, process_index=0, process_count=1, which="test"):
    """(list of this process's padded eval batches, example count) of `which`, in split
    order, process p taking examples p, p + P, ... (as the image pipeline's shard); padded
    examples have mask 0, and every process's batch b has the same bucket length."""
    if global_batch % process_count:
        raise UserError(f"data.eval_batch_size={global_batch} is not divisible by the "
                        f"{process_count} processes")
    tokens = tokens_of(cfg, which, seed)
    local, count = global_batch // process_count, len(tokens)
    num_batches = math.ceil(math.ceil(count / process_count) / local)
    shards = [np.arange(p, count, process_count) for p in range(process_count)]
    batches = []
    for b in range(num_batches):
        parts = [shard[b * local:(b + 1) * local] for shard in shards]
        longest = max(int(tokens.lengths[part].max(initial=1)) for part in parts)
        mine = parts[process_index]
        padded = np.concatenate([mine, np.zeros(local - len(mine), np.int64)])  # example 0, masked
        batch = _batch(tokens, padded, bucket_length(longest, cfg.max_length), cfg.pad_id)
        batch["mask"] = (np.arange(local) < len(mine)).astype(np.float32)
        batches.append(batch)
    return batches, count
