"""A trained model applied to images or texts: the weights, the run's eval preprocessing (or
its tokenizer, maximum length and pad id), class names.

Shared by `tljax.cli.predict` (image files or texts in, top-k classes out) and
`tljax.cli.evaluate` (a labelled split in, accuracy and a confusion matrix out).
"""
import csv
import dataclasses
import io

import jax
import numpy as np
from etils import epath

from tljax import models, paths, weights
from tljax.data import folder, preprocess
from tljax.data import text as text_data
from tljax.errors import UserError


def eval_pp(preprocessing):
    """The eval pp string of a source: the run's own when recorded, else resize to the
    source's image size and its normalisation (what the checkpoint's publishers specify)."""
    if preprocessing.get("pp_eval"):
        return preprocessing["pp_eval"]
    size = preprocessing.get("image_size", 224)
    return "|".join(filter(None, [f"resize({size})", preprocessing.get("normalization", "")]))


@dataclasses.dataclass
class Predictor:
    module: object
    variables: dict
    preprocessing: dict  # the source's (weights.load_model): images' or text's
    class_names: list    # name of output i

    @classmethod
    def load(cls, source, which="best"):
        """From a run directory (its best or final model) or any weights weights.load_model reads."""
        module, variables, preprocessing, names = weights.load_model(source, which=which)
        num_classes = module.num_classes
        return cls(module, variables, preprocessing,
                   list(names) if names else [str(i) for i in range(num_classes)])

    def __post_init__(self):
        self._logits = jax.jit(
            lambda variables, args, kwargs: self.module.apply(variables, *args, **kwargs, train=False))

    @property
    def reads_text(self):
        return models.takes_tokens(self.module)

    @property
    def pp_eval(self):
        return eval_pp(self.preprocessing)

    def probabilities(self, batch):
        """Softmax probabilities (float64 numpy) of a data batch: preprocessed NHWC "image",
        or "input_ids" with their "attention_mask" (and "token_type_ids")."""
        args, kwargs = models.model_inputs(batch)  # (labels and masks left out)
        logits = np.asarray(self._logits(self.variables, args, kwargs), np.float64)
        logits -= logits.max(-1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)

    def text_config(self, data_cfg):
        """`data_cfg` set to tokenize as the model's run did (its tokenizer, length, pad id)."""
        with data_cfg.unlocked():
            data_cfg.tokenizer = self.preprocessing.get("tokenizer", "")
            data_cfg.max_length = self.preprocessing["max_length"]
            data_cfg.pad_id = self.preprocessing.get("pad_id", 0)
        if not data_cfg.tokenizer:
            raise UserError("the model records no tokenizer: it was not trained by a tljax text "
                            "run or loaded from a folder with tokenizer.json")
        return data_cfg


def list_images(inputs):
    """Image files among `inputs` (files, or folders searched recursively), sorted per folder."""
    files = []
    for item in inputs:
        path = epath.Path(item).expanduser()
        if path.is_dir():
            found = sorted(str(directory / f) for directory, _, names in path.walk() for f in names
                           if f.lower().endswith(folder.IMAGE_SUFFIXES))
            if not found:
                raise UserError(f"{path} holds no image files ({', '.join(folder.IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(str(path))
        else:
            raise UserError(f"{item} is neither an image file nor a folder")
    return files


def load_images(files, pp_eval):
    """The images of `files` decoded as RGB and preprocessed by `pp_eval`, stacked (NHWC)."""
    import tensorflow as tf

    pp = preprocess.build(pp_eval)
    out = []
    for path in files:
        try:
            image = folder.decode_image(tf.io.read_file(path))
        except tf.errors.OpError as e:
            raise UserError(f"{path} is not a readable image ({e.message.splitlines()[0]})") from None
        out.append(pp(image, tf.zeros([2], tf.int64)).numpy())
    return np.stack(out)


def _top(predictor, probs, top_k):
    return [(predictor.class_names[i], float(probs[i])) for i in probs.argsort()[::-1][:top_k]]


def predict(predictor, files, top_k, batch_size=64):
    """[{"image": path, "top": [(class name, probability), ...]}] for `files`, best first."""
    results = []
    for begin in range(0, len(files), batch_size):
        chunk = files[begin:begin + batch_size]
        probs = predictor.probabilities({"image": load_images(chunk, predictor.pp_eval)})
        results += [{"image": path, "top": _top(predictor, p, top_k)} for path, p in zip(chunk, probs)]
    return results


def read_texts(inputs):
    """The texts `inputs` name: a .csv file's `text` column (with `text_pair` when present), a
    .txt or .jsonl file's lines (.jsonl: their "text"), or else the argument itself."""
    texts = []
    for item in inputs:
        if item.endswith((".csv", ".jsonl")) and epath.Path(item).is_file():
            texts += [(e.text, e.pair) for e in text_data.read_file(item, labelled=False)]
        elif item.endswith(".txt") and epath.Path(item).is_file():
            texts += [(line.strip(), None) for line in epath.Path(item).read_text().splitlines()
                      if line.strip()]
        else:
            texts.append((item, None))
    return texts


def predict_texts(predictor, texts, top_k, batch_size=64):
    """[{"text": text, "top": [(class name, probability), ...]}] for (text, pair) `texts`,
    tokenised as the model's run did and padded to its length buckets."""
    from tljax.data import tokens

    pp = predictor.preprocessing
    if not pp.get("tokenizer"):
        raise UserError("the model records no tokenizer: it was not trained by a tljax text run "
                        "or loaded from a folder with tokenizer.json")
    pairs = any(pair is not None for _, pair in texts)
    encoded = tokens.encode(pp["tokenizer"], pp["max_length"], [t for t, _ in texts],
                            [p or "" for _, p in texts] if pairs else None)
    results = []
    for begin in range(0, len(texts), batch_size):
        index = np.arange(begin, min(begin + batch_size, len(texts)))
        batch = tokens.padded_batch(encoded, index, pp["max_length"], pp.get("pad_id", 0))
        probs = predictor.probabilities(batch)
        results += [{"text": texts[i][0], "top": _top(predictor, p, top_k)} for i, p in zip(index, probs)]
    return results


def write_predictions(results, path):
    if path.endswith(".json"):
        paths.write_json(path, results)
    elif path.endswith(".csv"):
        text = io.StringIO()
        out = csv.writer(text)
        what = "text" if results and "text" in results[0] else "image"
        out.writerow([what, "rank", "class", "probability"])
        for r in results:
            for rank, (name, prob) in enumerate(r["top"], 1):
                out.writerow([r[what], rank, name, f"{prob:.6f}"])
        paths.write_text_atomic(path, text.getvalue())
    else:
        raise UserError(f"--output={path}: use a .csv or .json file name")
