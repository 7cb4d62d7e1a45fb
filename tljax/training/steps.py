"""Pure train and eval step factories: loss, gradients of the trainable subtree only, metrics,
and the in-step regularisers that act on the global batch (mixup, CutMix, label smoothing)
or on the weights (EMA).

Gradients are taken with respect to the trainable parameters alone; frozen ones
enter the forward pass as constants, so XLA never builds their backward pass
(a linear-probe step costs about one forward pass).
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from tljax import models
from tljax.models import peft
from tljax.training.state import merge_params, split_params, update_ema


def cross_entropy(logits, labels, label_smoothing=0.0):
    """Mean softmax cross-entropy; labels are class ids or (mixed) probability vectors.
    Label smoothing (Szegedy et al. 2016) targets (1 - e) y + e / K; on mixed labels it
    equals smoothing each label before mixing (mixing is linear), as timm does."""
    if labels.ndim == 1:
        labels = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        labels = (1.0 - label_smoothing) * labels + label_smoothing / logits.shape[-1]
    return optax.softmax_cross_entropy(logits, labels).mean()


def _microbatches(batch, accum_steps):
    """(accum, B/accum, ...) with microbatch i = rows i, i+accum, ...: every device keeps its share."""
    def split(x):
        x = x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)
    return jax.tree.map(split, batch)


def _reversed_global(x, axis_name):
    """Rows of the global batch in reverse order: example i's partner is B-1-i. Under pmap
    device d's partner rows live on device n-1-d and are fetched with a ppermute."""
    if axis_name:
        n = jax.lax.axis_size(axis_name)
        x = jax.lax.ppermute(x, axis_name, [(i, n - 1 - i) for i in range(n)])
    return jnp.flip(x, 0)


def _one_hot(labels, num_classes):
    return jax.nn.one_hot(labels, num_classes) if labels.ndim == 1 else labels


def mixup(batch, rng, alpha, num_classes, axis_name=None):
    """Mixup (Zhang et al. 2018) over the global batch: example i mixes with example B-1-i.

    Pairing by global position makes the mixed batch the same however the batch is
    split over devices and processes. One weight lam ~ Beta(alpha, alpha) per batch;
    labels become probabilities.
    """
    lam = jax.random.beta(rng, alpha, alpha)
    labels = _one_hot(batch["label"], num_classes)
    return dict(batch, image=lam * batch["image"] + (1 - lam) * _reversed_global(batch["image"], axis_name),
                label=lam * labels + (1 - lam) * _reversed_global(labels, axis_name))


def cutmix_box(rng, height, width, alpha):
    """((top, bottom, left, right), label weight of the kept image) of one CutMix box
    (Yun et al. 2019): side ratio sqrt(1 - lam), lam ~ Beta(alpha, alpha), centre uniform,
    clipped to the image; the weight is 1 - box area / image area after clipping (timm's
    `correct_lam`), so labels match the pixels actually pasted."""
    lam_rng, y_rng, x_rng = jax.random.split(rng, 3)
    cut = jnp.sqrt(1.0 - jax.random.beta(lam_rng, alpha, alpha))
    cut_h, cut_w = (cut * height).astype(jnp.int32), (cut * width).astype(jnp.int32)
    cy = jax.random.randint(y_rng, (), 0, height)
    cx = jax.random.randint(x_rng, (), 0, width)
    top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    kept = 1.0 - (bottom - top) * (right - left) / (height * width)
    return (top, bottom, left, right), kept


def cutmix(batch, rng, alpha, num_classes, axis_name=None):
    """CutMix over the global batch, paired like mixup (i with B-1-i), one box per batch."""
    _, height, width, _ = batch["image"].shape
    (top, bottom, left, right), kept = cutmix_box(rng, height, width, alpha)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    box = ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right))[None, :, :, None]
    labels = _one_hot(batch["label"], num_classes)
    return dict(batch, image=jnp.where(box, _reversed_global(batch["image"], axis_name), batch["image"]),
                label=kept * labels + (1 - kept) * _reversed_global(labels, axis_name))


@dataclasses.dataclass(frozen=True)
class Mixing:
    """timm's Mixup choice per batch: with probability `prob` the batch is mixed, by CutMix
    with probability `switch_prob` when both alphas are set, else by the one that is set."""
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5

    @property
    def active(self):
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, batch, rng, num_classes, axis_name=None):
        if self.cutmix_alpha <= 0 and self.prob >= 1:  # Mixup alone: the draws runs made
            return mixup(batch, rng, self.mixup_alpha, num_classes, axis_name)  # before CutMix
        apply_rng, switch_rng, mix_rng = jax.random.split(rng, 3)
        apply = jax.random.uniform(apply_rng) < self.prob
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or jax.random.uniform(switch_rng) < self.switch_prob)
        plain = dict(batch, label=_one_hot(batch["label"], num_classes))
        candidates = []
        if self.mixup_alpha > 0:
            candidates.append(mixup(batch, mix_rng, self.mixup_alpha, num_classes, axis_name))
        if self.cutmix_alpha > 0:
            candidates.append(cutmix(batch, mix_rng, self.cutmix_alpha, num_classes, axis_name))
        mixed = candidates[0] if len(candidates) == 1 else jax.tree.map(
            lambda a, b: jnp.where(use_cutmix, b, a), *candidates)
        return jax.tree.map(lambda m, p: jnp.where(apply, m, p), mixed, plain)


def ema_decay_at(step, decay, warmup):
    """EMA decay at `step` (updates done before this one): `decay`, or with warmup
    min(decay, (1 + step) / (10 + step)) as in TF's ExponentialMovingAverage num_updates."""
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def cast_floats(tree, dtype):
    """`tree` with its floating arrays in `dtype` (None: unchanged). Under jax.grad the cast's
    transpose brings gradients back to the parameters' float32."""
    if not dtype:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        tree)


