"""Cheap classifiers fitted on fixed features: closed-form ridge, a grid of logistic
regressions trained at once, and k-NN. Each takes (train, validation, test) feature sets,
chooses its hyperparameter on validation only, and reports test once. Validation may be None
when one hyperparameter is given (a refit at the chosen one); test may be None (a run that
never reads test: its test_accuracy is None).

References: big_vision `evaluators/fewshot_lsr.py` (ridge: standardised features, bias
feature 100, ±1 targets, one eigendecomposition for every regularisation strength);
DINOv2 `eval/linear.py` (many linear heads on one pass, best on validation);
DINO `eval_knn.py` (cosine similarity, votes weighted by exp(similarity / 0.07), k=20).
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax.errors import UserError

RIDGE_BIAS = 100.0  # big_vision fewshot_lsr.py: a constant feature of 100 (nearly unregularised bias)
RIDGE_STD_EPS = 1e-5  # ... features / (std + 1e-5)
KNN_TEMPERATURE = 0.07  # DINO eval_knn.py: T = 0.07


@dataclasses.dataclass(frozen=True)
class Features:
    x: np.ndarray  # (N, D) float32
    y: np.ndarray  # (N,) int


def check_finite(name, features):
    bad = ~np.isfinite(features.x).all(axis=1)
    if bad.any():
        raise UserError(f"{int(bad.sum())} of {len(bad)} {name} feature vectors hold NaN/Inf "
                        f"(first: example {int(np.flatnonzero(bad)[0])}); the backbone or its "
                        f"input is broken: check model.init and data.pp_eval")


def _standardise(train, *others):
    """Features standardised by the train set's statistics; a None set stays None."""
    mean = train.mean(0, keepdims=True)
    std = train.std(0, keepdims=True) + RIDGE_STD_EPS
    return [None if x is None else (x - mean) / std for x in (train, *others)]


def _x(features):
    return None if features is None else features.x


def _accuracy(predicted, features):
    return float(np.mean(predicted == features.y))


def _only(name, values, val):
    """Without a validation set there is nothing to choose: exactly one value is required."""
    if val is None and len(values) != 1:
        raise ValueError(f"no validation set to choose {name} from {values}: give one value")


def _with_bias(x):
    return np.concatenate([x, np.full((len(x), 1), RIDGE_BIAS, x.dtype)], axis=1)


def ridge_weights(x, y, num_classes, l2_regs):
    """{l2: W} minimising |XW - T|² + l2 |W|² with T = ±1 one-hot targets; one eigh of
    XᵀX (or of XXᵀ when there are fewer examples than features) serves every l2."""
    x = np.asarray(x, np.float64)
    targets = np.where(np.eye(num_classes)[y] > 0, 1.0, -1.0)
    out = {}
    if len(x) >= x.shape[1]:
        values, vectors = np.linalg.eigh(x.T @ x)
        projected = vectors.T @ (x.T @ targets)
        for l2 in l2_regs:
            out[l2] = vectors @ (projected / (values + l2)[:, None])
    else:  # W = Xᵀ (XXᵀ + l2 I)⁻¹ T
        values, vectors = np.linalg.eigh(x @ x.T)
        projected = vectors.T @ targets
        for l2 in l2_regs:
            out[l2] = x.T @ (vectors @ (projected / (values + l2)[:, None]))
    return out


def ridge(train, val, test, num_classes, l2_regs):
    """{"test_accuracy", "val_accuracy", "l2"}: ridge with l2 chosen on validation (the
    first of l2_regs without a validation set)."""
    x_train, x_val, x_test = [None if x is None else _with_bias(x)
                              for x in _standardise(train.x, _x(val), _x(test))]
    weights = ridge_weights(x_train, train.y, num_classes, l2_regs)
    if val is not None and len(val.y):
        scores = {l2: _accuracy((x_val @ w).argmax(1), val) for l2, w in weights.items()}
        l2 = max(l2_regs, key=lambda r: (scores[r], -l2_regs.index(r)))
    else:
        scores, l2 = {}, l2_regs[0]
    return {"test_accuracy": None if test is None else _accuracy((x_test @ weights[l2]).argmax(1), test),
            "val_accuracy": scores.get(l2), "l2": l2}


