"""Parameter-efficient modules added to a pretrained model: LoRA/DoRA, adapters, visual
prompts and SSF.

`Peft` says which are present; every family takes it as its `peft` field. Op-level
methods (LoRA, DoRA, SSF, and the bottleneck adapter after each residual unit of the
convolutional families) are applied by a flax method interceptor around the family's
forward pass, so they reach every dense layer, conv and norm without a second model
definition; ViT's adapters and prompts sit in its Block (tljax/models/vit.py).

Added parameters live next to the parameters they adapt (`encoder/block3/attn/query/lora_a`),
so they belong to the same model group, and start so that the model computes exactly
the pretrained function (zero B, zero up-projection, unit scale); only prompts change
the output at init, as in VPT.
"""
import contextlib
import dataclasses
import math
import re
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from tljax.models import names

# Names of added parameters and modules; a path is "added" when it matches ADDED.
LORA_PARAMS = ("lora_a", "lora_b", "dora_magnitude")
SSF_PARAMS = ("ssf_scale", "ssf_shift")
ADAPTER_MODULES = ("adapter_attn", "adapter_mlp", "adapter")  # Houlsby (ViT) / after a unit
ADAPTFORMER_MODULE = "adaptformer"
PROMPTS = "prompts"
_MODULES = "|".join(ADAPTER_MODULES + (ADAPTFORMER_MODULE,))
ADDED = re.compile(rf".*/({'|'.join(LORA_PARAMS + SSF_PARAMS)}|{PROMPTS})|(.*/)?({_MODULES})/.*")
_INSIDE_ADDED_MODULE = re.compile(rf"(.*/)?({_MODULES})(/.*)?")  # an added module or its layers

# LoRA target shorthands: attention query/key/value/output, the MLP's two layers, 1x1 convs.
TARGETS = {"q": r".*attn/query", "k": r".*attn/key", "v": r".*attn/value", "o": r".*attn/out",
           "m": r".*mlp/fc[12]", "c": r".*conv.*"}


def is_added(path):
    return ADDED.fullmatch(path) is not None


@dataclasses.dataclass(frozen=True)
class Lora:
    """Hu et al. 2021: W + (alpha/rank)·A·B on the targeted layers, B zero-initialised.
    `targets`: letters of TARGETS or a regex over layer paths; "" = q,v on ViT (the paper's
    choice) and every 1x1 conv on ResNet/BiT. `dora`: Liu et al. 2024, a learned
    per-output magnitude times the direction of W + ΔW."""
    rank: int = 8
    alpha: float = 8.0
    targets: str = ""
    dropout: float = 0.0
    dora: bool = False

    def pattern(self, default):
        targets = self.targets or default
        if re.fullmatch(f"[{''.join(TARGETS)}]+", targets):
            return re.compile("|".join(TARGETS[t] for t in targets))
        return re.compile(targets)


@dataclasses.dataclass(frozen=True)
class Adapter:
    """A bottleneck MLP x -> up(act(down(x))) with the up-projection zero-initialised.
    Houlsby et al. 2019 (`kind="houlsby"`): sequential, after attention and after the MLP
    (`where="both"`), or after the MLP only (`where="mlp"`, one per block: V-PETL-Bench's
    0.16M-parameter "Adapter"); on ResNet/BiT one after each residual unit.
    AdaptFormer (Chen et al. 2022): parallel to the MLP, fed the residual stream, times `scale`."""
    dim: int = 8
    where: str = "both"
    scale: float = 0.1


@dataclasses.dataclass(frozen=True)
class Prompts:
    """VPT (Jia et al. 2022): `tokens` learned tokens after the class token, at the first
    block (shallow) or replaced at every block (deep)."""
    tokens: int = 10
    deep: bool = True


@dataclasses.dataclass(frozen=True)
class Peft:
    lora: Optional[Lora] = None
    adapter: Optional[Adapter] = None       # Houlsby / conv-unit adapters
    adaptformer: Optional[Adapter] = None
    prompts: Optional[Prompts] = None
    ssf: bool = False                       # Lian et al. 2022

    def __bool__(self):
        return any((self.lora, self.adapter, self.adaptformer, self.prompts, self.ssf))

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if v}

    @classmethod
    def from_dict(cls, d):
        kinds = {"lora": Lora, "adapter": Adapter, "adaptformer": Adapter, "prompts": Prompts}
        return cls(**{k: kinds[k](**v) if k in kinds and v else v for k, v in (d or {}).items()})

    def union(self, other):
        """Both sets of modules; one method given twice with different settings is an error."""
        merged = {}
        for field in dataclasses.fields(self):
            a, b = getattr(self, field.name), getattr(other, field.name)
            if a and b and a != b:
                raise ValueError(f"{field.name} is configured twice: {a} and {b}")
            merged[field.name] = a or b
        return Peft(**merged)


NONE = Peft()

# ------------------------------------------------------------------ op-level methods
_LINEAR = (nn.Dense, nn.DenseGeneral, nn.Conv)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm)


