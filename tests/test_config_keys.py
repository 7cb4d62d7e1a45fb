"""Each config key declared once (tljax/defaults.py KEYS): its default, doc and check in one
row, from which base() and config_lib.validate both come."""
import math

import ml_collections as mlc
import pytest

from tljax import config_keys, config_lib, defaults
from tljax.errors import UserError

NAMES = [key.name for key in defaults.KEYS]
TABLE = {key.name: key for key in defaults.KEYS}


def _leaves(config, prefix=""):
    """The dotted keys of `config`, stopping at table names (model.arch is one key)."""
    out = []
    for name, value in config.items():
        dotted = prefix + name
        if isinstance(value, mlc.ConfigDict) and dotted not in TABLE:
            out += _leaves(value, dotted + ".")
        else:
            out.append(dotted)
    return out


def _with(name, value):
    """base() with `name` set to `value`, whatever its type."""
    config = defaults.base()
    *parents, leaf = name.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    with config.ignore_type():
        node[leaf] = value
    return config


def test_every_key_of_base_is_in_the_table_once_and_vice_versa():
    assert len(NAMES) == len(set(NAMES))
    leaves = _leaves(defaults.base())
    assert sorted(leaves) == sorted(NAMES)
    assert isinstance(defaults.base().model.arch, mlc.ConfigDict)
    assert defaults.base().model.arch.to_dict() == {"block_counts": (3, 4, 6, 3), "width_factor": 1}


def test_a_key_declared_twice_is_refused():
    with pytest.raises(ValueError, match="declared more than once: \\['a.b'\\]"):
        config_keys.check_table([config_keys.Key("a.b", 1, "x"), config_keys.Key("a.b", 2, "y")])
    with pytest.raises(ValueError, match="also sections: \\['a'\\]"):
        config_keys.check_table([config_keys.Key("a", 1, "x"), config_keys.Key("a.b", 2, "y")])


def test_every_key_has_a_one_line_doc_and_base_is_fresh_each_call():
    for key in defaults.KEYS:
        assert key.doc.strip() and "\n" not in key.doc, key.name
    first, second = defaults.base(), defaults.base()
    first.model.arch.width_factor = 3
    assert second.model.arch.width_factor == 1


def test_the_defaults_pass_every_check():
    for key in defaults.KEYS:
        if key.check is not None:
            assert key.check.problem(key.name, key.default) is None, key.name
    config_lib.validate(defaults.base())


BAD_VALUES = [
    ("total_steps", 0, "config.total_steps must be a whole number >= 1, not 0"),
    ("log_every", 2.5, "config.log_every must be a whole number >= 1, not 2.5"),
    ("accum_steps", 0, "config.accum_steps must be a whole number >= 1"),
    ("checkpoint_every", True, "config.checkpoint_every must be a whole number >= 1"),
    ("eval_every", -1, "config.eval_every must be a whole number >= 0 (0: only at the end)"),
    ("data.batch_size", 0, "config.data.batch_size must be a whole number >= 1"),
    ("data.image_size", "224", "config.data.image_size must be a whole number >= 1, not '224'"),
    ("model.dropout", 1.0, "config.model.dropout must be in [0, 1), not 1.0"),
    ("model.attention_dropout", -0.1, "config.model.attention_dropout must be in [0, 1)"),
    ("optim.name", "sgdd", "config.optim.name must be one of"),
    ("optim.schedule", "cos", "config.optim.schedule must be one of"),
    ("model.init_head", "load", "config.model.init_head must be one of"),
    ("model.drop_path", "0.1", "config.model.drop_path must be in [0, 1), not '0.1'"),
    ("label_smoothing", 1.0, "config.label_smoothing must be in [0, 1)"),
    ("ema.decay", 1.0, "config.ema.decay must be in [0, 1) (0 = off)"),
    ("data.mix_prob", 1.5, "config.data.mix_prob must be in [0, 1], not 1.5"),
    ("data.mixup_alpha", -1.0, "config.data.mixup_alpha must be >= 0 (0 = off)"),
    ("model.dtype", "float64",
     "config.model.dtype must be one of 'float32', 'bfloat16', 'float16', not 'float64'"),
    ("model.forward_param_dtype", "fp16", "config.model.forward_param_dtype must be one of '', "),
    ("probe.method", "svm", "config.probe.method must be one of '', 'ridge', 'logreg', 'knn'"),
    ("optim.lr", math.nan, "config.optim.lr must be a finite number >= 0"),
    ("optim.l2sp", (0.1,), "config.optim.l2sp must be () or (alpha, beta) with both >= 0"),
    ("model.num_classes", 0, "config.model.num_classes must be -1 (from the data) or >= 1"),
    ("freeze", 3, "config.freeze must be a strategy string"),
    ("freeze_phases", ((0, "x"),), "config.freeze_phases must be ((start_step,"),
]


@pytest.mark.parametrize("name,bad,message", BAD_VALUES)
def test_each_check_rejects_a_bad_value_naming_the_key(name, bad, message):
    assert TABLE[name].check is not None
    with pytest.raises(UserError) as error:
        config_lib.validate(_with(name, bad))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert f"config.{name} " in str(error.value)


def test_cross_key_checks():
    config = _with("stop_at_step", 600)
    with pytest.raises(UserError, match=r"config.stop_at_step=600 must be in 0..total_steps=500"):
        config_lib.validate(config)
    with pytest.raises(UserError, match="set data.val_split"):
        config_lib.validate(_with("probe.method", "knn"))
    config = _with("probe.method", "knn")
    config.data.val_split = "validation"
    config_lib.validate(config)


@pytest.mark.parametrize("override,suggestion", [
    ("optim.lrr=1", "optim.lr"), ("lr=0.1", "optim.lr"), ("total_step=3", "total_steps"),
    ("optm.lr=1", "optim.lr"), ("data.batchsize=4", "data.batch_size"),
])
def test_an_unknown_key_is_one_line_with_the_nearest_declared_key(override, suggestion):
    config = defaults.base()
    config.lock()
    key = override.split("=")[0]
    with pytest.raises(UserError, match=f"unknown config key '{key}'; did you mean "
                                        f"'{suggestion}'\\?"):
        config_lib.apply_override(config, override)
    config_lib.apply_override(config, "model.arch.width_factor=2")
    assert config.model.arch.width_factor == 2