def few_shot_ridge(train, test, num_classes, shots, seeds, l2):
    """big_vision's few-shot evaluation: {k: [test accuracy per seed]} of ridge (fixed l2) on
    k examples per class drawn from `train`; shots beyond the smallest class are left out."""
    from tljax.data import k_shot

    out = {}
    for k in [k for k in shots if k <= np.bincount(train.y).min()]:
        out[k] = []
        for seed in range(seeds):
            index = k_shot.few_shot_indices(train.y, k, seed)
            chosen = Features(train.x[index], train.y[index])
            out[k].append(ridge(chosen, None, test, num_classes, [l2])["test_accuracy"])
    return out


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch_size"))
def _logreg_grid_fit(x, y, key, lrs, wds, *, num_classes, epochs, batch_size):
    """Trains one softmax-regression head per (lr, wd) pair at once: vmap over heads inside
    one scan over minibatch steps (Adam, cosine decay). Returns W (H, D, C) and b (H, C).
    One compilation per shape and setting (jax.jit's own cache), however many heads."""
    n, d = x.shape
    steps_per_epoch = max(n // batch_size, 1)
    total = epochs * steps_per_epoch
    tx = optax.adam(optax.cosine_decay_schedule(1.0, total))

    def loss_fn(params, wd, xb, yb):
        w, b = params
        ce = optax.softmax_cross_entropy_with_integer_labels(xb @ w + b, yb).mean()
        return ce + 0.5 * wd * jnp.sum(w * w)

    def one_head_step(params, opt_state, lr, wd, xb, yb):
        grads = jax.grad(loss_fn)(params, wd, xb, yb)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, jax.tree.map(lambda u: lr * u, updates)), opt_state

    def step(carry, index):
        params, opt_state = carry
        epoch, within = index // steps_per_epoch, index % steps_per_epoch
        order = jax.random.permutation(jax.random.fold_in(key, epoch), n)
        batch = jax.lax.dynamic_slice_in_dim(order, within * batch_size, batch_size)
        params, opt_state = jax.vmap(one_head_step, in_axes=(0, 0, 0, 0, None, None))(
            params, opt_state, lrs, wds, x[batch], y[batch])
        return (params, opt_state), None

    params = (jnp.zeros((len(lrs), d, num_classes)), jnp.zeros((len(lrs), num_classes)))
    (params, _), _ = jax.lax.scan(step, (params, jax.vmap(tx.init)(params)), jnp.arange(total))
    return params


def logreg(train, val, test, num_classes, lrs, wds, epochs, batch_size=256, seed=0):
    """{"test_accuracy", "val_accuracy", "lr", "wd", "fit_flops"}: the grid of heads trained
    at once on standardised features, the head with the best validation accuracy reported."""
    x_train, x_val, x_test = _standardise(train.x, _x(val), _x(test))
    heads = [(lr, wd) for lr in lrs for wd in wds]
    _only("(lr, wd)", heads, val)
    args = (jnp.asarray(x_train), jnp.asarray(train.y), jax.random.PRNGKey(seed),
            jnp.array([h[0] for h in heads], jnp.float32), jnp.array([h[1] for h in heads], jnp.float32))
    static = dict(num_classes=num_classes, epochs=epochs, batch_size=min(batch_size, len(train.y)))
    from tljax import metrics

    flops = metrics.compiled_cost(_logreg_grid_fit.lower(*args, **static)).get("flops")
    w, b = (np.asarray(a) for a in _logreg_grid_fit(*args, **static))

    def accuracy(x, y):
        return ((np.einsum("nd,hdc->hnc", x, w) + b[:, None]).argmax(-1) == y).mean(1)

    val_acc = accuracy(x_val, val.y) if val is not None else None
    # The first best: the smallest lr, then the smallest wd.
    best = int(np.argmax(val_acc)) if val is not None else 0
    return {"test_accuracy": None if test is None else float(accuracy(x_test, test.y)[best]),
            "val_accuracy": None if val is None else float(val_acc[best]),
            "lr": heads[best][0], "wd": heads[best][1], "fit_flops": flops}


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_votes(train_x, train_y, query, k, num_classes, temperature):
    similarity = query @ train_x.T
    top, index = jax.lax.top_k(similarity, k)
    weights = jnp.exp(top / temperature)
    return jnp.sum(jax.nn.one_hot(train_y[index], num_classes) * weights[..., None], axis=1)


def knn_predict(train, query_x, num_classes, k, temperature=KNN_TEMPERATURE):
    """Class of each query: temperature-weighted votes of its k most cosine-similar train
    features."""
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    k = min(k, len(train.y))
    votes = _knn_votes(jnp.asarray(unit(train.x)), jnp.asarray(train.y), jnp.asarray(unit(query_x)),
                       k, num_classes, temperature)
    return np.asarray(votes).argmax(1)


def knn(train, val, test, num_classes, ks, temperature=KNN_TEMPERATURE):
    """{"test_accuracy", "val_accuracy", "k"}: k chosen on validation."""
    _only("k", ks, val)
    if val is None:
        scores = {ks[0]: None}
    else:
        scores = {k: _accuracy(knn_predict(train, val.x, num_classes, k, temperature), val)
                  for k in ks}
    k = max(ks, key=lambda c: (scores[c] or 0.0, -ks.index(c)))
    return {"test_accuracy": None if test is None else _accuracy(
                knn_predict(train, test.x, num_classes, k, temperature), test),
            "val_accuracy": scores[k], "k": k}
