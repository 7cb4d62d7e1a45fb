"""Top-k classes of image files or texts, with the preprocessing (or tokenizer) the run used.

    python -m tljax.cli.predict --model=/tmp/run photo1.png photos/ [--top_k=3] [--output=preds.csv]
    python -m tljax.cli.predict --model=/tmp/text_run "a text" lines.txt table.csv

A text model reads each argument as a text, or a file of them: a .txt file's lines, a .csv's
`text` column (and `text_pair`), a .jsonl's "text" keys.

--model is a run directory (its validation-selected model, or --which=final) or an
exported .safetensors (or any weights tljax.weights.load_model reads). Prints one line per
image; --output writes CSV or JSON (by suffix) as well.
"""

from tljax import logs  # noqa: I001  (first: sets TF's log level before TF loads)
from absl import flags, logging

from tljax.cli.common import run_main
from tljax.errors import UserError

_MODEL = flags.DEFINE_string("model", None, "run directory or weights file")
_WHICH = flags.DEFINE_enum("which", "best", ["best", "final"],
                           "for a run directory: the validation-selected or the final model")
_TOP_K = flags.DEFINE_integer("top_k", 5, "classes per image", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch_size", 64, "images or texts per forward pass", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", "", "also write predictions to this .csv or .json")


def main(argv):
    if not _MODEL.value or len(argv) < 2:
        raise UserError("usage: python -m tljax.cli.predict --model=RUN_DIR_OR_WEIGHTS IMAGE_OR_FOLDER...")
    logs.setup()
    from tljax import compilation, inference, workdir

    compilation.enable_cache()

    if _OUTPUT.value and not _OUTPUT.value.endswith((".csv", ".json")):
        raise UserError(f"--output={_OUTPUT.value}: use a .csv or .json file name")
    if _OUTPUT.value and workdir.is_run_file(_OUTPUT.value):
        raise UserError(f"--output={_OUTPUT.value} is a run's own record; write elsewhere")
    predictor = inference.Predictor.load(_MODEL.value, _WHICH.value)
    if predictor.reads_text:
        results = inference.predict_texts(predictor, inference.read_texts(argv[1:]), _TOP_K.value,
                                          _BATCH.value)
    else:
        results = inference.predict(predictor, inference.list_images(argv[1:]), _TOP_K.value,
                                    _BATCH.value)
    for r in results:
        print(r.get("image", r.get("text")) + "  "
              + "  ".join(f"{name} {prob:.3f}" for name, prob in r["top"]))
    if _OUTPUT.value:
        inference.write_predictions(results, _OUTPUT.value)
    logging.debug("%s", compilation.stats())  # shown with --verbosity=1


if __name__ == "__main__":
    run_main(main)
