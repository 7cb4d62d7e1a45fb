"""What a run starts from (the prologue): the config after BiT-HyperRule, the model with
pretrained weights merged in and PEFT modules added, and the data config with the
normalisation those weights expect. It writes nothing; runs.py claims the workdir."""
import dataclasses

from absl import logging

from tljax import config_lib, data, hyperrule, models, weights
from tljax.data import preprocess, tokens
from tljax.errors import UserError
from tljax.models import names, peft
from tljax.weights import merge as merge_lib


def with_hyperrule(config):
    """A copy of `config` with BiT-HyperRule choices, from the train-set size and image area."""
    count = data.count(config.data, "train", config.seed)
    shape = data.get_builder(config.data).info.features["image"].shape
    area = shape[0] * shape[1] if shape[0] and shape[1] else None
    config = config_lib.copy(config)
    with config.unlocked():
        hyperrule.apply(config, count, area)
    logging.info("BiT-HyperRule for %d train examples, image area %s: %d steps, lr %g, %s",
                 count, area, config.total_steps, config.optim.lr, config.data.pp_train)
    return config


@dataclasses.dataclass(frozen=True)
class Model:
    module: object
    variables: dict        # initial variables (pretrained weights merged in)
    preprocessing: dict    # what the init weights expect: normalization, or a text model's
    #                        tokenizer and pad_id ({} without init weights)
    num_classes: int


def load_model(config, spec):
    """The run's Model: built, pretrained weights merged in, and the PEFT modules of `spec`
    (a freezing.Spec) added."""
    _check_input_kind(config)
    num_classes, data_classes = config.model.num_classes, data.num_classes(config.data)
    if num_classes <= 0:
        num_classes = data_classes
    elif num_classes < data_classes:
        raise UserError(f"model.num_classes={num_classes} but {config.data.name} has "
                        f"{data_classes} classes; use -1 (from the data) or >= {data_classes}")
    module, variables, preprocessing = _build_and_init(config, num_classes)
    module, variables = peft.add(module, variables, models.with_peft(module, spec.peft),
                                 models.example_input(module, input_shape(config, module)),
                                 seed=config.seed)
    return Model(with_regularisation(module, config.model), variables, preprocessing, num_classes)


def _check_input_kind(config):
    """The model family reads what the data holds (text or images), before any is read."""
    reads_text = models.family.get(config.model.name).reads_tokens
    if reads_text != data.is_text(config.data):
        kinds = ("text", "images") if reads_text else ("images", "text")
        raise UserError(f"model {config.model.name!r} reads {kinds[0]} but data.name="
                        f"{config.data.name!r} holds {kinds[1]}")
    if reads_text and (config.data.mixup_alpha or config.data.cutmix_alpha):
        raise UserError("data.mixup_alpha / data.cutmix_alpha mix images; set them to 0 for text")


def input_shape(config, module):
    """The per-example input shape `module` is built for: (data.max_length,) token ids for a
    text family, else data.image_size square RGB images."""
    if models.takes_tokens(module):
        return (config.data.max_length,)
    return (config.data.image_size, config.data.image_size, 3)


def with_regularisation(module, model_cfg):
    """`module` with the train-time regularisers of model.dropout / attention_dropout /
    drop_path (each off at eval); one a family lacks is refused when set. Their range is
    the config table's check (tljax/defaults.py), run by config_lib.validate."""
    rates = {k: float(model_cfg[k]) for k in names.REGULARISATION if model_cfg[k]}
    for key, rate in rates.items():
        if key not in module.__dataclass_fields__:
            raise UserError(f"model.{key}={rate:g}: {type(module).__name__} has no {key}; "
                            f"set it to 0")
    return module.clone(**rates) if rates else module


def _numerics(module, config):
    """model.dtype and model.attention applied (their values checked by config_lib.validate)."""
    return models.with_numerics(module, config.model.dtype, config.model.attention)


