"""Features of a fixed model: the pooled outputs of chosen depth groups and the head's input
(pre-logits), extracted once per set with the eval preprocessing and cached in the workdir.

The cache is WORKDIR/features/{train,validation,test}.npz plus meta.json, which records what
the features were extracted with; a config that would extract different features is refused.
Each set is written atomically once complete, so a killed run resumes at the first set not
yet written. Every process extracts its own shard of each set; process 0 writes.
"""
import io

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from tljax import config_lib, data, metrics, models, paths
from tljax.errors import UserError
from tljax.models import family, names, vit
from tljax.probe import classifiers
# What the features depend on: a cache is reused only when all of these are equal.
FINGERPRINT_KEYS = ("model.name", "model.arch", "model.init", "model.dtype", "model.attention",
                    "model.keep_pre_logits",
                    "data.name", "data.train_split", "data.val_split", "data.test_split",
                    "data.few_shot_k", "data.few_shot_val_k", "data.few_shot_seed",
                    "data.folder_fractions", "data.folder_split_seed", "data.image_size",
                    "data.tokenizer", "data.max_length", "data.pad_id", "probe.groups", "probe.pre_logits", "probe.n_last_blocks", "probe.avgpool")


def feature_fn(module, groups=(), pre_logits=True, n_last_blocks=0, avgpool=False):
    """(variables, inputs: a batch's {"image"} or {"input_ids", "attention_mask", ...}) ->
    float32 features: the pooled outputs of the named depth groups
    (e.g. ("block10", "block11") of a ViT, or ("stage3",) of a ResNet), in that order,
    followed by the head's input (pre-logits) when `pre_logits`. Pooling is the family's
    (models/family.py: the mean over positions; a ViT's class token and mean patch token).
    With `n_last_blocks` > 0 the features are DINOv2's linear-probe input instead (see
    `_dinov2_fn`)."""
    groups = tuple(groups)
    model_family = family.of(module)
    if avgpool and not n_last_blocks:
        raise UserError("probe.avgpool adds the mean patch token to DINOv2's input: set "
                        "probe.n_last_blocks too (e.g. 4)")
    if n_last_blocks:
        if groups:
            raise UserError(f"probe.n_last_blocks={n_last_blocks} (DINOv2's input) replaces "
                            f"probe.groups={groups}: set one of them")
        return _dinov2_fn(module, model_family, n_last_blocks, avgpool)
    known = [name for name, _ in model_family.groups(module)
             if name not in (names.HEAD, *names.TOP_OF_LAST_BLOCK)]
    unknown = [g for g in groups if g not in known]
    if unknown or not (groups or pre_logits):
        raise UserError(f"probe.groups={groups}: choose groups among {', '.join(known)} "
                        f"(or keep probe.pre_logits=True)")

    def capture(mdl, method_name):
        return method_name == "__call__" and mdl.name in groups

    def features(variables, batch):
        args, kwargs = models.model_inputs(batch)
        _, state = module.apply(variables, *args, **kwargs, train=False,
                                mutable=[names.INTERMEDIATES],
                                capture_intermediates=capture if groups else False)
        flat = traverse_util.flatten_dict(state[names.INTERMEDIATES])
        mask = batch.get("attention_mask")
        pooled = {path[-2]: model_family.pool(module, value[0], mask) for path, value in flat.items()
                  if len(path) >= 2 and path[-1] == "__call__"}
        parts = [pooled[g] for g in groups]
        if pre_logits:
            parts.append(state[names.INTERMEDIATES][names.HEAD_INPUT][0])
        return jnp.concatenate(parts, -1).astype(jnp.float32)
    return jax.jit(features)


def _dinov2_fn(module, model_family, n_last_blocks, avgpool):
    """DINOv2's linear-probe input: the class tokens of the last `n_last_blocks` blocks, each
    through the final norm, concatenated, and with `avgpool` the last block's mean patch
    token (DINOv2 eval/linear.py: n_last_blocks 1 or 4, avgpool on or off)."""
    if model_family.linear_input is None:
        raise UserError(f"probe.n_last_blocks needs a model with a class token and blocks "
                        f"(vit), not {model_family.name}: use probe.groups")
    if not module.class_token() or module.peft.ssf:
        raise UserError(f"probe.n_last_blocks takes class tokens through the plain final norm: "
                        f"it needs a ViT with a class token (classifier "
                        f"{', '.join(vit.WITH_CLASS_TOKEN)}) and no unmerged "
                        f"SSF (probe the run's exported, merged weights)")
    blocks = model_family.blocks(module)
    if not 0 < n_last_blocks <= len(blocks):
        raise UserError(f"probe.n_last_blocks={n_last_blocks}: the model has {len(blocks)} blocks")
    wanted = blocks[-n_last_blocks:]

    def capture(mdl, method_name):
        return method_name == "__call__" and mdl.name in wanted

    def features(variables, batch):
        args, kwargs = models.model_inputs(batch)
        _, state = module.apply(variables, *args, **kwargs, train=False,
                                mutable=[names.INTERMEDIATES], capture_intermediates=capture)
        flat = traverse_util.flatten_dict(state[names.INTERMEDIATES])
        tokens = {path[-2]: value[0] for path, value in flat.items()
                  if len(path) >= 2 and path[-1] == "__call__"}
        return model_family.linear_input(module, variables["params"],
                                         [tokens[b] for b in wanted], avgpool).astype(jnp.float32)
    return jax.jit(features)


def fingerprint(config, data_cfg):
    flat = config_lib.flatten(config_lib.to_dict(config))
    out = {key: flat.get(key) for key in FINGERPRINT_KEYS}
    out["pp_eval"] = data_cfg.pp_eval
    if config.data.few_shot_k and config.data.few_shot_seed < 0:
        out["seed"] = config.seed  # the few-shot sets follow the run seed
    return paths.strict_json(out)


class Cache:
    """WORKDIR/features: one .npz per set, meta.json naming what they were extracted with."""

    def __init__(self, directory, fingerprint):
        self.directory = directory
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
                return classifiers.Features(f["x"], f["y"]), float(f["flops"])
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
    xs, ys, compiled, flops = [], [], {}, 0.0
    for batch in batches:
        inputs = _model_inputs(batch)
        keep = batch["mask"] > 0
        run = fn
        if count_flops:  # XLA's exact count of the compiled forward (one per text bucket)
            shape = tuple(np.shape(v) for v in inputs.values())
            if shape not in compiled:
                compiled[shape] = fn.lower(variables, inputs).compile()
            run = compiled[shape]
            per_example = (metrics.compiled_cost(run).get("flops") or 0.0) / len(batch["mask"])
            flops += per_example * keep.sum()
        xs.append(np.asarray(run(variables, inputs))[keep])
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
    if count_flops and jax.process_count() > 1:  # each process counted its own examples
        from jax.experimental import multihost_utils

        flops = float(np.sum(multihost_utils.process_allgather(np.float64(flops))))
    return classifiers.Features(x, y), flops if count_flops else None


def _model_inputs(batch):
    """The entries of a data batch the model reads (not its labels and mask)."""
    return {k: v for k, v in batch.items() if k not in ("label", "mask")}
