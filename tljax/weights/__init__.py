"""Pretrained weights: load any supported source into (module, variables) in tljax layout.

Contract: `load_model(source, *, model=None, num_classes=None)` returns a LoadedModel
(module, variables, preprocessing, class_names) with
`module.apply(variables, images_nhwc, train=False)` giving logits for images prepared
as `preprocessing` says (its "pp_eval" string when the source records one, else its
"normalization" op at "image_size"). Sources:
  - a checkpoint some registered family reads (its Family.layouts; weights/detect.py asks
    them): a Hugging Face model folder (config.json + model.safetensors / pytorch_model.bin),
    an official BiT or ViT/AugReg .npz, a timm or torchvision state dict (.safetensors /
    .pth), a Keras file (docs/weights.md lists them);
  - a tljax .safetensors export, or a tljax run directory: `which="best"` (default) is its
    validation-selected model, `which="final"` its last one (exports when written, else
    its checkpoints).
`num_classes` different from the source's gives a zero-initialised head.
"""
import json
import os
from typing import NamedTuple, Optional

import jax
import numpy as np
from flax import traverse_util

from tljax import literals, models
from tljax import workdir as workdir_lib
from tljax.models import names
from tljax.errors import UserError
from tljax.weights import catalog, detect, tljax_format
from tljax.formats import convert as convert_lib
from tljax.weights import merge as merge_lib


def init_variables(module, input_shape, seed=0):
    """Variables of `module` initialised for inputs of per-example `input_shape`: (H, W, C)
    for NHWC images, (length,) for token ids."""
    # One program: the key and the dummy input made inside it, not by eager ops of their own.
    return jax.jit(lambda: module.init(jax.random.PRNGKey(seed),
                                       models.example_input(module, input_shape), train=False))()


def input_shape(preprocessing):
    """The per-example input shape of a source's model: (max_length,) token ids for text
    (its `max_length`), else the (height, width, 3) of its images: its `image_size`, an int
    for a square or a (height, width) pair (a Keras .keras file built for another shape)."""
    if "max_length" in preprocessing:
        return (preprocessing["max_length"],)
    size = preprocessing.get("image_size", 224)
    height, width = size if isinstance(size, (list, tuple)) else (size, size)
    return (height, width, 3)


def _expected_shapes(module, input_shape):
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                                  models.example_input(module, input_shape),
                                                  train=False))
    return {p: v.shape for p, v in traverse_util.flatten_dict(abstract, sep="/").items()}


def _check_used(module, variables, input_shape, source):
    """Every loaded array is one the module uses, with its shape, and none is missing: flax
    would ignore an extra parameter (a PEFT module the architecture lacks) silently."""
    expected = {}
    for path, shape in _expected_shapes(module, input_shape).items():
        collection, _, rest = path.partition("/")
        expected.setdefault(collection, {})[rest] = shape
    problems = []
    for collection in sorted(set(expected) | set(variables)):
        loaded = traverse_util.flatten_dict(variables.get(collection, {}), sep="/")
        problems += merge_lib.mismatches(expected.get(collection, {}),
                                         {p: np.shape(v) for p, v in loaded.items()}, collection)
    if problems:
        inputs = (f"{input_shape[0]} tokens" if len(input_shape) == 1
                  else f"{input_shape[0]}x{input_shape[1]} images")
        raise UserError(f"weights {source} do not fit the {type(module).__name__} they describe "
                        f"at {inputs}: {'; '.join(problems)}")


class LoadedModel(NamedTuple):
    module: object
    variables: dict
    preprocessing: dict          # normalization, image_size and (tljax exports) pp_eval
    class_names: Optional[list]  # label i is class_names[i]; None when the source has none


def _from_tljax_run(workdir, which):
    """The Export of a tljax run directory: its exported file, or else its checkpoint."""
    if which not in ("best", "final"):
        raise UserError(f"which={which!r}: use 'best' (selected by validation) or 'final'")
    exported = [os.path.join(workdir, workdir_lib.BEST)] if which == "best" else []
    for path in exported + [os.path.join(workdir, workdir_lib.MODEL)]:
        if os.path.exists(path):
            return tljax_format.load(path)
    return _from_checkpoint(workdir, which)


def _from_checkpoint(workdir, which):
    """The Export of a run without exported weights (export_weights=False): the best/ or
    the newest checkpoints/ entry, as the model the run recorded when it started
    (workdir.MODEL_RECORD: architecture with PEFT modules, eval pp, class names)."""
    import orbax.checkpoint as ocp

    record_path = os.path.join(workdir, workdir_lib.MODEL_RECORD)
    if not os.path.exists(record_path):
        raise UserError(f"tljax run {workdir} has no {workdir_lib.MODEL_RECORD} (runs record the model "
                        f"they build since 2026-11-27): evaluate its exported .safetensors, or "
                        f"resume it with this version to write the record")
    with open(record_path) as f:
        record = json.load(f)
    folder = os.path.join(workdir, workdir_lib.BEST_CHECKPOINT)
    if which == "final" or not os.path.isdir(folder):
        folder = os.path.join(workdir, workdir_lib.CHECKPOINTS)
    manager = ocp.CheckpointManager(os.path.abspath(folder), item_names=("state", "meta"))
    step = manager.latest_step()
    if step is None:
        raise UserError(f"tljax run {workdir} has no checkpoint yet")
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))["state"]
    manager.close()
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    return tljax_format.Export(record["model"], record["arch"], record["num_classes"],
                               record["preprocessing"], variables, record["class_names"])


