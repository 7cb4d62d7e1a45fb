"""Shared by the benchmarks: model presets and a ready-to-compile train step per freezing spec."""
import jax
import jax.numpy as jnp
from flax import traverse_util

from configs import common
from tljax import freezing, models
from tljax.training import optim, steps
from tljax.models import peft
from tljax.training import state as state_lib

PRESETS = {
    "resnet50": ("resnet", {"depth": 50}),
    "bit-r50x1": ("bit", {"block_counts": (3, 4, 6, 3), "width_factor": 1}),
    "vit-b16": ("vit", {"size": "B", "patch": 16}),
    "vit-s16": ("vit", {"size": "S", "patch": 16}),
    "vit-ti16": ("vit", {"size": "Ti", "patch": 16}),
    # The hub backbones' architectures (HF configs of facebook/dinov2-base, google/siglip-base-
    # patch16-224, openai/clip-vit-base-patch16), random weights.
    "dinov2-b14": ("vit", {"size": "B", "patch": 14, "layer_scale": True, "classifier": "token_gap"}),
    "siglip-b16": ("vit", {"size": "B", "patch": 16, "classifier": "map", "activation": "gelu_tanh"}),
    "clip-b16": ("vit", {"size": "B", "patch": 16, "pre_norm": True, "patch_bias": False,
                         "activation": "quick_gelu"}),
    # The classic CNNs (keras.applications) and ConvNeXt-T.
    "vgg16": ("vgg", {"depth": 16}),
    "mobilenet_v2": ("mobilenet_v2", {"alpha": 1.0}),
    "convnext-t": ("convnext", {"size": "T"}),
    "tiny-bit": ("bit", {"block_counts": (1, 1, 1), "base_width": 8, "gn_groups": 8}),
    "tiny-resnet": ("resnet", {"depth": 18, "base_width": 4, "stem": "small"}),
}

def build_model(model, image_size, dtype="float32"):
    """(module, variables) of a preset with random weights and 1000 classes."""
    name, arch = PRESETS[model]
    module = models.build(name, arch, num_classes=1000, dtype=dtype)
    dummy = jnp.ones((1, image_size, image_size, 3), jnp.float32)
    return module, jax.jit(lambda r: module.init(r, dummy))(jax.random.PRNGKey(0))


def build_step(module, variables, image_size, spec, optimizer="sgd", accum_steps=1,
               axis_name=None, total_steps=1000, phase=0, param_dtype=None):
    """(train step function, initial state, trainable fraction, steps in the phase) of phase
    `phase` of freezing `spec` over `total_steps`, with the spec's parameter-efficient
    modules added to the model."""
    module, variables = _with_peft(module, variables, image_size, spec)
    params = variables["params"]
    sizes = {p: v.size for p, v in traverse_util.flatten_dict(params, sep="/").items()}
    plan = freezing.make_plan(spec, models.groups(module), list(sizes), total_steps)
    current = plan.phases[phase]
    end = plan.phases[phase + 1].start_step if phase + 1 < len(plan.phases) else total_steps
    trainable_paths = current.trainable_paths()
    cfg = common.base().optim
    cfg.name = optimizer
    tx = optim.build(cfg, plan, phase, total_steps)
    frozen = [p for p, m in current.mults.items() if m is None]
    step = steps.make_train_step(models.with_frozen_norms(module, frozen), tx, trainable_paths,
                                 accum_steps=accum_steps, axis_name=axis_name,
                                 param_dtype=param_dtype)
    state = state_lib.create(variables, tx, trainable_paths, seed=0)
    return step, state, freezing.trainable_fraction(current, sizes), end - current.start_step


def phase_count(module, variables, image_size, spec, total_steps):
    module, variables = _with_peft(module, variables, image_size, spec)
    paths = list(traverse_util.flatten_dict(variables["params"], sep="/"))
    return len(freezing.make_plan(spec, models.groups(module), paths, total_steps).phases)


def _with_peft(module, variables, image_size, spec):
    methods = models.with_peft(module, freezing.parse(spec).peft)
    return peft.add(module, variables, methods, models.example_input(module, (image_size, image_size, 3)))
