"""The pretrained model as a fixed feature extractor: features of the train, validation and
test sets extracted once (pre-logits, eval preprocessing), cached in the workdir, and a
cheap probe fitted on them (config.probe.method: ridge, logreg or knn).

    python -m tljax.main --config=configs/digits.py --workdir=/tmp/probe --config.probe.method=logreg

The cache is WORKDIR/features/{train,validation,test}.npz plus meta.json, which records what
the features were extracted with; a config that would extract different features is refused.
Each set is written atomically once complete, so a killed run resumes at the first set not
yet written. Every process extracts its own shard of each set; process 0 writes.
"""
import io
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from tljax import config_lib, data, metrics, models, paths, probes, run_init, train
from tljax.errors import UserError
from tljax.models import names

SETS = ("train", "validation", "test")
# What the features depend on: a cache is reused only when all of these are equal.
FINGERPRINT_KEYS = ("model.name", "model.arch", "model.init", "model.dtype", "model.keep_pre_logits",
                    "data.name", "data.train_split", "data.val_split", "data.test_split",
                    "data.few_shot_k", "data.few_shot_val_k", "data.few_shot_seed",
                    "data.folder_fractions", "data.folder_split_seed", "data.image_size",
                    "probe.groups", "probe.pre_logits")


def feature_fn(module, groups=(), pre_logits=True):
    """(variables, images) -> float32 features: the pooled outputs of the named depth groups
    (e.g. ("block10", "block11") of a ViT, or ("stage3",) of a ResNet), in that order,
    followed by the head's input (pre-logits) when `pre_logits`. Pooling: the mean over
    positions of a feature map; for ViT tokens, the class token and the mean of the patch
    tokens (DINOv2's linear-probe features)."""
    groups = tuple(groups)
    known = [name for name, _ in models.groups(module)
             if name not in (models.HEAD, models.FINAL_NORM)]
    unknown = [g for g in groups if g not in known]
    if unknown or not (groups or pre_logits):
        raise UserError(f"probe.groups={groups}: choose groups among {', '.join(known)} "
                        f"(or keep probe.pre_logits=True)")
    token = getattr(module, "classifier", "") == "token"

    def pool(x):
        if x.ndim == 4:
            return x.mean(axis=(1, 2))
        return jnp.concatenate([x[:, 0], x[:, 1:].mean(1)], -1) if token else x.mean(1)

    def capture(mdl, method_name):
        return method_name == "__call__" and mdl.name in groups

    def features(variables, images):
        _, state = module.apply(variables, images, train=False, mutable=[names.INTERMEDIATES],
                                capture_intermediates=capture if groups else False)
        flat = traverse_util.flatten_dict(state[names.INTERMEDIATES])
        pooled = {path[-2]: pool(value[0]) for path, value in flat.items()
                  if len(path) >= 2 and path[-1] == "__call__"}
        parts = [pooled[g] for g in groups]
        if pre_logits:
            parts.append(state[names.INTERMEDIATES][names.HEAD_INPUT][0])
        return jnp.concatenate(parts, -1).astype(jnp.float32)
    return jax.jit(features)


def _fingerprint(config, data_cfg):
    flat = config_lib.flatten(config_lib.to_dict(config))
    out = {key: flat.get(key) for key in FINGERPRINT_KEYS}
    out["pp_eval"] = data_cfg.pp_eval
    if config.data.few_shot_k and config.data.few_shot_seed < 0:
        out["seed"] = config.seed  # the few-shot sets follow the run seed
    return paths.strict_json(out)


class Cache:
    """WORKDIR/features: one .npz per set, meta.json naming what they were extracted with."""

    def __init__(self, workdir, fingerprint):
        self.directory = workdir / "features"
        meta = self.directory / "meta.json"
        if meta.exists() and meta.read_text() != fingerprint:
            raise UserError(f"{self.directory} holds features extracted with another model or "
                            f"data config ({meta.read_text()[:200]}...); use a new --workdir")
        self._fingerprint = fingerprint

    def load(self, which):
        """(Features, forward FLOPs their extraction took), or None when not cached."""
        path = self.directory / f"{which}.npz"
        if not path.exists():
            return None
        try:
            with np.load(io.BytesIO(path.read_bytes())) as f:
                return probes.Features(f["x"], f["y"]), float(f["flops"])
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path} is not a readable feature cache ({e}); delete it to "
                            f"extract again") from None

    def save(self, which, features, flops):
        if jax.process_index() != 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        paths.write_text_atomic(self.directory / "meta.json", self._fingerprint)
        buffer = io.BytesIO()
        np.savez(buffer, x=features.x, y=features.y, flops=np.float64(flops))
        paths.write_bytes_atomic(self.directory / f"{which}.npz", buffer.getvalue())