def parse_model_spec(model):
    """"bit" or "bit:gn_groups=4,ws_eps=1e-8" -> (family, architecture overrides)."""
    if not model:
        return None, {}
    family, _, text = model.partition(":")
    return family, literals.options(text)


def _read_source(path, model, which):
    """The source as a tljax_format.Export, whatever its format."""
    if not os.path.exists(path):
        raise UserError(f"weights {path!r} do not exist; check the path (model.init), or see "
                        f"`tljax catalog` for downloadable checkpoints")
    if os.path.isdir(path):
        config_path = os.path.join(path, workdir_lib.CONFIG)  # a run's, or a Hugging Face folder's
        if not os.path.exists(config_path):
            raise UserError(f"{path} is a directory without config.json: expected a Hugging Face "
                            f"model folder or a tljax run directory")
        with open(config_path) as f:
            hf_config = json.load(f)
        if "model_type" not in hf_config:
            return _from_tljax_run(path, which)
        family, arch, classes, pp, arrays, layout = detect.from_hf(path)
        labels = hf_config.get("id2label") or {}
        if classes and len(labels) == classes:
            pp = dict(pp, class_names=[labels.get(str(i), str(i)) for i in range(classes)])
    elif tljax_format.is_tljax_file(path):
        return tljax_format.load(path)
    else:
        family, arch, classes, pp, arrays, layout = detect.from_file(path, model)
    wanted, overrides = parse_model_spec(model)
    if wanted is not None and wanted != family:
        raise UserError(f"weights {path} hold a {family!r} model, not {model!r}")
    arch = {**arch, **overrides}
    width, groups = arch.get("base_width", 0) * arch.get("width_factor", 1), arch.get("gn_groups", 32)
    if family == "bit" and width % groups:
        raise UserError(f"{path}: BiT width {width} does not split into {groups} GroupNorm groups; "
                        f"is it an unmodified official checkpoint? (a custom one: pass "
                        f"model='bit:gn_groups=N')")
    module = models.build(family, arch, max(classes, 1))
    expected = _expected_shapes(module, input_shape(pp))
    if classes == 0:  # A backbone without a classifier: the head stays to be filled in.
        expected = {p: s for p, s in expected.items() if not names.is_classifier(p[len("params/"):])}
    flat = convert_lib.convert(arrays, layout, expected)
    class_names = pp.pop("class_names", None)
    return tljax_format.Export(family, arch, classes, pp, traverse_util.unflatten_dict(flat, sep="/"),
                               class_names)


def read(source, *, model=None, which="best"):
    """The tljax_format.Export of `source` (a path, catalog: or hub name) as stored: its
    position embeddings at the checkpoint's own grid, so whoever builds the model resamples
    them once, straight to the resolution it runs at."""
    path = catalog.resolve(str(source))
    export = _read_source(path, model, which)
    tokenizer = export.preprocessing.get("tokenizer")
    if tokenizer and not os.path.isabs(tokenizer):  # a tljax run's: beside its files
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        export.preprocessing["tokenizer"] = os.path.join(folder, tokenizer)
    return export


def load_model(source, *, model=None, num_classes=None, image_shape=None, which="best"):
    """The LoadedModel of `source`. A new `num_classes` gets a zero head (and no class
    names); `image_shape` re-initialises for another resolution (ViT position embeddings,
    resampled as the checkpoint's code does), as does a checkpoint whose position grid is
    not that of its preprocessing's image size (DINOv2: 518 px stored, 224 px used)."""
    name, arch, source_classes, preprocessing, variables, class_names = read(
        source, model=model, which=which)
    classes = num_classes or source_classes
    if not classes:
        raise UserError(f"weights {source} have no classifier: pass num_classes")
    module = models.build(name, arch, classes)
    image_shape = image_shape or input_shape(preprocessing)
    if classes != source_classes or _grid_differs(module, variables, image_shape):
        fresh = init_variables(module, image_shape)
        variables = merge_lib.merge(fresh, variables, reset_head=classes != source_classes,
                                    source=source, pos_resize=models.pos_resize(module))
    else:
        variables = jax.tree.map(np.asarray, variables)
        _check_used(module, variables, image_shape, source)
    if classes != source_classes:
        class_names = None
    return LoadedModel(module, variables, preprocessing, class_names)


def _grid_differs(module, variables, image_shape):
    """Whether the stored position embeddings are not those of `image_shape`."""
    stored = traverse_util.flatten_dict(variables, sep="/").get("params/embed/pos_embedding")
    if stored is None:
        return False
    wanted = _expected_shapes(module, image_shape).get("params/embed/pos_embedding")
    return wanted is not None and tuple(np.shape(stored)) != tuple(wanted)
