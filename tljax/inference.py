"""A trained model applied to images: the weights, the run's eval preprocessing, class names.

Shared by `tljax.cli.predict` (image files in, top-k classes out) and `tljax.cli.evaluate` (a
labelled split in, accuracy and a confusion matrix out).
"""
import csv
import dataclasses
import io

import jax
import numpy as np
from etils import epath

from tljax import paths, weights
from tljax.data import folder, preprocess
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
    pp_eval: str
    class_names: list   # name of output i

    @classmethod
    def load(cls, source, which="best"):
        """From a run directory (its best or final model) or any weights weights.load_model reads."""
        module, variables, preprocessing, names = weights.load_model(source, which=which)
        num_classes = module.num_classes
        return cls(module, variables, eval_pp(preprocessing),
                   list(names) if names else [str(i) for i in range(num_classes)])

    def __post_init__(self):
        self._logits = jax.jit(lambda v, x: self.module.apply(v, x, train=False))

    def probabilities(self, images):
        """Softmax probabilities (float64 numpy) of a batch of preprocessed NHWC images."""
        logits = np.asarray(self._logits(self.variables, images), np.float64)
        logits -= logits.max(-1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


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


def predict(predictor, files, top_k, batch_size=64):
    """[{"image": path, "top": [(class name, probability), ...]}] for `files`, best first."""
    results = []
    for begin in range(0, len(files), batch_size):
        chunk = files[begin:begin + batch_size]
        probs = predictor.probabilities(load_images(chunk, predictor.pp_eval))
        for path, p in zip(chunk, probs):
            order = p.argsort()[::-1][:top_k]
            results.append({"image": path,
                            "top": [(predictor.class_names[i], float(p[i])) for i in order]})
    return results


def write_predictions(results, path):
    if path.endswith(".json"):
        paths.write_json(path, results)
    elif path.endswith(".csv"):
        text = io.StringIO()
        out = csv.writer(text)
        out.writerow(["image", "rank", "class", "probability"])
        for r in results:
            for rank, (name, prob) in enumerate(r["top"], 1):
                out.writerow([r["image"], rank, name, f"{prob:.6f}"])
        paths.write_text_atomic(path, text.getvalue())
    else:
        raise UserError(f"--output={path}: use a .csv or .json file name")