def make_train_step(module, tx, trainable_paths, *, l2sp=None, accum_steps=1, axis_name=None,
                    mixing=None, label_smoothing=0.0, ema_decay=0.0, ema_warmup=False,
                    param_dtype=None):
    """step(state, batch) -> (state, metrics) for one phase (fixed trainable set and optimizer).

    `state` is a `tljax.training.state.TrainState`. With accum_steps > 1 the batch is processed
    as that many microbatches whose gradients are averaged before one optimizer update
    (the same update as the full batch for models without batch statistics). Under
    pmap, `axis_name` averages gradients, metrics and BatchNorm statistics (inside the
    layers, so every device normalises with global-batch statistics) over the devices.
    Random numbers come from (state.rng, step): mixing's are shared by all devices,
    dropout's are folded with the device and microbatch index. With `state.ema` the step also
    updates the exponential moving average of the parameters and BatchNorm statistics.
    `param_dtype` (e.g. bfloat16) is what the forward pass sees of the parameters: frozen ones
    are cast once per step, trainable ones inside the differentiated function, so gradients,
    the optimizer and the master weights stay float32.
    """
    module = models.for_device_axis(module, axis_name)

    def loss_fn(trainable, frozen, batch_stats, anchor, batch, rng):
        variables = {"params": merge_params(cast_floats(trainable, param_dtype), frozen)}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        args, kwargs = models.model_inputs(batch)
        logits, mutated = module.apply(variables, *args, **kwargs, train=True,
                                       mutable=["batch_stats"], rngs={"dropout": rng})
        loss = cross_entropy(logits, batch["label"], label_smoothing)
        total = loss
        if l2sp is not None:
            total = total + l2sp_penalty(trainable, anchor, *l2sp)
        return total, (loss, logits, mutated.get("batch_stats", {}))

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def grads_and_aux(trainable, frozen, state, batch, rng):
        if accum_steps == 1:
            return grad_fn(trainable, frozen, state.batch_stats, state.anchor, batch, rng)

        def one(carry, indexed):
            grad_sum, batch_stats = carry
            index, micro = indexed
            grads, (loss, logits, new_stats) = grad_fn(
                trainable, frozen, batch_stats, state.anchor, micro, jax.random.fold_in(rng, index))
            grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
            return (grad_sum, new_stats or batch_stats), (loss, logits)

        zeros = jax.tree.map(jnp.zeros_like, trainable)
        (grad_sum, batch_stats), (losses, logits) = jax.lax.scan(
            one, (zeros, state.batch_stats),
            (jnp.arange(accum_steps), _microbatches(batch, accum_steps)))
        grads = jax.tree.map(lambda g: g / accum_steps, grad_sum)
        logits = jnp.swapaxes(logits, 0, 1).reshape(-1, logits.shape[-1])  # back to batch order
        return grads, (jnp.mean(losses), logits, batch_stats)

    def step(state, batch):
        mix_rng, dropout_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
        if mixing is not None and mixing.active:
            batch = mixing(batch, mix_rng, module.num_classes, axis_name)
        if axis_name:
            dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
        trainable, frozen = split_params(state.params, trainable_paths)
        grads, (loss, logits, batch_stats) = grads_and_aux(
            trainable, cast_floats(frozen, param_dtype), state, batch, dropout_rng)
        if axis_name:
            grads, batch_stats = jax.lax.pmean((grads, batch_stats), axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        labels = batch["label"] if batch["label"].ndim == 1 else jnp.argmax(batch["label"], -1)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
            "grad_norm": optax.tree.norm(grads),
        }
        if axis_name:
            metrics = jax.lax.pmean(metrics, axis_name)
        params = merge_params(trainable, frozen)
        batch_stats = batch_stats or state.batch_stats
        ema, ema_batch_stats = state.ema, state.ema_batch_stats
        if ema is not None:
            ema, ema_batch_stats = update_ema(
                ema, ema_batch_stats, params, batch_stats,
                ema_decay_at(state.step, ema_decay, ema_warmup))
        new_state = state.replace(step=state.step + 1, opt_state=opt_state, params=params,
                                  batch_stats=batch_stats, ema=ema,
                                  ema_batch_stats=ema_batch_stats)
        return new_state, metrics

    return step


def l2sp_penalty(trainable, anchor, alpha, beta):
    """L2-SP (Li et al. 2018): alpha/2 |w - w0|^2 on pretrained weights, beta/2 |w|^2 on the
    head. Parameters a PEFT method adds were never pretrained: no term pulls them toward
    their init (weight decay, if set, acts on them as on any weight)."""
    flat = traverse_util.flatten_dict(trainable, sep="/")
    anchor = traverse_util.flatten_dict(anchor, sep="/")
    towards_start = sum(jnp.sum(jnp.square(v - anchor[p])) for p, v in flat.items()
                        if not models.is_classifier(p) and not peft.is_added(p))
    head = sum(jnp.sum(jnp.square(v)) for p, v in flat.items() if models.is_classifier(p))
    return 0.5 * alpha * towards_start + 0.5 * beta * head


def make_eval_step(module, axis_name=None):
    """eval_step(params, batch_stats, batch) -> sums of correct, loss and count over mask==1,
    with the float32 master weights (what exports hold and evaluate/predict read back)."""

    def eval_step(params, batch_stats, batch):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        args, kwargs = models.model_inputs(batch)
        logits = module.apply(variables, *args, **kwargs, train=False)
        mask = batch["mask"]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        sums = {"correct": jnp.sum(correct * mask), "loss": jnp.sum(losses * mask),
                "count": jnp.sum(mask)}
        return jax.lax.psum(sums, axis_name) if axis_name else sums

    return eval_step
