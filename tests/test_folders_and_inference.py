"""A user's own images in (image folders), predictions and evaluations out.

The predict / evaluate paths are checked against the training run itself: the exported
model evaluated through its recorded preprocessing must give the test accuracy the run
reported, and PNG files must get the probabilities the run's eval pipeline gives.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tljax import evaluation, inference, runs
from tljax.data import pipeline
from tljax.errors import UserError
from tljax.weights import tljax_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = {5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def _write_digits(root, split_of):
    """PNGs of sklearn digits 5-9 in class folders named by word; split_of(index) -> subfolder."""
    from sklearn.datasets import load_digits

    digits, seen = load_digits(), {}
    for image, digit in zip(digits.images, digits.target):
        if digit < 5 or seen.get(digit, 0) >= 24:
            continue
        index = seen[digit] = seen.get(digit, 0) + 1
        folder = os.path.join(root, split_of(index), NAMES[digit])
        os.makedirs(folder, exist_ok=True)
        png = tf.io.encode_png(np.round(image * 255 / 16).astype(np.uint8)[..., None])
        tf.io.write_file(os.path.join(folder, f"{index:03d}.png"), png)
    return root


def _listing(root):
    return sorted((p, os.path.getmtime(os.path.join(p, f)), f)
                  for p, _, files in os.walk(root) for f in files) + sorted(
        d for d, _, _ in os.walk(root))


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    return _write_digits(str(tmp_path_factory.mktemp("imgs")),
                         lambda i: "test" if i > 16 else ("validation" if i > 12 else "train"))


def _folder_config(make_config, root, **overrides):
    return make_config(**{"data.name": f"folder:{root}", "data.few_shot_k": 0,
                          "data.train_split": "train", "data.val_split": "validation",
                          "data.test_split": "test", "eval_every": 6, **overrides})


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, data_dir, split_folder):
    from conftest import tiny_config

    before = _listing(split_folder)
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(data_dir, **{
        "data.name": f"folder:{split_folder}", "data.few_shot_k": 0, "data.train_split": "train",
        "data.val_split": "validation", "data.test_split": "test", "eval_every": 10,
        "total_steps": 40, "checkpoint_every": 20})
    summary = runs.run(config, workdir)
    assert _listing(split_folder) == before  # Nothing is written into the user's folder.
    return workdir, summary


def test_image_folder_trains_with_class_names_from_folders(folder_run):
    workdir, summary = folder_run
    assert summary["status"] == "done" and summary["val_accuracy"] is not None
    assert summary["final_accuracy"] > 0.5  # learnt: a class-order mix-up would show
    for name in ("model.safetensors", "best.safetensors"):
        export = tljax_format.load(os.path.join(workdir, name))
        assert export.class_names == sorted(NAMES.values())
        assert export.preprocessing["pp_eval"] == "resize(8)|gray_to_rgb|value_range(-1,1)"


def test_evaluate_reproduces_the_runs_test_accuracies(folder_run):
    """best.safetensors through its recorded pp = the val-selected test accuracy, and
    model.safetensors = the final one: class order, pp and weights all travel correctly."""
    workdir, summary = folder_run
    for which, expected in (("best", summary["test_accuracy"]), ("final", summary["final_accuracy"])):
        predictor = inference.Predictor.load(workdir, which)
        cfg, split, seed = evaluation.data_config(workdir, "", "test")
        result = evaluation.evaluate(predictor, cfg, split, seed, batch_size=7)
        assert result["count"] == 5 * 8 and np.sum(result["confusion"]) == 40
        assert result["accuracy"] == pytest.approx(expected, abs=1e-6)  # (float32 in the run)
        per_class = [v["accuracy"] * v["count"] for v in result["per_class"].values()]
        assert sum(per_class) == pytest.approx(result["accuracy"] * 40)


def test_predict_on_png_files_equals_the_eval_pipeline(folder_run, split_folder):
    workdir, _ = folder_run
    predictor = inference.Predictor.load(workdir, "best")
    files = inference.list_images([os.path.join(split_folder, "test", "seven")])
    results = inference.predict(predictor, files, top_k=5, batch_size=3)
    cfg, split, seed = evaluation.data_config(workdir, "", "test")
    batches, _ = pipeline.eval_batches(cfg, seed=seed, global_batch=64, which=split)
    batch = next(iter(batches))
    sevens = batch["image"][(batch["mask"] > 0) & (batch["label"] == sorted(NAMES.values()).index("seven"))]
    reference = predictor.probabilities({"image": sevens})  # The run's own tf.data eval preprocessing.
    got = np.array([[dict(r["top"])[n] for n in predictor.class_names] for r in results])
    np.testing.assert_allclose(np.sort(got, 0), np.sort(reference, 0), atol=1e-6)
    assert all(len(r["top"]) == 5 and r["top"][0][1] >= r["top"][1][1] for r in results)


def test_evaluate_a_one_tree_folder_whole_and_refuse_unknown_classes(folder_run, split_folder, tmp_path):
    workdir, summary = folder_run
    predictor = inference.Predictor.load(workdir, "final")
    cfg, split, seed = evaluation.data_config(workdir, f"folder:{split_folder}/test", "test")
    result = evaluation.evaluate(predictor, cfg, split, seed, batch_size=16)
    assert result["count"] == 40 and result["accuracy"] == pytest.approx(summary["final_accuracy"])
    os.makedirs(tmp_path / "other" / "zebra")
    tf.io.write_file(str(tmp_path / "other" / "zebra" / "z.png"), tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    cfg, split, seed = evaluation.data_config(workdir, f"folder:{tmp_path / 'other'}", "test")
    with pytest.raises(UserError, match="classes the model does not know: \\['zebra'\\]"):
        evaluation.evaluate(predictor, cfg, split, seed, batch_size=16)


def test_evaluate_reads_any_split_of_a_folder_the_train_split_too(folder_run, split_folder):
    workdir, _ = folder_run
    predictor = inference.Predictor.load(workdir, "final")
    cfg, split, seed = evaluation.data_config(workdir, f"folder:{split_folder}", "train")
    result = evaluation.evaluate(predictor, cfg, split, seed, batch_size=16)
    assert result["count"] == 5 * 12  # the whole train/ folder, every image once


def test_small_folders_fill_every_split_and_a_single_class_is_refused(make_config, tmp_path):
    """The default 80/10/10 cut of 3 images per class left validation empty (a TensorFlow
    TypeError mid-run): each split now gets an image of each class; fewer images than
    splits, or a single class, is one line."""
    from tljax.data import folder

    root = _write_digits(str(tmp_path / "three"), lambda i: "")
    for image in (tmp_path / "three").glob("*/*.png"):
        if int(image.stem) > 3:
            image.unlink()
    splits = folder.builder(f"folder:{root}")._split_examples
    for name in ("train", "validation", "test"):
        assert sorted(e.label for e in splits[name]) == sorted(NAMES.values()), name
    summary = runs.run(_folder_config(make_config, root, total_steps=2, eval_every=0,
                                      **{"data.batch_size": 5}), str(tmp_path / "run"))
    assert summary["status"] == "done"
    for image in (tmp_path / "three").glob("*/003.png"):
        image.unlink()
    with pytest.raises(UserError, match="class 'eight' has 2 images, but data.folder_fractions="
                                        r"\(0.8, 0.1, 0.1\) split each class into 3 sets"):
        folder.builder(f"folder:{root}")
    single = _write_digits(str(tmp_path / "single"), lambda i: "")
    for extra in ("five", "six", "seven", "eight"):
        for image in (tmp_path / "single" / extra).glob("*.png"):
            image.unlink()
        (tmp_path / "single" / extra).rmdir()
    with pytest.raises(UserError, match=r"it holds 1 class \(nine\); a classifier needs at least 2"):
        runs.run(_folder_config(make_config, single), str(tmp_path / "run1"))
    assert not os.path.exists(tmp_path / "run1")


def test_gifs_train_and_predict_as_their_first_frame(make_config, tmp_path):
    """A single-frame and an animated GIF among the PNGs: training decodes them as
    prediction does (TFDS's own decoding kept a frame axis and crashed the run)."""
    from PIL import Image

    from tljax.data import folder

    root = _write_digits(str(tmp_path / "gifs"), lambda i: "")
    first = np.full((8, 8), 200, np.uint8)
    Image.fromarray(first).save(tmp_path / "gifs" / "five" / "still.gif")
    frames = [Image.fromarray(first), Image.fromarray(np.zeros((8, 8), np.uint8))]
    frames[0].save(tmp_path / "gifs" / "six" / "moving.gif", save_all=True,
                   append_images=frames[1:], duration=100, loop=0)
    for name in ("five/still.gif", "six/moving.gif"):  # one decoding for every path
        decoded = folder.decode_image(tf.io.read_file(str(tmp_path / "gifs" / name))).numpy()
        assert decoded.shape == (8, 8, 3) and np.all(decoded == 200), name
    config = _folder_config(make_config, root, total_steps=2, eval_every=0,
                            **{"data.folder_fractions": (0.9, 0.05, 0.05), "data.batch_size": 64})
    assert runs.run(config, str(tmp_path / "run"))["status"] == "done"  # every train image read
    predictor = inference.Predictor.load(str(tmp_path / "run"), "final")
    results = inference.predict(predictor, [str(tmp_path / "gifs" / "six" / "moving.gif")], 2)
    assert len(results) == 1 and len(results[0]["top"]) == 2


def test_the_folder_config_detects_the_layout_and_trains(split_folder, tmp_path):
    from tljax import config_lib

    def load(arg):
        return config_lib.load(os.path.join(ROOT, "configs", "folder.py") + ":" + arg)

    config = load(f"{split_folder},digits")
    assert (config.data.name, config.data.few_shot_k) == (f"folder:{split_folder}", 0)
    assert (config.data.train_split, config.data.val_split, config.data.test_split) == (
        "train", "validation", "test")
    with config.unlocked():  # offline and quick: a tiny model from scratch, two steps
        config.model.init, config.model.init_recipe = "", ""
        config.model.arch = {"block_counts": (1,), "base_width": 4, "gn_groups": 4, "stem": "small"}
        config.total_steps, config.eval_every, config.data.batch_size = 2, 0, 8
    summary = runs.run(config, str(tmp_path / "run"))
    assert summary["status"] == "done" and summary["val_accuracy"] is not None
    one_tree = _write_digits(str(tmp_path / "tree"), lambda i: "")
    assert load(one_tree).data.val_split == "validation"  # cut 80/10/10 per class
    no_val = _write_digits(str(tmp_path / "no_val"), lambda i: "test" if i > 20 else "train")
    assert load(no_val).data.val_split == ""  # the final step is reported
    vit = load(f"{no_val},vit-b16")
    assert (vit.model.name, vit.model.init) == ("vit", "catalog:augreg-B_16-i21k")
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        load(f"{no_val},resnet9")


def test_one_tree_split_is_stratified_disjoint_and_fixed(tmp_path):
    root = _write_digits(str(tmp_path / "tree"), lambda i: "")
    from tljax.data import folder

    splits = folder.builder(f"folder:{root}", (0.5, 0.25, 0.25), seed=3)._split_examples
    again = folder.builder(f"folder:{root}", (0.5, 0.25, 0.25), seed=3)._split_examples
    assert splits == again
    paths = [e.image_path for split in splits.values() for e in split]
    assert len(paths) == len(set(paths)) == 5 * 24
    for name, count in (("train", 12), ("validation", 6), ("test", 6)):
        labels = [e.label for e in splits[name]]
        assert {labels.count(c) for c in NAMES.values()} == {count}  # every class, same share
    other = folder.builder(f"folder:{root}", (0.5, 0.25, 0.25), seed=4)._split_examples
    assert {e.image_path for e in other["test"]} != {e.image_path for e in splits["test"]}


def test_bad_folders_and_names_are_one_clear_line(make_config, split_folder, tmp_path):
    os.makedirs(tmp_path / "mixed" / "train" / "a")
    os.makedirs(tmp_path / "mixed" / "notes")
    os.makedirs(tmp_path / "empty")
    cases = [({"data.name": f"folder:{tmp_path / 'missing'}"}, "no such directory"),
             ({"data.name": f"folder:{tmp_path / 'mixed'}"}, "mixes split folders"),
             ({"data.name": f"folder:{tmp_path / 'empty'}"}, "holds no images"),
             ({"data.name": split_folder}, f"use data.name='folder:{split_folder}'"),
             ({"data.name": "not a name!"}, "is not a TFDS name"),
             ({"data.name": f"folder:{split_folder}", "data.few_shot_k": 0,
               "data.train_split": "train[:90%]", "data.val_split": "", "data.test_split": "test"},
              "an image folder's splits are whole folders"),
             # data.data_dir pointing at images: refused, never prepared into.
             ({"data.data_dir": split_folder, "data.name": "tljax_digits"}, "holds files but no TFDS dataset")]
    before = _listing(split_folder)
    for overrides, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            runs.run(make_config(**overrides), str(tmp_path / "run"))
    assert _listing(split_folder) == before
    no_val = _write_digits(str(tmp_path / "no_val"), lambda i: "test" if i > 20 else "train")
    with pytest.raises(UserError, match="has no split 'validation'; its splits: test, train"):
        runs.run(_folder_config(make_config, no_val), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_image_size_is_the_one_resolution(make_config, tmp_path):
    config = make_config(total_steps=1, **{"data.image_size": 12,
                                           "data.pp_train": "resize({size})|gray_to_rgb|value_range(-1,1)",
                                           "data.pp_eval": "resize({size})|gray_to_rgb|value_range(-1,1)"})
    runs.run(config, str(tmp_path / "ok"))
    export = tljax_format.load(str(tmp_path / "ok" / "model.safetensors"))
    assert export.preprocessing["image_size"] == 12
    assert export.preprocessing["pp_eval"] == "resize(12)|gray_to_rgb|value_range(-1,1)"
    with pytest.raises(UserError, match=r"makes 8x8 images but data.image_size=12; write the size as \{size\}"):
        runs.run(make_config(**{"data.image_size": 12}), str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")


def test_predict_cli_writes_csv_and_fails_in_one_line(folder_run, split_folder, tmp_path):
    workdir, _ = folder_run
    out = tmp_path / "preds.csv"
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "tljax.cli.predict", f"--model={workdir}", "--top_k=2",
                           f"--output={out}", os.path.join(split_folder, "test", "six")],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 8 and all(line.split()[1] in NAMES.values() for line in lines)
    assert out.read_text().splitlines()[0] == "image,rank,class,probability"
    assert len(out.read_text().splitlines()) == 1 + 8 * 2
    assert "I1" not in done.stderr  # library INFO chatter is filtered
    failed = subprocess.run([sys.executable, "-m", "tljax.cli.predict", f"--model={workdir}",
                             str(tmp_path / "nothing.png")], capture_output=True, text=True,
                            env=env, cwd=ROOT)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'nothing.png'} is neither an image file nor a folder")


def test_evaluate_cli_writes_json_and_confusion_png(folder_run, tmp_path):
    import json

    workdir, summary = folder_run
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "tljax.cli.evaluate", f"--model={workdir}",
                           f"--output={tmp_path}"], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=True)
    assert done.stdout.startswith(f"accuracy {summary['test_accuracy']:.4f} on 40 examples")
    with open(tmp_path / "evaluation.json") as f:
        result = json.load(f)
    assert result["accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unreadable_images_are_skipped_and_named(make_config, tmp_path, caplog, monkeypatch):
    """A truncated PNG and a text file named .jpg among the images: the run trains on the
    rest, and the log names each skipped file (TensorFlow stopped the run mid-way)."""
    from tljax.data import folder

    root = _write_digits(str(tmp_path / "bad"), lambda i: "")
    good = (tmp_path / "bad" / "five" / "001.png").read_bytes()
    (tmp_path / "bad" / "five" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "bad" / "six" / "notes.jpg").write_text("not an image")
    monkeypatch.setenv("TLJAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(folder, "_VERDICTS", {})
    decoded = []
    decode = folder._decode_error
    monkeypatch.setattr(folder, "_decode_error", lambda path: decoded.append(path) or decode(path))
    with caplog.at_level("WARNING"):
        splits = folder.builder(f"folder:{root}")._split_examples
    assert len(decoded) == 5 * 24 + 2  # every file once
    assert "truncated.png" in caplog.text and "notes.jpg" in caplog.text
    monkeypatch.setattr(folder, "_VERDICTS", {})  # a new process: the disk cache answers
    assert folder.builder(f"folder:{root}")._split_examples == splits and len(decoded) == 122
    assert not any(e.image_path.endswith(("truncated.png", "notes.jpg"))
                   for v in splits.values() for e in v)
    config = _folder_config(make_config, root, total_steps=2, eval_every=0,
                            **{"data.folder_fractions": (0.9, 0.05, 0.05), "data.batch_size": 64})
    assert runs.run(config, str(tmp_path / "run"))["status"] == "done"