def lora_init(key, shape, dtype=jnp.float32):
    """A's init as huggingface/peft `lora/layer.py` (kaiming_uniform_ with a=sqrt(5)):
    uniform within ±1/sqrt(fan_in)."""
    return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")(key, shape, dtype)


def _in_ndim(module, kernel):
    """How many leading kernel axes are inputs (Conv: kh, kw, cin)."""
    if isinstance(module, nn.DenseGeneral):
        return len(module.axis) if isinstance(module.axis, (tuple, list)) else 1
    return kernel.ndim - 1


def _effective_kernel(module, kernel):
    standardize = getattr(module, "standardized", None)  # BiT's weight-standardized conv
    return standardize(kernel) if standardize else kernel


def _is_lora_target(module, path, lora, default):
    if not isinstance(module, _LINEAR) or not lora.pattern(default).fullmatch(path):
        return False
    if isinstance(module, nn.Conv):
        return all(k == 1 for k in module.kernel_size)  # 1x1 convs only
    return True


def _lora(module, x, y, lora, train):
    kernel = module.get_variable("params", "kernel")
    n_in = _in_ndim(module, kernel)
    fan_in, fan_out = math.prod(kernel.shape[:n_in]), math.prod(kernel.shape[n_in:])
    a = module.param("lora_a", lora_init, (fan_in, lora.rank))
    b = module.param("lora_b", nn.initializers.zeros, (lora.rank, fan_out))
    if isinstance(module, nn.Conv):  # 1x1: subsample by the stride, then a matmul per pixel
        strides = module.strides or 1
        strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
        x = x[:, ::strides[0], ::strides[1]]
    x = nn.Dropout(lora.dropout)(x, deterministic=not train) if lora.dropout else x
    x = x.reshape(x.shape[: x.ndim - (1 if isinstance(module, nn.Conv) else n_in)] + (fan_in,))
    scale = lora.alpha / lora.rank
    delta = ((x @ a.astype(x.dtype)) @ b.astype(x.dtype)).reshape(y.shape) * scale
    if not lora.dora:
        return y + delta
    # DoRA (Liu et al. 2024; huggingface/peft `lora/dora.py`): magnitude x direction, the
    # column norm of W + ΔW detached from the graph as the paper's section 4.3 does.
    w = _effective_kernel(module, kernel).reshape(fan_in, fan_out)
    magnitude = module.param("dora_magnitude", lambda *_: column_norm(w), (fan_out,))
    norm = jax.lax.stop_gradient(column_norm(w + scale * a @ b))
    factor = (magnitude / norm).reshape(kernel.shape[n_in:]).astype(y.dtype)
    bias = module.get_variable("params", "bias") if module.has_variable("params", "bias") else 0.0
    return (y - bias) * factor + delta * factor + bias


def column_norm(w):
    """Norm of each output column of an (in, out) matrix."""
    return jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=0))


def _is_ssf_target(module):
    """SSF goes where it merges into the weights: after ops with a bias, and after norms."""
    if isinstance(module, _LINEAR):
        return module.use_bias
    return isinstance(module, _NORMS) and module.use_scale and module.use_bias


def _ssf(module, y):
    if isinstance(module, nn.DenseGeneral):
        kernel = module.get_variable("params", "kernel")
        shape = kernel.shape[_in_ndim(module, kernel):]
    else:
        shape = y.shape[-1:]
    scale = module.param("ssf_scale", nn.initializers.ones, shape)
    shift = module.param("ssf_shift", nn.initializers.zeros, shape)
    return y * scale.astype(y.dtype) + shift.astype(y.dtype)


def insert_prompts(module, x, tokens, replace, lead, bound):
    """VPT (and prompt tuning, its text analogue): `tokens` learned tokens (parameter PROMPTS
    of `module`, uniform within ±`bound`) after the first `lead` tokens (a class token,
    registers); with `replace` they take the place of the previous block's prompt outputs
    (deep VPT) instead of being added."""
    init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
        key, shape, dtype, -bound, bound)
    prompts = module.param(PROMPTS, init, (tokens, x.shape[-1]))
    prompts = jnp.broadcast_to(prompts.astype(x.dtype), (x.shape[0], *prompts.shape))
    rest = x[:, lead + (tokens if replace else 0):]
    return jnp.concatenate([x[:, :lead], prompts, rest], axis=1)


def prompted_mask(key_mask, tokens, lead):
    """A (batch, length) key mask with `tokens` attended prompt positions after `lead`."""
    ones = jnp.ones((key_mask.shape[0], tokens), key_mask.dtype)
    return jnp.concatenate([key_mask[:, :lead], ones, key_mask[:, lead:]], axis=1)


class UnitAdapter(nn.Module):
    """The bottleneck adapter of Adapter, as 1x1 convs over channels (a Dense on the last axis)."""
    dim: int
    activation: str = "relu"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(self.dim, kernel_init=lora_init, dtype=self.dtype, name="down")(x)
        h = nn.gelu(h, approximate=False) if self.activation == "gelu" else nn.relu(h)
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros, dtype=self.dtype,
                        name="up")(h)