def _build_and_init(config, num_classes):
    """(module, variables, the preprocessing the weights expect: weights.read's, {} without).

    The architecture comes from model.arch, or from the init weights when it is empty.
    """
    if not config.model.init:
        module = _numerics(models.build(config.model.name, config.model.arch, num_classes), config)
        return module, weights.init_variables(module, input_shape(config, module), seed=config.seed), {}
    stored = weights.read(config.model.init, model=config.model.name)
    source_module = models.build(stored.model, stored.arch, max(stored.num_classes, 1))
    loaded, preprocessing = stored.variables, stored.preprocessing
    if config.model.arch:
        module = models.build(config.model.name, config.model.arch, num_classes)
    else:
        module = source_module.clone(num_classes=num_classes)
    module = _numerics(module, config)
    reset = config.model.init_head == "reset"
    if reset and getattr(module, "representation_size", None) and not config.model.keep_pre_logits:
        # vit_jax (checkpoint.py: load_pretrained) drops the i21k pre_logits layer when
        # fine-tuning with a new head: features go straight from the encoder to the head.
        module = module.clone(representation_size=None)
        loaded = dict(loaded, params={k: v for k, v in loaded["params"].items()
                                      if k != "pre_logits"})
    expected = preprocessing.get("normalization", "")
    if config.model.check_preprocessing and expected:
        for key in ("pp_train", "pp_eval"):
            got = preprocess.normalization_op(config.data[key])
            if got != "init_norm" and got.replace(" ", "") != expected.replace(" ", ""):
                raise UserError(f"weights {config.model.init} expect inputs normalised by "
                                f"{expected!r} but data.{key} uses {got or 'nothing'!r}; fix "
                                f"data.{key} or set model.check_preprocessing=False")
    variables = weights.init_variables(module.clone(peft=peft.NONE), input_shape(config, module),
                                       seed=config.seed)
    # Position embeddings resample as the checkpoint's own code does, whatever model.arch says.
    variables = merge_lib.merge(variables, loaded, reset_head=reset, source=config.model.init,
                                pos_resize=models.pos_resize(source_module))
    return module, variables, preprocessing


@dataclasses.dataclass(frozen=True)
class Start:
    """What every run (training or probe) starts from, before it claims its workdir."""
    spec: object      # freezing.Spec, parsed once
    model: Model
    data_cfg: object  # config.data with {size} and init_norm filled in


def start(config, spec):
    """The prologue every run shares: the model with its weights and PEFT modules, and the
    data config its weights expect. Nothing is written yet."""
    model = load_model(config, spec)
    return Start(spec, model, data_config(config, model.preprocessing))


def data_config(config, preprocessing):
    """config.data with the placeholders filled in from what the init weights expect
    (`preprocessing`): for images {size} by data.image_size (the one source of the
    resolution, checked against what the pp strings make) and init_norm by the weights'
    normalisation; for text the weights' own tokenizer and pad id."""
    data_cfg = config_lib.copy(config).data
    if data.is_text(data_cfg):
        return _text_data_config(data_cfg, preprocessing)
    normalization = preprocessing.get("normalization", "")
    with data_cfg.unlocked():
        for key in ("pp_train", "pp_eval"):
            spec = preprocess.with_size(data_cfg[key], data_cfg.image_size)
            data_cfg[key] = preprocess.with_init_norm(spec, normalization)
            preprocess.check_output_size(data_cfg[key], data_cfg.image_size, key)
    return data_cfg


def _text_data_config(data_cfg, preprocessing):
    with data_cfg.unlocked():
        if not data_cfg.tokenizer:
            if not preprocessing.get("tokenizer"):
                raise UserError("data.tokenizer is empty and the init weights bring no "
                                "tokenizer.json: set data.tokenizer to a tokenizer.json (or a "
                                "folder holding one)")
            data_cfg.tokenizer = preprocessing["tokenizer"]
        if data_cfg.pad_id < 0:
            data_cfg.pad_id = preprocessing.get("pad_id", -1)
        if data_cfg.pad_id < 0:
            data_cfg.pad_id = tokens.pad_id(tokens.load_tokenizer(data_cfg.tokenizer, data_cfg.max_length))
        if preprocessing.get("max_length") and data_cfg.max_length > preprocessing["max_length"]:
            raise UserError(f"data.max_length={data_cfg.max_length} is longer than the "
                            f"{preprocessing['max_length']} positions the init weights have")
    return data_cfg
