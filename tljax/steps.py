"""Pure train and eval step factories: loss, gradients of the trainable subtree only, metrics.

Gradients are taken with respect to the trainable parameters alone; frozen ones
enter the forward pass as constants, so XLA never builds their backward pass
(a linear-probe step costs about one forward pass).
"""
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from tljax import models
from tljax.state import merge_params, split_params


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy; labels are class ids or (mixup) probability vectors."""
    if labels.ndim == 1:
        labels = jax.nn.one_hot(labels, logits.shape[-1])
    return optax.softmax_cross_entropy(logits, labels).mean()


def _microbatches(batch, accum_steps):
    """(accum, B/accum, ...) with microbatch i = rows i, i+accum, ...: every device keeps its share."""
    def split(x):
        x = x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)
    return jax.tree.map(split, batch)


def mixup(batch, rng, alpha, num_classes, axis_name=None):
    """Mixup (Zhang et al. 2018) over the global batch: example i mixes with example B-1-i.

    Pairing by global position makes the mixed batch the same however the batch is
    split over devices and processes: under jit the flip is of the global array;
    under pmap device d's partner rows live on device n-1-d and are fetched with a
    ppermute. One weight lam ~ Beta(alpha, alpha) per batch; labels become probabilities.
    """
    lam = jax.random.beta(rng, alpha, alpha)
    labels = batch["label"]
    if labels.ndim == 1:
        labels = jax.nn.one_hot(labels, num_classes)

    def reversed_global(x):
        if axis_name:
            n = jax.lax.axis_size(axis_name)
            x = jax.lax.ppermute(x, axis_name, [(i, n - 1 - i) for i in range(n)])
        return jnp.flip(x, 0)

    return dict(batch, image=lam * batch["image"] + (1 - lam) * reversed_global(batch["image"]),
                label=lam * labels + (1 - lam) * reversed_global(labels))


def make_train_step(module, tx, trainable_paths, *, l2sp=None, accum_steps=1, axis_name=None,
                    mixup_alpha=0.0):
    """step(state, batch) -> (state, metrics) for one phase (fixed trainable set and optimizer).

    `state` is a `tljax.state.TrainState`. With accum_steps > 1 the batch is processed
    as that many microbatches whose gradients are averaged before one optimizer update
    (the same update as the full batch for models without batch statistics). Under
    pmap, `axis_name` averages gradients, metrics and BatchNorm statistics (inside the
    layers, so every device normalises with global-batch statistics) over the devices.
    Random numbers come from (state.rng, step): mixup's are shared by all devices,
    dropout's are folded with the device and microbatch index.
    """
    module = models.for_device_axis(module, axis_name)

    def loss_fn(trainable, frozen, batch_stats, anchor, batch, rng):
        variables = {"params": merge_params(trainable, frozen)}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        logits, mutated = module.apply(variables, batch["image"], train=True,
                                       mutable=["batch_stats"], rngs={"dropout": rng})
        loss = cross_entropy(logits, batch["label"])
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
        if mixup_alpha > 0:
            batch = mixup(batch, mix_rng, mixup_alpha, module.num_classes, axis_name)
        if axis_name:
            dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
        trainable, frozen = split_params(state.params, trainable_paths)
        grads, (loss, logits, batch_stats) = grads_and_aux(trainable, frozen, state, batch,
                                                           dropout_rng)
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
        new_state = state.replace(step=state.step + 1, opt_state=opt_state,
                                  params=merge_params(trainable, frozen),
                                  batch_stats=batch_stats or state.batch_stats)
        return new_state, metrics

    return step


def l2sp_penalty(trainable, anchor, alpha, beta):
    """L2-SP (Li et al. 2018): alpha/2 |w - w0|^2 on pretrained weights, beta/2 |w|^2 on the head."""
    flat = traverse_util.flatten_dict(trainable, sep="/")
    anchor = traverse_util.flatten_dict(anchor, sep="/")
    towards_start = sum(jnp.sum(jnp.square(v - anchor[p])) for p, v in flat.items()
                        if not models.is_classifier(p))
    head = sum(jnp.sum(jnp.square(v)) for p, v in flat.items() if models.is_classifier(p))
    return 0.5 * alpha * towards_start + 0.5 * beta * head


def make_eval_step(module, axis_name=None):
    """eval_step(params, batch_stats, batch) -> sums of correct, loss and count over mask==1."""

    def eval_step(params, batch_stats, batch):
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        logits = module.apply(variables, batch["image"], train=False)
        mask = batch["mask"]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        sums = {"correct": jnp.sum(correct * mask), "loss": jnp.sum(losses * mask),
                "count": jnp.sum(mask)}
        return jax.lax.psum(sums, axis_name) if axis_name else sums

    return eval_step
