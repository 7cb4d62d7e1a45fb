"""A probe run: the pretrained model as a fixed feature extractor, and a cheap probe fitted on
its cached features (config.probe.method: ridge, logreg or knn), chosen on validation.

    python -m tljax.main --config=configs/digits.py --workdir=/tmp/probe --config.probe.method=logreg
"""
import dataclasses
import time

import numpy as np
from absl import logging
from flax import traverse_util

from tljax import config_lib, freezing
from tljax import workdir as workdir_lib
from tljax import summary as summary_lib
from tljax.data.sets import SETS
from tljax.models import names
from tljax.probe import classifiers, features


def _classify(config, train, val, test, num_classes, chosen=None):
    """config.probe.method fitted on train, its hyperparameter chosen on val (or `chosen`,
    the result of an earlier choice: then val may be None), test reported (None: not read)."""
    p = config.probe
    if p.method == "ridge":
        return classifiers.ridge(train, val, test, num_classes,
                                 [chosen["l2"]] if chosen else list(p.l2_regs))
    if p.method == "logreg":
        lrs, wds = ((chosen["lr"],), (chosen["wd"],)) if chosen else (tuple(p.lrs), tuple(p.wds))
        return classifiers.logreg(train, val, test, num_classes, lrs, wds, p.epochs,
                                  p.batch_size, config.seed)
    return classifiers.knn(train, val, test, num_classes,
                           [chosen["k"]] if chosen else list(p.knn_ks))


def _fit(config, sets, num_classes):
    """The probe chosen on validation; with probe.refit, refitted on train + validation at
    the chosen hyperparameter before test is read (the VTAB protocol's train800val200,
    DINOv2 eval/log_regression.py's final fit)."""
    p = config.probe
    train, val, test = (sets.get(w) for w in SETS)
    result = _classify(config, train, val, None if p.refit else test, num_classes)
    if p.refit:
        both = classifiers.Features(np.concatenate([train.x, val.x]),
                                    np.concatenate([train.y, val.y]))
        refit = _classify(config, both, None, test, num_classes, chosen=result)
        result.update(test_accuracy=refit["test_accuracy"], refit_examples=len(both.y))
        if result.get("fit_flops") is not None:
            result["fit_flops"] += refit.get("fit_flops") or 0
    if p.method == "ridge" and test is not None:
        result["few_shot"] = classifiers.few_shot_ridge(train, test, num_classes, tuple(p.shots),
                                                        p.few_shot_seeds, p.few_shot_l2)
    return result


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A probe run before its workdir is claimed."""
    config: object
    model: object        # run_init.Model
    data_cfg: object
    feature_fn: object
    started: float      # wall time counts from the loaded model on, as a training run's does


def prepare(config, start):
    """The probe of `config` on `start` (run_init.Start): its feature function. Nothing is
    written; `fit` then fits it in a claimed workdir."""
    fn = features.feature_fn(start.model.module, config.probe.groups, config.probe.pre_logits,
                             config.probe.n_last_blocks, config.probe.avgpool)
    return Prepared(config, start.model, start.data_cfg, fn, time.monotonic())


def fit(prepared, workdir):
    """Extracts (or reuses) the features, fits config.probe.method, writes summary.json into
    `workdir` (a Workdir claimed by tljax.runs)."""
    config, model, data_cfg = prepared.config, prepared.model, prepared.data_cfg
    cache = features.Cache(workdir.file(workdir_lib.FEATURES), features.fingerprint(config, data_cfg))
    sets, forward_flops = {}, {}
    for which in [w for w in SETS if w != "test" or config.data.test_split]:
        cached = cache.load(which)
        if cached is None:
            logging.info("extracting %s features...", which)
            cached = features.extract(prepared.feature_fn, model.variables, data_cfg, which,
                                      config.seed, config.data.eval_batch_size)
            cache.save(which, *cached)
        sets[which], forward_flops[which] = cached
        classifiers.check_finite(which, sets[which])
        logging.info("%s features: %s", which, sets[which].x.shape)
    result = _fit(config, sets, model.num_classes)
    summary = workdir.write_summary(_summary(config, model, result, forward_flops,
                                             time.monotonic() - prepared.started))
    logging.info("probe %s: test accuracy %s (validation %.4f)", config.probe.method,
                 "not read" if summary["test_accuracy"] is None
                 else f"{summary['test_accuracy']:.4f}",
                 summary["val_accuracy"] if summary["val_accuracy"] is not None else float("nan"))
    return summary


def _summary(config, model, result, forward_flops, wall):
    """summary.json in the shared schema. Cost, as for training runs (their train steps,
    evaluations left out): the forward pass over the train set plus the fit."""
    sizes = {p: int(np.prod(v.shape)) for p, v in traverse_util.flatten_dict(
        model.variables["params"], sep="/").items()}
    head = sum(v for p, v in sizes.items() if names.is_classifier(p))
    forward = forward_flops["train"]
    fit = result.get("fit_flops") or 0.0
    return summary_lib.new(
        status="done", freeze=freezing.label_of(config_lib.to_dict(config)), seed=config.seed,
        test_accuracy=result["test_accuracy"], val_accuracy=result["val_accuracy"],
        final_val_accuracy=result["val_accuracy"],
        final_accuracy=result["test_accuracy"], val_history=[],
        trainable_fraction=head / sum(sizes.values()), train_step_flops={},
        train_flops=forward + fit, forward_flops=forward, probe_fit_flops=result.get("fit_flops"),
        num_params=int(sum(sizes.values())), wall_time_s=wall, total_steps=0,
        probe={k: v for k, v in result.items() if k not in ("test_accuracy", "val_accuracy")})
