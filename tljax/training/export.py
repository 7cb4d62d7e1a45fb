"""What a finished run leaves to use: its final, validation-selected and (on request) EMA
weights as tljax .safetensors files, each with what is needed to apply it: architecture,
class names and the eval preprocessing."""
import jax
from etils import epath

from tljax import data, models, paths
from tljax import workdir as workdir_lib
from tljax.training import state as state_lib
from tljax.data import preprocess, tokens
from tljax.models import names, peft
from tljax.weights import tljax_format


def gather(par, state, best, with_ema):
    """{file name: host variables}: model.safetensors (final), best.safetensors (when a
    `best` checkpoint manager holds one) and ema.safetensors (`with_ema`). Every process
    calls it (a collective under multi-process fsdp)."""
    one = par.one_copy(state)
    exports = {workdir_lib.MODEL: {"params": one.params, "batch_stats": one.batch_stats}}
    best_step = best.latest_step() if best is not None else None
    if best_step is not None:
        best.wait()
        exports[workdir_lib.BEST] = best.restore_variables(
            best_step, {"params": one.params, "batch_stats": one.batch_stats})
    if with_ema and state.ema is not None:
        exports[workdir_lib.EMA] = state_lib.ema_variables(one)
    return {name: par.to_host(v) for name, v in exports.items()}


def _preprocessing(data_cfg):
    """How the model's inputs are made: the run's eval pp (data_cfg is the run's resolved
    data config: init_norm already replaced by the weights' normalisation, run_init), or for
    text the tokenizer (copied into the workdir by write_record, named relative to it), the
    maximum length and the pad id."""
    if data.is_text(data_cfg):
        return {"tokenizer": tokens.TOKENIZER_FILE, "max_length": data_cfg.max_length,
                "pad_id": data_cfg.pad_id}
    return {"normalization": preprocess.normalization_op(data_cfg.pp_eval),
            "image_size": data_cfg.image_size, "pp_eval": data_cfg.pp_eval}


def _class_names(data_cfg, num_classes):
    names = data.class_names(data_cfg)
    return names + [f"class{i}" for i in range(len(names), num_classes)]


def write_record(workdir, module, model_name, num_classes, data_cfg):
    """workdir/model.json (workdir.MODEL_RECORD), written when a run starts: the model it
    built (architecture with its PEFT modules), its eval preprocessing and class names, so
    that its checkpoints read back as the model that ran, with or without exports."""
    if jax.process_index() != 0:
        return
    if data.is_text(data_cfg):  # exports and predict tokenize as the run did
        paths.write_bytes_atomic(workdir / tokens.TOKENIZER_FILE,
                                 epath.Path(tokens.tokenizer_path(data_cfg.tokenizer)).read_bytes())
    paths.write_json(workdir / workdir_lib.MODEL_RECORD, {
        "model": model_name, "arch": arch_of(module), "num_classes": num_classes,
        "preprocessing": _preprocessing(data_cfg),
        "class_names": _class_names(data_cfg, num_classes)})


def write(workdir, exports, module, model_name, num_classes, data_cfg):
    """Writes each of `exports` into `workdir` (process 0 only)."""
    if jax.process_index() != 0:
        return
    preprocessing = _preprocessing(data_cfg)
    names = _class_names(data_cfg, num_classes)
    for name, variables in exports.items():
        # LoRA/DoRA and SSF are folded into the weights they adapt; adapters and prompts
        # are exported as modules (their settings go into `arch`).
        merged_module, variables = peft.merged(module, variables, models.mergeable_lora(module))
        tljax_format.save(workdir / name, {k: v for k, v in variables.items() if v},
                          model=model_name, arch=arch_of(merged_module), num_classes=num_classes,
                          preprocessing=preprocessing, class_names=names)


def arch_of(module):
    """The architecture kwargs of a built module (what tljax_format stores); train-time
    regularisers are not architecture, and parameter-efficient modules are stored only
    when present."""
    skip = {"num_classes", "dtype", "attention", "parent", "name", "frozen_norms", "bn_axis_name",
            *names.REGULARISATION}
    arch = {k: getattr(module, k) for k in module.__dataclass_fields__ if k not in skip}
    methods = arch.pop("peft", peft.NONE)
    return {**arch, "peft": methods.to_dict()} if methods else arch
