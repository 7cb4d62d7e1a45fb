"""A run reads back as it ran: `tljax.evaluate --model=RUN` rebuilds the model the run
recorded when it started (architecture with its PEFT modules, resolved eval preprocessing,
class names), with exports off and on, and weights a module does not use are refused."""
import numpy as np
import pytest
from flax import traverse_util

from tests.helpers import relative_error
from tljax import evaluation, inference, runs, weights
from tljax.data import pipeline
from tljax.training import selection
from tljax.errors import UserError
from tljax.weights import tljax_format

VIT = {"size": "Ti", "patch": 4, "width": 16, "depth": 2, "mlp_dim": 32, "heads": 2}
RESNET = {"depth": 18, "base_width": 4, "stem": "small"}


@pytest.mark.parametrize("family,arch,freeze,exports", [
    ("bit", None, "ssf", False),            # dataset-config style: model.arch={} from model.init
    ("bit", None, "adapter:dim=4", True),
    ("vit", VIT, "lora:r=2", False),
    ("vit", VIT, "full", True),
    ("resnet", RESNET, "adapter:dim=4", False),
    ("resnet", RESNET, "full", False),
])
def test_evaluating_a_run_reproduces_its_logits_and_test_accuracy(
        make_config, tmp_path, source_weights, monkeypatch, family, arch, freeze, exports):
    """The model read back from the run directory, fed through the recorded eval
    preprocessing, gives the logits the run's own model gave its first test batch when it
    reported test (to 1e-5 of their scale: a 6-step model's accuracy alone could hide a wrong
    module, weight or normalisation behind near-constant predictions)."""
    model = {"model.name": family, "model.arch": arch or {}}
    if arch is None:
        model["model.init"] = source_weights
    seen = {}
    real_report = selection.report_test

    def report_test(run_, state, done, record):  # the run's module, state and test inputs
        batch = next(iter(run_.eval_data["test"][0]))
        one = run_.par.one_copy(state)
        variables = {"params": one.params, **({"batch_stats": one.batch_stats}
                                              if one.batch_stats else {})}
        seen.update(label=batch["label"], logits=np.asarray(
            run_.module.apply(variables, batch["image"], train=False)))
        return real_report(run_, state, done, record)

    monkeypatch.setattr(selection, "report_test", report_test)
    # (eval_every=0: validation runs at the last step only, so "best" is the final state.)
    config = make_config(freeze=freeze, total_steps=6, export_weights=exports, **model)
    summary = runs.run(config, str(tmp_path))
    assert (tmp_path / "model.safetensors").exists() == exports
    predictor = inference.Predictor.load(str(tmp_path), "best")
    cfg, split, seed = evaluation.data_config(str(tmp_path), "", "test")
    result = evaluation.evaluate(predictor, cfg, split, seed, batch_size=64)
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)

    with cfg.unlocked():
        cfg.pp_eval = predictor.pp_eval  # as evaluation.evaluate reads the set
    batches, _ = pipeline.eval_batches(cfg, seed=seed, global_batch=64, which=split)
    batch = next(iter(batches))
    np.testing.assert_array_equal(batch["label"], seen["label"])  # the same examples
    logits = np.asarray(predictor.module.apply(predictor.variables, batch["image"], train=False))
    assert np.ptp(seen["logits"]) > 0  # not a constant model: the comparison can tell
    assert relative_error(logits, seen["logits"]) <= 1e-5


def test_weights_a_module_does_not_use_are_an_error(make_config, tmp_path):
    """An adapter run's export loaded as the plain architecture: flax would ignore the
    adapter's parameters and score a different model; the loader refuses."""
    config = make_config(freeze="adapter:dim=4", total_steps=2, export_weights=True,
                         **{"model.name": "resnet", "model.arch": RESNET, "data.val_split": ""})
    runs.run(config, str(tmp_path / "run"))
    export = tljax_format.load(str(tmp_path / "run" / "model.safetensors"))
    assert "peft" in export.arch
    plain = {k: v for k, v in export.arch.items() if k != "peft"}
    tljax_format.save(tmp_path / "plain.safetensors", export.variables, model=export.model,
                      arch=plain, num_classes=export.num_classes,
                      preprocessing=export.preprocessing, class_names=export.class_names)
    with pytest.raises(UserError, match=r"unexpected \(not used by the model\) params: .*adapter"):
        weights.load_model(str(tmp_path / "plain.safetensors"))
    flat = traverse_util.flatten_dict(export.variables, sep="/")
    assert any("adapter" in p for p in flat)