def intercept(peft, train, units=(), lora_default="qv"):
    """Context manager applying `peft`'s op-level methods to every layer called inside it.

    `units`: module types after whose output a conv family puts its adapter."""
    if not (peft.lora or peft.ssf or (peft.adapter and units)):
        return contextlib.nullcontext()

    def interceptor(next_fun, args, kwargs, context):
        module, y = context.module, next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return y
        path = "/".join(module.scope.path)
        if path.split("/")[0] == names.HEAD or _INSIDE_ADDED_MODULE.fullmatch(path):
            return y  # The classifier trains whole; added modules are not adapted again.
        if peft.adapter and isinstance(module, units):
            return y + UnitAdapter(peft.adapter.dim, dtype=y.dtype, name="adapter")(y)
        if peft.lora and _is_lora_target(module, path, peft.lora, lora_default):
            y = _lora(module, args[0], y, peft.lora, train)
        if peft.ssf and _is_ssf_target(module):
            y = _ssf(module, y)
        return y

    return nn.intercept_methods(interceptor)


# ------------------------------------------------------------------ adding and merging
def add(module, variables, peft, example, seed=0):
    """(module with `peft`, variables with its added parameters initialised, for inputs like
    `example`, a batch of one: models.example_input): the base
    variables unchanged, added ones from their inits, and those whose init reads the base
    weights (DoRA's magnitude = the column norms of W) computed from these base weights."""
    if not peft:
        return module, variables
    module = module.clone(peft=peft)
    dummy = example
    fresh = jax.jit(lambda k: module.init(k, dummy))(jax.random.PRNGKey(seed))
    flat = traverse_util.flatten_dict(fresh["params"], sep="/")
    base = traverse_util.flatten_dict(variables["params"], sep="/")
    merged = {p: base.get(p, v) for p, v in flat.items() if not p.endswith("/dora_magnitude")}
    params = traverse_util.unflatten_dict(merged, sep="/")
    if len(merged) < len(flat):  # Let flax create the missing magnitudes from the loaded W.
        create = jax.jit(lambda v, key: module.apply(v, dummy, rngs={"params": key},
                                                     mutable=["params"]))
        _, created = create({**variables, "params": params}, jax.random.PRNGKey(seed))
        params = created["params"]
    return module, {**variables, "params": params}


def merged(module, variables, mergeable_lora=True):
    """(module, variables) with LoRA/DoRA and SSF folded into the base weights, so inference
    runs the plain architecture; adapters and prompts stay as they are. `mergeable_lora`
    is False for weight-standardized convs (BiT), whose standardization is not linear in
    the kernel: LoRA stays unmerged there."""
    peft = getattr(module, "peft", NONE)
    merge_lora = bool(peft.lora) and mergeable_lora
    if not (merge_lora or peft.ssf):
        return module, variables
    flat = {p: np.asarray(v) for p, v in traverse_util.flatten_dict(variables["params"], sep="/").items()}
    ops = sorted({p.rsplit("/", 1)[0] for p in flat if p.rsplit("/", 1)[-1] in LORA_PARAMS + SSF_PARAMS})
    for op in ops:
        if merge_lora and f"{op}/lora_a" in flat:
            _merge_lora(flat, op, peft.lora)
        if peft.ssf and f"{op}/ssf_scale" in flat:
            _merge_ssf(flat, op)
    params = traverse_util.unflatten_dict(flat, sep="/")
    rest = dataclasses.replace(peft, lora=None if merge_lora else peft.lora, ssf=False)
    return module.clone(peft=rest), {**variables, "params": params}


def _merge_lora(flat, op, lora):
    kernel, a, b = flat[f"{op}/kernel"], flat.pop(f"{op}/lora_a"), flat.pop(f"{op}/lora_b")
    fan_in = a.shape[0]
    w = kernel.reshape(fan_in, -1).astype(np.float64) + (lora.alpha / lora.rank) * (
        a.astype(np.float64) @ b.astype(np.float64))
    magnitude = flat.pop(f"{op}/dora_magnitude", None)
    if magnitude is not None:
        w = w * (magnitude / np.sqrt(np.sum(w * w, axis=0)))
    flat[f"{op}/kernel"] = w.reshape(kernel.shape).astype(kernel.dtype)


def _merge_ssf(flat, op):
    """γ(xW + b) + β = x(Wγ) + (bγ + β); for a norm, scale·γ and bias·γ + β."""
    scale, shift = flat.pop(f"{op}/ssf_scale"), flat.pop(f"{op}/ssf_shift")
    weight = f"{op}/kernel" if f"{op}/kernel" in flat else f"{op}/scale"
    flat[weight] = (flat[weight] * scale).astype(flat[weight].dtype)
    flat[f"{op}/bias"] = (flat[f"{op}/bias"] * scale + shift).astype(flat[f"{op}/bias"].dtype)