def extract(fn, variables, data_cfg, which, seed, batch_size, count_flops=True):
    """(Features of every example of `which`, counted once, in split order for any number of
    processes; forward FLOPs of its examples, the padding of the last batch left out, or
    None without `count_flops`, which reuses jax.jit's compilation instead, as repeated
    callers such as the few-shot monitor want)."""
    batches, count = data.eval_batches(data_cfg, seed=seed, which=which, global_batch=batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count())
    xs, ys, run, per_image = [], [], fn, None
    for batch in batches:
        if count_flops and per_image is None:  # XLA's exact count of the compiled forward
            run = fn.lower(variables, batch["image"]).compile()
            per_image = (metrics.compiled_cost(run).get("flops") or 0.0) / len(batch["mask"])
        keep = batch["mask"] > 0
        xs.append(np.asarray(run(variables, batch["image"]))[keep])
        ys.append(batch["label"][keep])
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
    if jax.process_count() > 1:  # Process p holds examples p, p + P, p + 2P, ... (ds.shard).
        from jax.experimental import multihost_utils

        index = jax.process_index() + jax.process_count() * np.arange(len(y))
        padded = -(-count // jax.process_count())  # equal shapes for the gather
        pad = padded - len(y)
        gathered = multihost_utils.process_allgather({
            "x": np.pad(x, ((0, pad), (0, 0))), "y": np.pad(y, (0, pad)),
            "index": np.pad(index, (0, pad), constant_values=-1)})
        flat = {k: np.concatenate(list(v)) for k, v in gathered.items()}
        real = flat["index"] >= 0  # padding rows carry index -1
        order = np.argsort(flat["index"][real])
        x, y = flat["x"][real][order], flat["y"][real][order]  # split order, any process count
    if len(y) != count:
        raise RuntimeError(f"extracted {len(y)} {which} features, the set has {count}")
    return probes.Features(x, y), per_image * count if count_flops else None


def _fit(config, sets, num_classes):
    p = config.probe
    train, val, test = (sets[w] for w in SETS)
    if p.method == "ridge":
        result = probes.ridge(train, val, test, num_classes, list(p.l2_regs))
        result["few_shot"] = probes.few_shot_ridge(train, test, num_classes, tuple(p.shots),
                                                   p.few_shot_seeds, p.few_shot_l2)
        return result
    if p.method == "logreg":
        return probes.logreg(train, val, test, num_classes, tuple(p.lrs), tuple(p.wds),
                             p.epochs, p.batch_size, config.seed)
    return probes.knn(train, val, test, num_classes, list(p.knn_ks))


def run(config, workdir):
    """Extracts (or reuses) the features, fits config.probe.method, writes summary.json.
    Wall time counts from the loaded model on, as a training run's does."""
    if config.probe.method not in ("ridge", "logreg", "knn"):
        raise UserError(f"probe.method={config.probe.method!r}: use ridge, logreg or knn")
    if not config.data.val_split:
        raise UserError("a probe chooses its hyperparameter on validation: set data.val_split")
    run_init.prepare_init(config, train.run)
    workdir = paths.resolve(workdir)
    model = run_init.load_model(config)
    started = time.monotonic()
    data_cfg = run_init.data_config(config, model.normalization)
    fn = feature_fn(model.module, config.probe.groups, config.probe.pre_logits)
    workdir_lock = run_init.claim_workdir(workdir, config)
    try:
        cache = Cache(workdir, _fingerprint(config, data_cfg))
        sets, forward_flops = {}, {}
        for which in SETS:
            cached = cache.load(which)
            if cached is None:
                logging.info("extracting %s features...", which)
                cached = extract(fn, model.variables, data_cfg, which, config.seed,
                                 config.data.eval_batch_size)
                cache.save(which, *cached)
            sets[which], forward_flops[which] = cached
            probes.check_finite(which, sets[which])
            logging.info("%s features: %s", which, sets[which].x.shape)
        result = _fit(config, sets, model.num_classes)
        summary = _summary(config, model, result, forward_flops, sets, time.monotonic() - started)
        if jax.process_index() == 0:
            paths.write_json(workdir / "summary.json", summary)
        logging.info("probe %s: test accuracy %.4f (validation %.4f)", config.probe.method,
                     summary["test_accuracy"], summary["val_accuracy"] or float("nan"))
        return summary
    finally:
        workdir_lock.release()


def _summary(config, model, result, forward_flops, sets, wall):
    """summary.json in the training runs' format, so sweeps and reports mix both. Cost, as
    for training runs (their train steps, evaluations left out): the forward pass over the
    train set plus the fit."""
    sizes = {p: int(np.prod(v.shape)) for p, v in traverse_util.flatten_dict(
        model.variables["params"], sep="/").items()}
    head = sum(v for p, v in sizes.items() if models.is_classifier(p))
    forward = forward_flops["train"]
    fit = result.get("fit_flops") or 0.0
    return {
        "status": "done", "freeze": config_lib.freeze_label(config), "seed": config.seed,
        "test_accuracy": result["test_accuracy"], "selected_step": None,
        "val_accuracy": result["val_accuracy"], "final_accuracy": result["test_accuracy"],
        "val_history": [], "trainable_fraction": head / sum(sizes.values()),
        "train_step_flops": {}, "mean_train_step_flops": None,
        "train_flops": forward + fit,
        "forward_flops": forward, "probe_fit_flops": result.get("fit_flops"),
        "num_params": int(sum(sizes.values())), "wall_time_s": wall, "total_steps": 0,
        "probe": {k: v for k, v in result.items() if k not in ("test_accuracy", "val_accuracy")},
    }
