"""Probes on cached features vs an end-to-end linear probe, on the offline digits task.

    python -m benchmarks.probes [--shots=60] [--epochs=10]

One run reports: the forward pass over the train set (what caching costs once), a 10-epoch
linear probe fitted on the cached features (one logistic head, the same batch size), and the
end-to-end `linear_probe` run for the same 10 epochs (a backbone forward on every step),
in XLA-counted FLOPs (exact) and wall-clock seconds (a ratio within this run); then the
logistic grid against scikit-learn's LogisticRegression with C chosen on the same
validation set, and ridge against numpy.linalg.lstsq of the same regularised system.
"""
import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from tljax import logs  # noqa: F401  (first: sets TF's log level before TF loads)

_SHOTS = flags.DEFINE_integer("shots", 60, "train examples per class (target digits 5-9)")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "epochs of both linear probes")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
    sys.path.insert(0, ROOT)
    from tljax import config_lib

    config = config_lib.load(os.path.join(ROOT, "configs", "digits.py"))
    for key, value in overrides.items():
        config_lib.apply_override(config, f"{key}={value}")
    return config


def _sets(config):
    from tljax import freezing, recipes, run_init, runs
    from tljax.probe import features

    recipe = recipes.pending(config)
    if recipe is not None:  # the pretrained digits model, produced once by its recipe
        runs.run(*recipe)
    model = run_init.load_model(config, freezing.from_config(config))
    data_cfg = run_init.data_config(config, model.preprocessing)
    fn = features.feature_fn(model.module)
    out = {}
    for which in ("train", "validation", "test"):
        features.extract(fn, model.variables, data_cfg, which, 0, 256)  # compile + warm caches
        begin = time.perf_counter()
        feats, flops = features.extract(fn, model.variables, data_cfg, which, 0, 256)
        out[which] = (feats, flops, time.perf_counter() - begin)
    return out, model.num_classes


def main(argv):
    del argv
    logs.setup()
    from sklearn.linear_model import LogisticRegression

    from tljax import runs
    from tljax.probe import classifiers

    shots, epochs = _SHOTS.value, _EPOCHS.value
    config = _config(**{"data.few_shot_k": shots, "data.few_shot_val_k": 10})
    sets, classes = _sets(config)
    train_set, val, test = (sets[w][0] for w in ("train", "validation", "test"))
    forward_flops, forward_s = sets["train"][1], sets["train"][2]
    batch = config.data.batch_size
    lr = 0.01
    classifiers.logreg(train_set, val, test, classes, (lr,), (0.0,), epochs, batch)  # compile
    begin = time.perf_counter()
    fit = classifiers.logreg(train_set, val, test, classes, (lr,), (0.0,), epochs, batch)
    fit_s = time.perf_counter() - begin
    steps = epochs * len(train_set.y) // batch
    with tempfile.TemporaryDirectory() as workdir:
        e2e = runs.run(_config(**{"data.few_shot_k": shots, "data.few_shot_val_k": 10,
                                   "freeze": "linear_probe", "total_steps": steps,
                                   "eval_every": 0, "checkpoint_every": steps,
                                   "export_weights": False, "optim.lr": lr}), workdir)
    print(f"\n{len(train_set.y)} train images, {epochs} epochs at batch {batch} ({steps} steps)\n")
    print("| what | GFLOPs | × forward pass over train | seconds | × forward (time) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| forward pass over train (cached once) | {forward_flops / 1e9:.2f} | 1.00 "
          f"| {forward_s:.2f} | 1.00 |")
    print(f"| linear probe on cached features | {fit['fit_flops'] / 1e9:.3f} "
          f"| {fit['fit_flops'] / forward_flops:.3f} | {fit_s:.2f} | {fit_s / forward_s:.2f} |")
    print(f"| cached: forward + fit | {(forward_flops + fit['fit_flops']) / 1e9:.2f} "
          f"| {1 + fit['fit_flops'] / forward_flops:.3f} | {forward_s + fit_s:.2f} "
          f"| {1 + fit_s / forward_s:.2f} |")
    print(f"| end-to-end linear_probe run | {e2e['train_flops'] / 1e9:.2f} "
          f"| {e2e['train_flops'] / forward_flops:.1f} | {e2e['wall_time_s']:.2f} "
          f"| {e2e['wall_time_s'] / forward_s:.1f} |")

    grid = (train_set, val, test, classes, tuple(config.probe.lrs), tuple(config.probe.wds),
            config.probe.epochs, config.probe.batch_size)
    compile_begin = time.perf_counter()
    classifiers.logreg(*grid)  # compiles once per shape and setting
    compile_s = time.perf_counter() - compile_begin
    grid_begin = time.perf_counter()
    ours = classifiers.logreg(*grid)
    grid_s = time.perf_counter() - grid_begin
    mean, std = train_set.x.mean(0), train_set.x.std(0) + classifiers.RIDGE_STD_EPS
    begin, best = time.perf_counter(), None
    for c in np.logspace(-4, 4, 9):
        clf = LogisticRegression(C=c, max_iter=5000).fit((train_set.x - mean) / std, train_set.y)
        score = clf.score((val.x - mean) / std, val.y)
        if best is None or score > best[0]:
            best = (score, clf.score((test.x - mean) / std, test.y), c)
    sk_s = time.perf_counter() - begin
    print(f"\nlogistic grid ({len(config.probe.lrs) * len(config.probe.wds)} heads, "
          f"{config.probe.epochs} epochs, one compiled scan; compiling once took "
          f"{compile_s:.2f}s): test {100 * ours['test_accuracy']:.1f}% in {grid_s:.2f}s; scikit-learn "
          f"LogisticRegression, 9 C values, C={best[2]:g} chosen on validation: test "
          f"{100 * best[1]:.1f}% in {sk_s:.2f}s")

    x = np.concatenate([(train_set.x - mean) / std, np.full((len(train_set.y), 1), 100.0)], 1)
    targets = np.where(np.eye(classes)[train_set.y] > 0, 1.0, -1.0)
    l2 = 2.0**10
    w = classifiers.ridge_weights(x, train_set.y, classes, [l2])[l2]
    reference = np.linalg.lstsq(np.concatenate([x, np.sqrt(l2) * np.eye(x.shape[1])]),
                                np.concatenate([targets, np.zeros((x.shape[1], classes))]),
                                rcond=None)[0]
    print(f"ridge (l2 = 2^10) vs numpy.linalg.lstsq: max |ΔW| = {np.abs(w - reference).max():.2e}")


if __name__ == "__main__":
    app.run(main)
