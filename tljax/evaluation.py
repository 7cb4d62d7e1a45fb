"""Evaluation of a trained model on a labelled set: the data config that names the set,
class-name matching, the counts, and the confusion-matrix plot (tljax.cli.evaluate's library)."""
import os

import numpy as np

from tljax import defaults, paths
from tljax import workdir as workdir_lib
from tljax.data.sets import SETS
from tljax.errors import UserError


def is_run(model):
    return os.path.isdir(model) and os.path.exists(os.path.join(model, workdir_lib.SUMMARY))


def data_config(model, data_name, split):
    """(data config, which set of it to read, seed)."""
    from tljax.data import folder, text

    cfg, seed = defaults.base().data, 0
    if data_name:
        with cfg.unlocked():
            # Nothing trains here: any split (train/ included) is read whole as the one set.
            cfg.name, cfg.few_shot_k, cfg.test_split, cfg.train_split = data_name, 0, split, ""
            if (folder.is_folder_name(data_name) and folder.is_one_tree(data_name)) or (
                    text.is_own_file(data_name)):
                cfg.folder_fractions = (0.0, 0.0, 1.0)  # every example is evaluated
        return cfg, "test", seed
    if not is_run(model):
        raise UserError(f"--model={model} is not a finished tljax run: pass --data (a TFDS name "
                        f"or folder:/path) to say what to evaluate on")
    saved = paths.read_json(os.path.join(model, workdir_lib.CONFIG))
    with cfg.unlocked():
        for key, value in saved["data"].items():
            cfg[key] = tuple(value) if isinstance(value, list) else value
    if split in SETS:  # the run's own sets (data.*_split, few-shot masks)
        return cfg, split, saved["seed"]
    with cfg.unlocked():
        cfg.few_shot_k, cfg.test_split = 0, split
    return cfg, "test", saved["seed"]


def label_map(model_names, data_names):
    """Dataset label -> model output index, by class name (the orders may differ)."""
    missing = [n for n in data_names if n not in model_names]
    if missing:
        raise UserError(f"the dataset has classes the model does not know: {missing[:5]} (model "
                        f"classes: {model_names[:10]}{'...' if len(model_names) > 10 else ''})")
    return [model_names.index(n) for n in data_names]


def evaluate(predictor, cfg, which, seed, batch_size):
    """{"accuracy", "count", "per_class": {name: {"accuracy", "count"}}, "confusion" [true][pred],
    "class_names"} over every example of the set, counted once."""
    from tljax import data

    if predictor.reads_text:
        cfg = predictor.text_config(cfg)
    else:
        with cfg.unlocked():
            cfg.pp_eval, cfg.cache = predictor.pp_eval, False
    mapping = np.array(label_map(predictor.class_names, data.class_names(cfg)))
    batches, count = data.eval_batches(cfg, seed=seed, global_batch=batch_size, which=which)
    names = predictor.class_names
    confusion = np.zeros((len(names), len(names)), np.int64)
    for batch in batches:
        keep = batch["mask"] > 0
        predicted = predictor.probabilities(batch).argmax(-1)[keep]
        np.add.at(confusion, (mapping[batch["label"][keep]], predicted), 1)
    if confusion.sum() != count:
        raise RuntimeError(f"evaluated {confusion.sum()} examples, the split has {count}")
    per_class = {n: {"count": int(confusion[i].sum()),
                     "accuracy": float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None}
                 for i, n in enumerate(names)}
    return {"accuracy": float(np.trace(confusion) / count), "count": int(count),
            "per_class": per_class, "confusion": confusion.tolist(), "class_names": names}


def plot_confusion(result, title, path):
    """Row-normalised confusion matrix (colour) with counts written in, for up to 30 classes."""
    from tljax.experiments import tables

    plt = tables.pyplot()

    counts = np.array(result["confusion"])
    shown = [i for i in range(len(counts)) if counts[i].sum() or counts[:, i].sum()]
    counts = counts[np.ix_(shown, shown)]
    names = [result["class_names"][i] for i in shown]
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = min(max(4, 0.45 * len(names) + 2), 16)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    if len(names) <= 30:
        ax.set_xticks(range(len(names)), names, rotation=90)
        ax.set_yticks(range(len(names)), names)
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"{title}\naccuracy {100 * result['accuracy']:.1f}% of {result['count']} images")
    fig.tight_layout()
    tables.save_figure(fig, path, dpi=110)
