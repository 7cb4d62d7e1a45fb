"""Evaluates a trained model on a labelled split: accuracy, per-class accuracy, confusion matrix.

    python -m tljax.cli.evaluate --model=/tmp/run                     # the run's test set, best model
    python -m tljax.cli.evaluate --model=/tmp/run --which=final --split=validation
    python -m tljax.cli.evaluate --model=model.safetensors --data=folder:/my/images --split=test

With a run directory and no --data, --split train / validation / test is that set exactly as
the run defined it (few-shot selection and seed included); another name is that whole split
of the run's dataset. --data is a TFDS name or folder:/path (a folder of class folders without
split folders is evaluated whole). Writes evaluation.json and confusion.png into --output
(default: RUN/eval_<which>_<split>, RUN/eval_<which>_<data>_<split> with --data,
or ./tljax_eval).
"""
import os
import re

from tljax import logs  # noqa: I001  (first: sets TF's log level before TF loads)
from absl import flags, logging

from tljax.cli.common import run_main
from tljax.errors import UserError

_MODEL = flags.DEFINE_string("model", None, "run directory or weights file")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "final"],
                           "for a run directory: the validation-selected or the final model")
_DATA = flags.DEFINE_string("data", "", "TFDS name, folder:/path or text:/path (default: the run's "
                            "dataset)")
_SPLIT = flags.DEFINE_string("split", "test", "split to evaluate")
_BATCH = flags.DEFINE_integer("batch_size", 128, "examples per forward pass", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", "", "folder for evaluation.json and confusion.png")


def main(argv):
    if not _MODEL.value or len(argv) > 1:
        raise UserError("usage: python -m tljax.cli.evaluate --model=RUN_DIR_OR_WEIGHTS "
                        "[--which=best|final] [--split=test] [--data=NAME|folder:/path]")
    logs.setup()
    from tljax import compilation, evaluation, inference, paths

    compilation.enable_cache()

    cfg, which, seed = evaluation.data_config(_MODEL.value, _DATA.value, _SPLIT.value)
    predictor = inference.Predictor.load(_MODEL.value, _WHICH.value)
    result = evaluation.evaluate(predictor, cfg, which, seed, _BATCH.value)
    # Another dataset's evaluation gets a folder of its own, not the run's own test set's.
    data = "_" + re.sub(r"[^A-Za-z0-9.=_-]+", "_", _DATA.value).strip("_") if _DATA.value else ""
    output = _OUTPUT.value or (
        os.path.join(_MODEL.value, f"eval_{_WHICH.value}{data}_{_SPLIT.value}")
        if evaluation.is_run(_MODEL.value) else "tljax_eval")
    os.makedirs(output, exist_ok=True)
    source = f"{_MODEL.value} ({_WHICH.value})" if evaluation.is_run(_MODEL.value) else _MODEL.value
    result.update(model=source, data=cfg.name, split=_SPLIT.value)
    paths.write_json(os.path.join(output, "evaluation.json"), result)
    evaluation.plot_confusion(result, f"{source} on {cfg.name} {_SPLIT.value}",
                   os.path.join(output, "confusion.png"))
    worst = sorted((v["accuracy"], n) for n, v in result["per_class"].items() if v["count"])[:5]
    print(f"accuracy {result['accuracy']:.4f} on {result['count']} examples of {cfg.name} "
          f"{_SPLIT.value}; lowest classes: "
          + ", ".join(f"{n} {a:.2f}" for a, n in worst) + f"; written to {output}")
    logging.debug("%s", compilation.stats())  # shown with --verbosity=1


if __name__ == "__main__":
    run_main(main)
